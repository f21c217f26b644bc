"""`edgestream simulate ...`: simulated devices. Each device kind is its own module (simulate_<kind>.py)."""

from __future__ import annotations

import importlib
import importlib.util

import click

KINDS = {
    "mqtt": ("simulate_mqtt", "Publish factory telemetry to an MQTT broker."),
    "serial": ("simulate_serial", "A serial device on a pty pair, streaming framed readings."),
    "modbus": ("simulate_modbus", "A Modbus RTU unit on a pty pair."),
}


class _SimulateGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(k for k, (mod, _) in KINDS.items() if importlib.util.find_spec(f"{__package__}.{mod}"))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in KINDS or cmd_name not in self.list_commands(ctx):
            return None
        cmd: click.Command = importlib.import_module(f"{__package__}.{KINDS[cmd_name][0]}").command
        return cmd


@click.group(cls=_SimulateGroup, epilog="Example: edgestream simulate mqtt --broker 127.0.0.1:1883 --sensors 20")
def simulate() -> None:
    """Simulated sensors and devices for demos, tests and benchmarks (no hardware needed)."""
