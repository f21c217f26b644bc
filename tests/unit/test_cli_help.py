"""Every CLI command and subcommand answers --help with an example (README promise)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from edgestream.gateway.cli.main import cli


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out.extend(_paths(cmd, (*prefix, name)))
    return out


COMMANDS = _paths(cli)


def test_the_expected_commands_exist() -> None:
    top = {p[0] for p in COMMANDS}
    assert {"topics", "produce", "consume", "check", "run", "config", "simulate", "status", "mirror", "tier",
            "query", "replay", "hash-password"} <= top


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`edgestream {' '.join(path)} --help` shows no example"
