"""The distribution ships every package folder, and no bare `store`/`edge`/`gateway` top-level names."""

from __future__ import annotations

import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAPPED = {"edge": "edgestream.edge", "store": "edgestream.store", "gateway": "edgestream.gateway"}


def test_every_package_folder_is_listed_in_pyproject() -> None:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in MAPPED.items():
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if "__init__.py" in filenames:
                rel = os.path.relpath(dirpath, os.path.join(ROOT, folder))
                found.add(name if rel == "." else f"{name}.{rel.replace(os.sep, '.')}")
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; stale: {sorted(listed - found)}"


def test_package_dir_maps_only_under_edgestream() -> None:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    assert mapping == {v: k for k, v in MAPPED.items()}
