"""Running the installed `edgestream` binary from tests, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

EDGESTREAM = os.path.join(os.path.dirname(sys.executable), "edgestream")


@dataclass
class Result:
    code: int
    out: str
    err: str


def run(*args: str, data_dir: str | None = None, input: str | bytes | None = None, timeout: float = 60,
        env: dict[str, str] | None = None) -> Result:
    cmd = [EDGESTREAM, *(["--data-dir", data_dir] if data_dir else []), *args]
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run(cmd, input=input.encode() if isinstance(input, str) else input, capture_output=True,
                       timeout=timeout, env=full_env)
    return Result(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))


def assert_clean_error(r: Result, *needles: str) -> None:
    """A failed command says one clear line on stderr, no traceback, and exits non-zero."""
    assert r.code != 0, f"expected failure, got 0: {r.out!r}"
    assert "Traceback" not in r.err, r.err
    lines = [x for x in r.err.splitlines() if x.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {r.err!r}"
    for n in needles:
        assert n in r.err, f"{n!r} not in {r.err!r}"
