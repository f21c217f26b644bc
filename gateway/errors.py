"""Errors raised by edgestream.gateway: config, routing, mirror, API.

One root, `GatewayError`; `retriable` is read by callers instead of matching strings.
"""

from __future__ import annotations


class GatewayError(Exception):
    retriable: bool = False


class ConfigFileError(GatewayError):
    """A config file that cannot be used. `problems` lists every error as (key path, message)."""

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        lines = [f"{path}: {key}: {msg}" if key else f"{path}: {msg}" for key, msg in problems]
        super().__init__("\n".join(lines) if lines else f"{path}: invalid config")
        self.path = path
        self.problems = problems
