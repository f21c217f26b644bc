"""MqttClientSource against a real Mosquitto: persistent sessions, manual ack, backpressure, shared
subscriptions, broker restarts, TLS with client certificates and passwords.

Every message carries a number (`{"n":17}`) so a test can say exactly which ones arrived. Waiting is on
conditions with deadlines; the broker is real, so the deadlines are generous (two shared cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgestream.edge.mqtt.client import (
    BrokerRefusedError,
    BrokerTlsError,
    MqttClientSettings,
    MqttClientSource,
    TlsSettings,
    TopicFilter,
)
from edgestream.edge.simulate import mqtt as sim
from edgestream.edge.simulate.mqtt import sequence_number
from edgestream.edge.testing import FakeSink
from tests.harness.mosquitto import MosquittoBroker, TlsFiles, make_test_pki

pytestmark = pytest.mark.mosquitto

PROTOCOLS = ["3.1.1", "5"]


# -- helpers ---------------------------------------------------------------------------------------------------


def publish(broker: MosquittoBroker, numbers: range, *, topic: str = "factory/line1/temperature/t-0",
            tls: TlsFiles | None = None, username: str | None = None, password: str | None = None) -> None:
    """Publish `{"n": i}` for each i at QoS 1 and return once the broker acked every one (blocking)."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}",
                    protocol=MQTTProtocolVersion.MQTTv311)
    c.max_inflight_messages_set(100)
    if tls is not None:
        c.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
    if username is not None:
        c.username_pw_set(username, password)
    acked = threading.Semaphore(0)
    c.on_publish = lambda *a: acked.release()
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        for i in numbers:
            c.publish(topic, b'{"n":%d}' % i, qos=1)
        for _ in numbers:
            if not acked.acquire(timeout=30):
                raise AssertionError("broker did not ack the test publisher's messages")
    finally:
        c.disconnect()
        c.loop_stop()


async def apublish(broker: MosquittoBroker, numbers: range, **kw: Any) -> None:
    await asyncio.to_thread(publish, broker, numbers, **kw)


def numbers(sink: FakeSink) -> list[int]:
    return [n for r in sink.readings if (n := sequence_number(r.payload)) is not None]


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.01)


def settings(broker: MosquittoBroker, client_id: str, protocol: str = "5", **kw: Any) -> MqttClientSettings:
    base: dict[str, Any] = {
        "client_id": client_id, "host": broker.host, "port": broker.port, "protocol": protocol,
        "topics": (TopicFilter(filter="factory/#"),), "backoff_min_s": 0.05, "backoff_max_s": 0.5,
        "connect_timeout_s": 10.0, "drain_timeout_s": 2.0, "keepalive_s": 30,
    }
    base.update(kw)
    return MqttClientSettings(**base)


class Running:
    """A source running in a task; `stop()` is graceful, `crash()` cancels it (no DISCONNECT)."""

    def __init__(self, s: MqttClientSettings, sink: FakeSink | None = None) -> None:
        self.sink = sink or FakeSink()
        self.source = MqttClientSource("mqtt", s, self.sink)
        self.task = asyncio.ensure_future(self.source.run())

    async def connected(self) -> Running:
        await wait_until(lambda: self.source.statistics().subscribed or self.task.done(), "SUBACK")
        if self.task.done():
            self.task.result()
        return self

    async def stop(self) -> None:
        await asyncio.wait_for(self.source.stop(), 15)
        await self.task

    async def crash(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def running() -> AsyncIterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        if not r.task.done():
            r.sink.release()
            await r.crash()


# -- persistent session ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_messages_published_while_stopped_arrive_after_start(
        mosquitto: MosquittoBroker, running: list[Running], protocol: str) -> None:
    first = Running(settings(mosquitto, "gw-persist", protocol))
    running.append(first)
    await first.connected()
    await first.stop()
    assert first.source.statistics().acked == 0

    await apublish(mosquitto, range(50))  # nobody connected: the broker queues them for our session

    second = Running(settings(mosquitto, "gw-persist", protocol))
    running.append(second)
    await second.connected()
    await wait_until(lambda: second.source.statistics().acked == 50, "50 acked")
    assert sorted(numbers(second.sink)) == list(range(50))
    assert second.source.statistics().session_present
    assert {r.fields["topic"] for r in second.sink.readings} == {"factory/line1/temperature/t-0"}
    await second.stop()

    # Everything was acked: a third session finds nothing waiting.
    third = Running(settings(mosquitto, "gw-persist", protocol))
    running.append(third)
    await third.connected()
    await apublish(mosquitto, range(50, 51))
    await wait_until(lambda: third.source.statistics().acked == 1, "the marker message")
    assert numbers(third.sink) == [50]
    await third.stop()


