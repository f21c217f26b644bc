"""The installed version, read from the package metadata (one source of truth: pyproject.toml)."""

from __future__ import annotations

from importlib import metadata


def version() -> str:
    try:
        return metadata.version("edgestream")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def version_string() -> str:
    import platform

    return f"edgestream {version()} (Python {platform.python_version()}, {platform.machine()})"
