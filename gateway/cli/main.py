"""The `edgestream` command. Subcommands live one per module in this package and are imported lazily, so
`edgestream --help` and quick commands start fast on a Raspberry Pi."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from ..version import version_string

# name -> (module in edgestream.gateway.cli, attribute, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "topics": ("topics", "topics", "Create, list, describe and delete topics."),
    "produce": ("produce", "produce", "Append stdin lines to a topic as records."),
    "consume": ("consume", "consume", "Print records of a topic."),
    "check": ("check", "check", "Verify a data dir offline (CRCs, offsets, indexes)."),
    "run": ("run", "run", "Run the gateway service."),
    "config": ("config", "config", "Check a gateway config file."),
    "simulate": ("simulate", "simulate", "Simulated sensors and devices (MQTT, serial, Modbus)."),
    "status": ("status", "status", "One-screen health summary of a running gateway."),
    "mirror": ("mirror", "mirror", "Upstream mirror status and control."),
    "tier": ("tier", "tier", "Parquet cold tier: run and status."),
    "query": ("query", "query", "Read-only SQL over hot and cold data."),
    "replay": ("replay", "replay", "Send a range of history to Kafka, a topic or a file."),
    "hash-password": ("hash_password", "hash_password", "Hash a password for the MQTT listener's users."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, (mod, _, _) in SUBCOMMANDS.items() if _module_exists(mod))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None or not _module_exists(entry[0]):
            return None
        module = importlib.import_module(f"{__package__}.{entry[0]}")
        cmd: click.Command = getattr(module, entry[1])
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, SUBCOMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(name: str) -> bool:
    return importlib.util.find_spec(f"{__package__}.{name}") is not None


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog="Example: edgestream --data-dir /tmp/es topics create sensors --partitions 4",
)
@click.version_option(version_string(), "--version", message="%(version)s")
@click.option(
    "--data-dir",
    envvar="EDGESTREAM_DATA_DIR",
    default="/var/lib/edgestream",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the log lives (env EDGESTREAM_DATA_DIR).",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: str) -> None:
    """edgestream: a durable telemetry broker for edge gateways."""
    ctx.obj = {"data_dir": data_dir}


def main(argv: list[str] | None = None) -> Any:
    from .common import run_cli

    return run_cli(cli, argv if argv is not None else sys.argv[1:])
