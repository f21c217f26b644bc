"""MqttClientSource against a scripted session (edge.mqtt.client_fake) and FakeSink, on a ManualClock.

What is checked here without a broker: acks only after the sink resolved and in receive order, rejected
records acked, a closing sink never acked, the in-flight window pausing and resuming reading, reconnects with
backoff on the injected clock, fatal errors, draining at stop, and what a Reading carries.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edgestream.edge.clock import ManualClock
from edgestream.edge.errors import SourceUnavailableError
from edgestream.edge.mqtt.client import MqttClientSettings, MqttClientSource, TopicFilter
from edgestream.edge.mqtt.client_fake import FakeMqttSession, FakeSessions
from edgestream.edge.mqtt.client_session import BrokerRefusedError
from edgestream.edge.testing import FakeSink


def settings(**overrides: Any) -> MqttClientSettings:
    base: dict[str, Any] = {"client_id": "gw-test", "topics": (TopicFilter(filter="factory/#"),),
                            "protocol": "3.1.1", "max_inflight": 8, "backoff_min_s": 1.0,
                            "backoff_max_s": 8.0, "drain_timeout_s": 5.0}
    base.update(overrides)
    return MqttClientSettings(**base)


class Rig:
    def __init__(self, **overrides: Any) -> None:
        self.clock = ManualClock()
        self.sink = FakeSink()
        self.sessions = FakeSessions()
        self.source = MqttClientSource("mqtt-test", settings(**overrides), self.sink, clock=self.clock,
                                       rng=random.Random(1), session_factory=self.sessions)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> FakeMqttSession:
        self.task = asyncio.ensure_future(self.source.run())
        return await self.sessions.wait_connected()

    async def settle(self) -> None:
        """Let every ready callback and task run (a few hops each: futures, tasks, call_soon)."""
        for _ in range(20):
            await asyncio.sleep(0)

    async def stop(self) -> None:
        await self.source.stop()
        assert self.task is not None
        await self.task


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    if r.task is not None and not r.task.done():
        r.sink.release()
        await asyncio.wait_for(r.stop(), 5)


async def test_acks_only_after_the_sink_resolved_and_in_receive_order(rig: Rig) -> None:
    s = await rig.start()
    rig.sink.hold()
    mids = [s.deliver(f"factory/line1/t/{i}", b"v%d" % i) for i in range(5)]
    await rig.settle()
    assert len(rig.sink.readings) == 5
    assert s.acks == []  # nothing durable yet
    assert rig.source.statistics().inflight == 5
    rig.sink.release()
    await rig.settle()
    assert s.acks == [(m, 1) for m in mids]
    st = rig.source.statistics()
    assert (st.received, st.acked, st.inflight) == (5, 5, 0)


async def test_out_of_order_durability_still_acks_in_order(rig: Rig) -> None:
    s = await rig.start()
    futures: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()

    def submit(reading: Any) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = loop.create_future()
        futures.append(fut)
        return fut

    rig.sink.submit = submit  # type: ignore[method-assign]
    mids = [s.deliver("factory/a", b"x") for _ in range(3)]
    await rig.settle()
    futures[2].set_result(None)
    futures[1].set_result(None)
    await rig.settle()
    assert s.acks == []
    futures[0].set_result(None)
    await rig.settle()
    assert s.acks == [(m, 1) for m in mids]


async def test_rejected_records_are_acked_and_counted(rig: Rig) -> None:
    s = await rig.start()
    rig.sink.reject_next("too_large")
    mid = s.deliver("factory/a", b"x" * 100)
    await rig.settle()
    assert s.acks == [(mid, 1)]
    st = rig.source.statistics()
    assert (st.rejected, st.acked) == (1, 1)


async def test_a_closing_sink_is_never_acked_and_reading_stops(rig: Rig) -> None:
    s = await rig.start()
    rig.sink.hold()
    first = s.deliver("factory/a", b"1")
    s.deliver("factory/a", b"2")
    await rig.settle()
    rig.sink.close()  # fails the held submissions with SinkClosedError
    await rig.settle()
    assert s.acks == []
    assert s.paused
    s.deliver("factory/a", b"3")
    await rig.settle()
    assert len(rig.sink.readings) == 2  # the third waits at the "broker", unread
    await rig.stop()
    assert s.acks == [] and s.disconnected_cleanly
    assert first == 1


async def test_qos0_messages_are_stored_and_never_acked(rig: Rig) -> None:
    s = await rig.start()
    s.deliver("factory/a", b"q0", qos=0)
    await rig.settle()
    assert [r.payload for r in rig.sink.readings] == [b"q0"]
    assert s.acks == []
    assert rig.source.statistics().inflight == 0


async def test_full_window_pauses_reading_until_records_are_durable() -> None:
    rig = Rig(max_inflight=4)  # MQTT 3.1.1: the source's own window is the only limit
    s = await rig.start()
    rig.sink.hold()
    for i in range(10):
        s.deliver("factory/a", b"%d" % i)
    await rig.settle()
    assert len(rig.sink.readings) == 4
    assert s.paused and rig.source.statistics().paused
    assert len(s.buffered) == 6
    rig.sink.release()
    await rig.settle()
    # Resumed: the buffered ones arrive, four at a time, each batch released again.
    while len(rig.sink.readings) < 10:
        rig.sink.release()
        await rig.settle()
    rig.sink.release()
    await rig.settle()
    assert len(s.acks) == 10 and not s.paused
    assert [m for m, _ in s.acks] == sorted(m for m, _ in s.acks)
    await rig.stop()


async def test_mqtt5_pauses_only_at_twice_the_window() -> None:
    """With Receive Maximum the broker keeps QoS 1 within the window; reading goes on (PINGRESPs)."""
    rig = Rig(max_inflight=4, protocol="5")
    s = await rig.start()
    rig.sink.hold()
    for _ in range(4):
        s.deliver("factory/a", b"x")
    await rig.settle()
    assert not s.paused
    for _ in range(4):
        s.deliver("factory/a", b"x", qos=0)
    await rig.settle()
    assert s.paused
    rig.sink.release()
    await rig.settle()
    assert not s.paused
    await rig.stop()


async def test_reconnects_with_backoff_on_the_injected_clock() -> None:
    rig = Rig()
    rig.sessions.fail_next_connect(SourceUnavailableError("broker", "connection refused"))
    rig.sessions.fail_next_connect(SourceUnavailableError("broker", "connection refused"))
    rig.task = asyncio.ensure_future(rig.source.run())
    await rig.settle()
    assert len(rig.sessions.sessions) == 1
    assert rig.clock.sleepers == 1  # waiting out the first backoff, not spinning
    assert "connection refused" in rig.source.statistics().last_error
    rig.clock.advance(0.49)  # first delay is in [0.5, 1.0]
    await rig.settle()
    assert len(rig.sessions.sessions) == 1
    rig.clock.advance(0.51)
    await rig.settle()
    assert len(rig.sessions.sessions) == 2
    rig.clock.advance(2.0)  # second delay is in [1, 2]
    s = await rig.sessions.wait_connected()
    assert len(rig.sessions.sessions) == 3
    st = rig.source.statistics()
    assert st.connected and st.connect_failures == 2 and st.reconnects == 0
    s.drop()
    await rig.settle()
    assert not rig.source.statistics().connected
    rig.clock.advance(8.0)
    await rig.sessions.wait_connected(2)
    assert rig.source.statistics().reconnects == 1
    await rig.stop()


async def test_messages_of_a_dead_connection_are_not_acked_on_the_next_one() -> None:
    rig = Rig()
    s1 = await rig.start()
    rig.sink.hold()
    s1.deliver("factory/a", b"old", mid=41)
    await rig.settle()
    s1.drop()
    await rig.settle()
    rig.clock.advance(8.0)
    s2 = await rig.sessions.wait_connected(2)
    await rig.settle()  # the broker redelivers 41 on the new session (DUP): stored again, at least once
    assert [r.payload for r in rig.sink.readings] == [b"old", b"old"]
    assert rig.source.statistics().inflight == 2  # the orphan and the redelivered copy
    rig.sink.release()  # both become durable; only the new connection's copy is acked, on that connection
    await rig.settle()
    assert s1.acks == []
    assert s2.acks == [(41, 1)]
    assert rig.source.statistics().inflight == 0
    await rig.stop()


async def test_a_refused_connection_that_needs_an_operator_ends_run() -> None:
    rig = Rig()
    rig.sessions.fail_next_connect(BrokerRefusedError("127.0.0.1", 1883, "Not authorized", 0x87))
    with pytest.raises(BrokerRefusedError, match="check username/password"):
        await asyncio.wait_for(rig.source.run(), 5)


async def test_a_busy_broker_is_retried() -> None:
    rig = Rig()
    rig.sessions.fail_next_connect(BrokerRefusedError("127.0.0.1", 1883, "Server busy", 0x89))
    rig.task = asyncio.ensure_future(rig.source.run())
    await rig.settle()
    assert rig.clock.sleepers == 1
    rig.clock.advance(1.0)
    await rig.sessions.wait_connected()
    await rig.stop()


async def test_stop_waits_for_in_flight_records_then_acks_and_disconnects(rig: Rig) -> None:
    s = await rig.start()
    rig.sink.hold()
    mid = s.deliver("factory/a", b"x")
    await rig.settle()
    stopping = asyncio.ensure_future(rig.stop())
    await rig.settle()
    assert not stopping.done() and s.paused  # draining: no new reads
    rig.sink.release()
    await asyncio.wait_for(stopping, 5)
    assert s.acks == [(mid, 1)] and s.disconnected_cleanly


async def test_stop_gives_up_draining_after_the_timeout(rig: Rig) -> None:
    s = await rig.start()
    rig.sink.hold()
    s.deliver("factory/a", b"x")
    await rig.settle()
    stopping = asyncio.ensure_future(rig.stop())
    await rig.settle()
    rig.clock.advance(5.0)
    await asyncio.wait_for(stopping, 5)
    assert s.acks == [] and s.disconnected_cleanly  # left unacked at the broker: redelivered next time


async def test_stop_before_connecting_returns(rig: Rig) -> None:
    rig.sessions.fail_next_connect(SourceUnavailableError("broker", "refused"))
    rig.task = asyncio.ensure_future(rig.source.run())
    await rig.settle()
    await asyncio.wait_for(rig.stop(), 5)  # interrupts the backoff sleep


async def test_reading_carries_topic_client_id_headers_and_clock_time(rig: Rig) -> None:
    s = await rig.start()
    assert [t.filter for t in s.subscriptions] == ["factory/#"]
    rig.clock.advance(2.5)
    s.deliver("factory/line3/temperature/t-1", b'{"v":1}', user_properties=(("unit", "degC"),))
    await rig.settle()
    r = rig.sink.readings[0]
    assert r.source == "mqtt-test"
    assert r.payload == b'{"v":1}'
    assert r.timestamp_ms == rig.clock.wall_ms()
    assert dict(r.fields) == {"topic": "factory/line3/temperature/t-1", "client_id": "gw-test"}
    assert r.headers == (("mqtt.topic", b"factory/line3/temperature/t-1"), ("unit", b"degC"))


async def test_a_topic_that_is_not_utf8_goes_to_the_dead_letters_and_is_acked(rig: Rig) -> None:
    s = await rig.start()
    mid = s.deliver(None, b"\x00\x01")
    await rig.settle()
    assert rig.sink.readings == []
    assert [d.reason for d in rig.sink.dead_letters] == ["malformed_packet"]
    assert s.acks == [(mid, 1)]
    assert rig.source.statistics().dead_letters == 1


async def test_an_unexpected_sink_failure_reconnects_for_redelivery(rig: Rig) -> None:
    s = await rig.start()
    loop = asyncio.get_running_loop()

    def broken(reading: Any) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = loop.create_future()
        fut.set_exception(OSError("disk on fire"))
        return fut

    original = rig.sink.submit
    rig.sink.submit = broken  # type: ignore[method-assign]
    s.deliver("factory/a", b"x")
    await rig.settle()
    assert s.acks == [] and s.aborted
    st = rig.source.statistics()
    assert st.sink_errors == 1 and "disk on fire" in st.last_error
    rig.sink.submit = original  # type: ignore[method-assign]
    rig.clock.advance(8.0)
    await rig.sessions.wait_connected(2)


async def test_run_twice_at_once_is_refused(rig: Rig) -> None:
    await rig.start()
    with pytest.raises(RuntimeError, match="already running"):
        await rig.source.run()
