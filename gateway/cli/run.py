"""`edgestream run --config gateway.toml`: the gateway service (what systemd starts)."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from .. import config as gwconfig
from ..service import run_gateway


@click.command(epilog="Example: edgestream run --config /etc/edgestream/gateway.toml")
@click.option("--config", "-c", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The gateway's TOML config.")
@click.option("--http-listen", help="Override [http] listen, e.g. 127.0.0.1:0.")
@click.pass_context
def run(ctx: click.Context, config_path: str, http_listen: str | None) -> None:
    """Run the gateway: recover the log, start sources, serve HTTP and /metrics, until SIGTERM.

    The data dir comes from [gateway] data_dir, unless --data-dir or EDGESTREAM_DATA_DIR is given."""
    overrides = {}
    root = ctx.find_root()
    if root.get_parameter_source("data_dir") not in (click.core.ParameterSource.DEFAULT, None):
        overrides["gateway.data_dir"] = root.obj["data_dir"]
    if http_listen:
        overrides["http.listen"] = http_listen
    cfg = gwconfig.load(config_path, overrides=overrides)
    logging.basicConfig(
        level=getattr(logging, cfg.gateway.log_level.upper()),
        format="%(levelname)s %(name)s: %(message)s" if not sys.stderr.isatty() else
        "%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    code = asyncio.run(run_gateway(cfg))
    raise SystemExit(code)
