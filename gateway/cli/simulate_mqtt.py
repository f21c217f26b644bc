"""`edgestream simulate mqtt`: publish simulated factory telemetry to an MQTT broker."""

from __future__ import annotations

import click

from ...edge.simulate import mqtt as sim
from .common import fail


def _broker(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, "1883"
    host = host.strip("[]")  # [::1]:1883
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT (e.g. 127.0.0.1:1883), got {value!r}")
    return host, int(port)


@click.command(
    "mqtt",
    epilog="""\b
Examples:
  edgestream simulate mqtt --broker 127.0.0.1:1883 --sensors 20 --rate 200
  edgestream simulate mqtt --broker 127.0.0.1:1883 --rate 5000 --count 100000 --numbered
  edgestream simulate mqtt --broker gw.local:1883 --qos 0 --malformed-rate 0.01 --duration 60""",
)
@click.option("--broker", default="127.0.0.1:1883", show_default=True, callback=_broker, metavar="HOST:PORT",
              help="The broker to publish to.")
@click.option("--sensors", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many sensors (spread over 4 production lines).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=100.0, show_default=True,
              help="Messages per second, all sensors together.")
@click.option("--qos", type=click.Choice(["0", "1"]), default="1", show_default=True)
@click.option("--topic-prefix", default="factory", show_default=True,
              help="Topics are PREFIX/<line>/<kind>/<sensor>, e.g. factory/line3/temperature/temperature-2.")
@click.option("--count", type=click.IntRange(min=0), default=None, help="Stop after this many messages.")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after this many seconds.")
@click.option("--malformed-rate", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Fraction of payloads that are broken (truncated JSON, binary noise, empty).")
@click.option("--numbered", is_flag=True,
              help='Put a global sequence number in every payload ({"n":17,...}; 17|... if malformed).')
@click.option("--protocol", type=click.Choice(["3.1.1", "5"]), default="5", show_default=True)
@click.option("--client-id", default="", help="MQTT client id (default: a random one).")
@click.option("--window", type=click.IntRange(1, 65535), default=100, show_default=True,
              help="QoS 1 messages in flight (published, not yet acked).")
@click.option("--username", default=None)
@click.option("--password", default=None, envvar="EDGESTREAM_SIM_PASSWORD",
              help="Password (or env EDGESTREAM_SIM_PASSWORD).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated sensors.")
def command(broker: tuple[str, int], sensors: int, rate: float, qos: str, topic_prefix: str, count: int | None,
            duration: float | None, malformed_rate: float, numbered: bool, protocol: str, client_id: str,
            window: int, username: str | None, password: str | None, seed: int) -> None:
    """Publish realistic factory telemetry (temperature, vibration, current, pressure, counters) to an MQTT
    broker at a steady aggregate rate. Prints one summary line at the end: sent, acked, failed, malformed.
    Runs until --count, --duration or Ctrl-C. Exits 1 if some QoS 1 messages were never acknowledged."""
    settings = sim.SimulatorSettings(
        host=broker[0], port=broker[1], sensors=sensors, rate=rate, qos=int(qos), prefix=topic_prefix,
        count=count, duration_s=duration, malformed_rate=malformed_rate, numbered=numbered, protocol=protocol,
        client_id=client_id, window=window, username=username, password=password, seed=seed,
    )
    try:
        result = sim.run(settings)
    except ConnectionError as exc:
        fail(f"{exc}; is the broker running? (e.g. `mosquitto -p {broker[1]}`)")
    click.echo(result.summary())
    if int(qos) == 1 and result.acked < result.sent:
        fail(f"{result.sent - result.acked} QoS 1 messages were not acknowledged by the broker")