# -- manual ack ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_nothing_is_acked_while_the_sink_holds_and_a_crash_gets_it_all_back(
        mosquitto: MosquittoBroker, running: list[Running], protocol: str) -> None:
    held = Running(settings(mosquitto, "gw-held", protocol))
    running.append(held)
    await held.connected()
    held.sink.hold()
    await apublish(mosquitto, range(20))
    await wait_until(lambda: len(held.sink.readings) == 20, "20 readings")
    assert held.source.statistics().acked == 0
    await held.crash()  # the connection dies with 20 records not durable: no PUBACK ever went out

    again = Running(settings(mosquitto, "gw-held", protocol))
    running.append(again)
    await again.connected()
    await wait_until(lambda: again.source.statistics().acked == 20, "20 redelivered and acked")
    assert sorted(numbers(again.sink)) == list(range(20))
    await again.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_when_the_log_blocks_only_the_window_is_read(
        mosquitto: MosquittoBroker, running: list[Running], protocol: str) -> None:
    r = Running(settings(mosquitto, "gw-window", protocol, max_inflight=10))
    running.append(r)
    await r.connected()
    r.sink.hold()
    await apublish(mosquitto, range(60))
    await wait_until(lambda: len(r.sink.readings) == 10, "a full window")
    # The rest stays at the broker (MQTT 5: Receive Maximum; 3.1.1: the source stopped reading).
    await asyncio.sleep(0.3)  # give a misbehaving source time to read more; nothing should arrive
    assert len(r.sink.readings) == 10
    assert r.source.statistics().inflight == 10
    assert r.source.statistics().acked == 0
    r.sink.release()
    while r.source.statistics().acked < 60:
        r.sink.release()
        await asyncio.sleep(0.01)
    assert sorted(numbers(r.sink)) == list(range(60))
    await r.stop()


# -- shared subscriptions --------------------------------------------------------------------------------------


async def test_a_shared_subscription_splits_the_stream_between_two_gateways(
        mosquitto: MosquittoBroker, running: list[Running]) -> None:
    shared = (TopicFilter(filter="$share/gw/factory/#"),)
    a = Running(settings(mosquitto, "gw-a", topics=shared))
    b = Running(settings(mosquitto, "gw-b", topics=shared))
    running += [a, b]
    await a.connected()
    await b.connected()
    await apublish(mosquitto, range(200))
    await wait_until(lambda: len(a.sink.readings) + len(b.sink.readings) == 200, "200 readings")
    got_a, got_b = set(numbers(a.sink)), set(numbers(b.sink))
    assert got_a | got_b == set(range(200))
    assert not got_a & got_b
    assert len(got_a) >= 20 and len(got_b) >= 20  # Mosquitto round-robins; both take a real share
    await a.stop()
    await b.stop()


# -- broker restart --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_broker_restart_mid_stream_loses_nothing(
        mosquitto: MosquittoBroker, running: list[Running], protocol: str) -> None:
    r = Running(settings(mosquitto, "gw-restart", protocol))
    running.append(r)
    await r.connected()
    total = 1500
    stream = asyncio.ensure_future(asyncio.to_thread(sim.run, sim.SimulatorSettings(
        port=mosquitto.port, sensors=12, rate=500, count=total, numbered=True, client_id="sim-restart",
        protocol=protocol)))
    await wait_until(lambda: len(r.sink.readings) >= 300, "the stream to flow")
    r.sink.hold()  # some records in flight, unacked, when the broker goes
    await wait_until(lambda: r.source.statistics().inflight >= 20, "records in flight")

    await asyncio.to_thread(mosquitto.stop)  # SIGTERM: Mosquitto saves its queues and sessions
    failures = r.source.statistics().connect_failures
    await wait_until(lambda: r.source.statistics().connect_failures >= failures + 6,
                     "six refused reconnect attempts while the broker is down (a couple of seconds)")
    assert not r.source.statistics().connected
    r.sink.release()  # durable now, but the connection they came on is gone: they are not acked
    await asyncio.to_thread(mosquitto.start)

    result = await asyncio.wait_for(stream, 60)
    assert result.acked == result.sent == total
    await wait_until(lambda: set(numbers(r.sink)) == set(range(total)), f"all {total} numbers", timeout=30)
    st = r.source.statistics()
    assert st.reconnects >= 1 and st.session_present
    # The records in flight at the outage were stored, never acked, redelivered and stored again.
    assert len(r.sink.readings) >= total + 20
    await r.stop()


