"""`edgestream simulate modbus`: Modbus RTU units on a pty pair, register values from simulated sensors."""

from __future__ import annotations

import asyncio
import signal

import click

from ...edge.simulate import modbus as sim


def _units(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        units = tuple(int(u) for u in value.split(",") if u.strip())
    except ValueError:
        raise click.BadParameter(f"expected unit ids such as 1,2,3, got {value!r}") from None
    if not units or not all(1 <= u <= 247 for u in units) or len(set(units)) != len(units):
        raise click.BadParameter("unit ids are distinct numbers in 1..247, e.g. 1,2")
    return units


async def _run(device: sim.ModbusDeviceSimulator, silent: tuple[int, ...], duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    path = await device.start()
    for unit in silent:
        device.silence(unit)
    click.echo(path)
    try:
        await stop.wait()
    finally:
        await device.stop()


@click.command(
    "modbus",
    epilog="""\b
Examples:
  edgestream simulate modbus --units 1,2
  edgestream simulate modbus --units 1,2,3 --silent 3 --link /tmp/ttyRS485-sim
The first line on stdout is the device path; poll it with parity N (ptys refuse parity bits).
Registers (every unit): input 0-7 float32 temperature, vibration, current, pressure; holding 0 uint32 parts,
2 status, 3 int16 temperature x10, 4 float32 current (CDAB), 6 uint32 uptime; coils 0-1 running, alarm;
discrete 0 door closed.""",
)
@click.option(
    "--units",
    default="1",
    show_default=True,
    callback=_units,
    metavar="IDS",
    help="Comma-separated unit ids on the simulated bus.",
)
@click.option(
    "--silent",
    default="",
    callback=lambda c, p, v: _units(c, p, v) if v else (),
    metavar="IDS",
    help="Units that never answer (as if switched off): the gateway should count timeouts.",
)
@click.option(
    "--link",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also make this symlink to the pty (a stable device path).",
)
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after this many seconds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated sensors.")
def command(
    units: tuple[int, ...], silent: tuple[int, ...], link: str | None, duration: float | None, seed: int
) -> None:
    """Run a pymodbus RTU server on a pty, print the device path the gateway should poll, and serve holding
    and input registers, coils and discrete inputs whose values follow simulated factory sensors, until
    Ctrl-C. A summary of the responses per unit goes to stderr at the end."""
    device = sim.ModbusDeviceSimulator(units, seed=seed, link=link)
    asyncio.run(_run(device, silent, duration))
    s = device.statistics()
    click.echo(
        "responses by unit: "
        + (", ".join(f"{u}: {n}" for u, n in sorted(s.responses.items())) or "none")
        + (f"; suppressed: {sum(s.suppressed.values())}" if s.suppressed else ""),
        err=True,
    )
