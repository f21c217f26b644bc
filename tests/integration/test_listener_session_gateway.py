"""Persistent sessions of the gateway's MQTT listener through a power-cut-like restart (`edgestream run`
killed with SIGKILL, started again on the same data dir), with real paho-mqtt clients: a live-tail
subscriber finds its session and subscription, and a sensor whose QoS 2 PUBREC was lost in the crash
completes the exchange without its message being stored twice in the log."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from edgestream.store import Log
from tests.harness.gateway import GatewayProcess
from tests.harness.procs import free_port
from tests.integration.test_listener_session_clients import LossyProxy, Sensor, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _config(data_dir: str, port: int) -> dict[str, Any]:
    return {
        "gateway": {"id": "session-gw", "data_dir": data_dir, "shutdown_timeout_s": 20},
        "log": {"min_free_bytes": 1 << 20},
        "http": {"listen": "127.0.0.1:0"},
        "topics": [{"name": "telemetry", "partitions": 1, "decoder": "raw", "linger_ms": 2}],
        "sources": [{"name": "sensors", "type": "mqtt_listener", "topic": "telemetry", "partition": "fixed:0",
                     "host": "127.0.0.1", "port": port, "allow_anonymous": True}],
    }


def _payloads(data_dir: str) -> list[bytes]:
    with Log.open(data_dir, readonly=True) as log:
        return [r.value for r in log.read("telemetry", 0, 0, max_records=1000, max_bytes=1 << 20)]


async def test_sessions_survive_a_killed_gateway(tmp_path: Any) -> None:
    data = str(tmp_path / "data")
    port = free_port()
    gw = GatewayProcess(str(tmp_path), _config(data, port))
    proxy = LossyProxy(port)
    await proxy.start()
    tail, sensor = Sensor("tail", "5"), Sensor("meter-7", "3.1.1")
    try:
        await asyncio.to_thread(gw.start)
        tail.start(port)
        sensor.start(proxy.port)
        await eventually(lambda: tail.connacks and sensor.connacks, "both clients connected")
        tail.client.subscribe("plant/#", qos=1)
        await eventually(tail.subscribed.is_set, "SUBACK: the subscription is on disk once it arrives")
        proxy.drop_down = True  # the sensor hears nothing more from this gateway
        info = sensor.client.publish("plant/meter-7/energy", b"exactly once", qos=2)
        await eventually(lambda: proxy.dropped_down >= 4, "the PUBREC sent: record and packet id on disk")
        await asyncio.to_thread(gw.kill)  # SIGKILL: no stop, no last save

        assert os.path.getsize(os.path.join(data, "listener", "sensors.sessions")) > 0
        proxy.drop_down = False
        await asyncio.to_thread(gw.start)  # both clients reconnect by themselves
        await eventually(info.is_published, "the QoS 2 exchange completed by the restarted gateway")
        await eventually(lambda: len(tail.connacks) == 2, "the tail reconnected")
        assert (tail.connacks, sensor.connacks[-1]) == ([False, True], True)
        assert gw.metric_sum("edgestream_source_sessions_restored_total", source="sensors") == 2
        after = sensor.client.publish("plant/meter-7/energy", b"after the crash", qos=1)
        await eventually(after.is_published, "PUBACK of a message after the restart")
        await eventually(lambda: ("plant/meter-7/energy", b"after the crash") in tail.messages,
                         "the restored subscription delivering")
        assert await asyncio.to_thread(gw.stop) == 0
        assert _payloads(data) == [b"exactly once", b"after the crash"]
    finally:
        tail.close()
        sensor.close()
        await proxy.stop()
        if gw.proc is not None and gw.proc.poll() is None:
            gw.kill()