# -- TLS, client certificates, passwords -----------------------------------------------------------------------


async def test_tls_with_a_client_certificate_and_a_password(
        mosquitto_factory: Callable[..., MosquittoBroker], test_pki: TlsFiles, running: list[Running]) -> None:
    broker = mosquitto_factory(tls=test_pki, require_certificate=True, users={"gw": "s3cret"})
    tls = TlsSettings(ca_file=str(test_pki.ca), cert_file=str(test_pki.client_cert),
                      key_file=str(test_pki.client_key))
    r = Running(settings(broker, "gw-tls", tls=tls, username="gw", password="s3cret"))
    running.append(r)
    await r.connected()
    await apublish(broker, range(10), tls=test_pki, username="gw", password="s3cret")
    await wait_until(lambda: r.source.statistics().acked == 10, "10 over TLS")
    assert sorted(numbers(r.sink)) == list(range(10))
    await r.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_wrong_password_ends_run_with_a_clear_error(
        mosquitto_factory: Callable[..., MosquittoBroker], protocol: str) -> None:
    broker = mosquitto_factory(users={"gw": "s3cret"})
    source = MqttClientSource("mqtt", settings(broker, "gw-badpw", protocol, username="gw", password="nope"),
                              FakeSink())
    with pytest.raises(BrokerRefusedError, match="check username/password") as info:
        await asyncio.wait_for(source.run(), 15)
    assert not info.value.retriable


async def test_an_untrusted_broker_certificate_ends_run(
        mosquitto_factory: Callable[..., MosquittoBroker], test_pki: TlsFiles, tmp_path: Any) -> None:
    broker = mosquitto_factory(tls=test_pki)
    other = make_test_pki(tmp_path / "other-ca")
    source = MqttClientSource("mqtt", settings(broker, "gw-badca", tls=TlsSettings(ca_file=str(other.ca))),
                              FakeSink())
    with pytest.raises(BrokerTlsError, match="certificate verify failed"):
        await asyncio.wait_for(source.run(), 15)


async def test_insecure_tls_skips_verification_for_tests(
        mosquitto_factory: Callable[..., MosquittoBroker], test_pki: TlsFiles, running: list[Running]) -> None:
    broker = mosquitto_factory(tls=test_pki)
    r = Running(settings(broker, "gw-insecure", tls=TlsSettings(insecure=True)))
    running.append(r)
    await r.connected()
    await apublish(broker, range(3), tls=test_pki)
    await wait_until(lambda: r.source.statistics().acked == 3, "3 over unverified TLS")
    await r.stop()


async def test_a_broker_that_is_not_there_is_retried_not_fatal(running: list[Running]) -> None:
    from tests.harness.mosquitto import free_port

    s = MqttClientSettings(client_id="gw-nobroker", port=free_port(), topics=(TopicFilter(filter="#"),),
                           backoff_min_s=0.05, backoff_max_s=0.1)
    r = Running(s)
    running.append(r)
    await wait_until(lambda: r.source.statistics().connect_failures >= 3, "three attempts")
    assert not r.task.done()
    assert "connection refused" in r.source.statistics().last_error
    await r.stop()


def test_ssl_module_has_tls13() -> None:
    """The TLS tests above assume a modern OpenSSL (EC keys, TLS 1.3 alerts for missing certificates)."""
    assert ssl.HAS_TLSv1_3
