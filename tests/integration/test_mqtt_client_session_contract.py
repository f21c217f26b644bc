"""One contract, two implementations: `PahoSession` on a real Mosquitto and the scripted `FakeMqttSession`.

The source's unit tests trust the fake; these checks keep the fake honest about what the real session does:
CONNACK session-present, SUBACK, delivery, redelivery of unacked QoS 1 messages (DUP) and not of acked ones,
pause and resume, DISCONNECT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import paho.mqtt.publish as paho_publish
import pytest

from edgestream.edge.clock import SystemClock
from edgestream.edge.mqtt.client_fake import FakeMqttSession, FakeSessions
from edgestream.edge.mqtt.client_session import IncomingMessage, MqttSession, PahoSession
from edgestream.edge.mqtt.client_settings import MqttClientSettings, TopicFilter
from tests.aio import eventually
from tests.harness.mosquitto import MosquittoBroker

pytestmark = pytest.mark.mosquitto


class World(Protocol):
    async def open(self, handler: Callable[[IncomingMessage], None]) -> MqttSession: ...

    async def publish(self, session: MqttSession, payload: bytes) -> None: ...


class RealWorld:
    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.settings = MqttClientSettings(client_id="gw-contract", port=broker.port, protocol="5",
                                           topics=(TopicFilter(filter="contract/#"),))

    async def open(self, handler: Callable[[IncomingMessage], None]) -> MqttSession:
        return PahoSession(self.settings, handler, SystemClock())

    async def publish(self, session: MqttSession, payload: bytes) -> None:
        await asyncio.to_thread(paho_publish.single, "contract/x", payload, qos=1, hostname=self.broker.host,
                                port=self.broker.port)


class FakeWorld:
    def __init__(self) -> None:
        self.sessions = FakeSessions()
        self.settings = MqttClientSettings(client_id="gw-contract", topics=(TopicFilter(filter="contract/#"),))

    async def open(self, handler: Callable[[IncomingMessage], None]) -> MqttSession:
        return self.sessions(self.settings, handler, SystemClock())

    async def publish(self, session: MqttSession, payload: bytes) -> None:
        assert isinstance(session, FakeMqttSession)
        session.deliver("contract/x", payload)


@pytest.fixture(params=["paho+mosquitto", "fake"])
def world(request: pytest.FixtureRequest) -> World:
    if request.param == "fake":
        return FakeWorld()
    return RealWorld(request.getfixturevalue("mosquitto"))




async def test_session_contract(world: World) -> None:
    got: list[IncomingMessage] = []
    s1 = await world.open(got.append)
    first = await s1.connect()
    assert not first.session_present
    assert await s1.subscribe([TopicFilter(filter="contract/#")]) == [1]

    await world.publish(s1, b"one")
    await world.publish(s1, b"two")
    await eventually(lambda: len(got) == 2, "two messages")
    assert [(m.topic, m.payload, m.qos, m.dup) for m in got] == [("contract/x", b"one", 1, False),
                                                                  ("contract/x", b"two", 1, False)]
    s1.ack(got[0].mid, 1)  # "one" is durable; "two" is not

    s1.pause_reading()
    await world.publish(s1, b"three")
    await asyncio.sleep(0.2)  # a paused session must not hand anything over, however long we wait
    assert len(got) == 2
    s1.resume_reading()
    await eventually(lambda: len(got) == 3, "the message held back while paused")
    assert got[2].payload == b"three"

    await s1.disconnect()
    assert s1.closed.done() and s1.closed.result() is None

    again: list[IncomingMessage] = []
    s2 = await world.open(again.append)
    assert (await s2.connect()).session_present
    await s2.subscribe([TopicFilter(filter="contract/#")])
    await eventually(lambda: len(again) == 2, "the two unacked messages, redelivered")
    assert sorted(m.payload for m in again) == [b"three", b"two"]
    assert all(m.dup for m in again)
    for m in again:
        s2.ack(m.mid, m.qos)
    await s2.disconnect()

    third: list[IncomingMessage] = []
    s3 = await world.open(third.append)
    await s3.connect()
    await s3.subscribe([TopicFilter(filter="contract/#")])
    await world.publish(s3, b"marker")
    await eventually(lambda: len(third) == 1, "the marker")
    assert third[0].payload == b"marker"  # nothing acked came back
    s3.abort()
    assert s3.closed.done()
