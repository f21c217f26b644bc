"""`edgestream simulate mqtt`, run as the installed binary against a real Mosquitto."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgestream.edge.mqtt.client import MqttClientSettings, MqttClientSource, TopicFilter
from edgestream.edge.simulate.mqtt import sequence_number
from edgestream.edge.testing import FakeSink
from tests.harness.mosquitto import MosquittoBroker, free_port

pytestmark = pytest.mark.mosquitto

EDGESTREAM = shutil.which("edgestream", path=str(Path(sys.executable).parent)) or "edgestream"


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_every_numbered_message_arrives_and_the_summary_counts_them(
        mosquitto: MosquittoBroker, protocol: str) -> None:
    sink = FakeSink()
    source = MqttClientSource("mqtt", MqttClientSettings(
        client_id="gw-sim", port=mosquitto.port, topics=(TopicFilter(filter="plant/#"),)), sink)
    task = asyncio.ensure_future(source.run())
    try:
        async with asyncio.timeout(20):
            while not source.statistics().subscribed:
                await asyncio.sleep(0.01)
        proc = await asyncio.create_subprocess_exec(
            EDGESTREAM, "simulate", "mqtt", "--broker", f"127.0.0.1:{mosquitto.port}", "--sensors", "8",
            "--rate", "3000", "--count", "400", "--numbered", "--malformed-rate", "0.05",
            "--topic-prefix", "plant", "--protocol", protocol,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        line = out.decode().strip().splitlines()[-1]
        assert line.startswith("sent 400, acked 400, failed 0, malformed ")
        malformed = int(line.split("malformed ")[1].split(",")[0])
        assert 0 < malformed < 60
        async with asyncio.timeout(20):
            while len(sink.readings) < 400:
                await asyncio.sleep(0.01)
        assert sorted(sequence_number(r.payload) for r in sink.readings) == list(range(400))  # type: ignore
        topics = {r.fields["topic"] for r in sink.readings}
        assert len(topics) == 8
        assert all(t.startswith("plant/line") and len(t.split("/")) == 4 for t in topics)
    finally:
        await source.stop()
        await task


def test_an_unreachable_broker_is_one_clear_error_line() -> None:
    proc = subprocess.run([EDGESTREAM, "simulate", "mqtt", "--broker", f"127.0.0.1:{free_port()}",
                           "--count", "1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("edgestream: error: cannot connect to 127.0.0.1:")
    assert "Traceback" not in proc.stderr


def test_a_bad_broker_address_is_a_usage_error() -> None:
    proc = subprocess.run([EDGESTREAM, "simulate", "mqtt", "--broker", "host:notaport"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "expected HOST:PORT" in proc.stderr


def test_help_shows_an_example() -> None:
    proc = subprocess.run([EDGESTREAM, "simulate", "mqtt", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "edgestream simulate mqtt --broker 127.0.0.1:1883" in proc.stdout
    assert "--numbered" in proc.stdout and "--malformed-rate" in proc.stdout
