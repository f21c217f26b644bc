"""`edgestream config check FILE`: validate a gateway config and print every problem with its key."""

from __future__ import annotations

import click

from .. import config as gwconfig
from ..errors import ConfigFileError


@click.group(epilog="Example: edgestream config check /etc/edgestream/gateway.toml")
def config() -> None:
    """Gateway config files."""


@config.command(epilog="Example: edgestream config check examples/gateway.toml")
@click.argument("path", type=click.Path(dir_okay=False))
def check(path: str) -> None:
    """Validate PATH: every error with file, key and the allowed values; exit 1 if there are any."""
    try:
        cfg = gwconfig.load(path)
    except ConfigFileError as exc:
        for key, msg in exc.problems:
            click.echo(f"{path}: {key}: {msg}" if key else f"{path}: {msg}", err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {path}", err=True)
        raise SystemExit(1) from None
    click.echo(f"{path}: OK - {len(cfg.topics)} topics, {len(cfg.sources)} sources, data dir {cfg.gateway.data_dir}")
