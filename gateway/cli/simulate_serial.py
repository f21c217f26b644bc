"""`edgestream simulate serial`: a serial device on a pty pair, streaming framed factory telemetry."""

from __future__ import annotations

import asyncio
import signal

import click

from ...edge.serial.checksum import ALGORITHMS
from ...edge.simulate import serial as sim


async def _run(device: sim.SerialDeviceSimulator, count: int | None, duration: float | None) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, device.stop)
    if duration is not None:
        loop.call_later(duration, device.stop)
    await device.run(count)


@click.command(
    "serial",
    epilog="""\b
Examples:
  edgestream simulate serial --rate 50
  edgestream simulate serial --framing cobs --checksum crc16-ccitt --malformed-rate 0.01
  edgestream simulate serial --rate 0 --baud 115200 --link /tmp/ttyUSB-sim   # saturate the line
The first line on stdout is the device path for the gateway's `port` setting.""",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Frames per second (0: as fast as the baud rate allows).",
)
@click.option(
    "--framing",
    type=click.Choice(sim.FRAMINGS),
    default="line",
    show_default=True,
    help="line (newline-terminated), cobs, slip or length (2-byte big-endian prefix).",
)
@click.option(
    "--checksum",
    type=click.Choice(ALGORITHMS),
    default=None,
    help="Per-frame checksum (hex after '*' on lines, binary otherwise).",
)
@click.option(
    "--malformed-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Fraction of frames that are broken: bad payloads, flipped bytes, line noise.",
)
@click.option(
    "--baud",
    type=click.IntRange(min=50),
    default=115_200,
    show_default=True,
    help="Line speed the device is paced to (10 bits per byte, as 8N1).",
)
@click.option(
    "--sensors",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Sensors behind the device (their readings take turns).",
)
@click.option(
    "--link",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also make this symlink to the pty (a stable path, like /dev/serial/by-id/...).",
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many frames.")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after this many seconds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated sensors.")
def command(
    rate: float,
    framing: str,
    checksum: str | None,
    malformed_rate: float,
    baud: int,
    sensors: int,
    link: str | None,
    count: int | None,
    duration: float | None,
    seed: int,
) -> None:
    """Open a pty pair, print the device path the gateway should open, then write framed telemetry (JSON
    readings of temperature, vibration, current, pressure and counters) at RATE frames per second, paced to
    BAUD, with the occasional malformed frame, until Ctrl-C. Replies from the gateway are read and counted.
    A summary goes to stderr at the end."""
    device = sim.SerialDeviceSimulator(
        sim.framing_for(framing, checksum),
        rate=rate,
        baud=baud,
        malformed_rate=malformed_rate,
        sensors=sensors,
        seed=seed,
        link=link,
    )
    click.echo(device.path)
    try:
        asyncio.run(_run(device, count, duration))
    finally:
        device.close()
        s = device.statistics()
        click.echo(
            f"sent {s.frames} frames ({s.bad_payloads} with bad payloads), {s.damaged_frames} damaged, "
            f"{s.noise_bursts} noise bursts, {s.bytes} bytes; {s.reply_bytes} reply bytes received",
            err=True,
        )
