"""Persistent sessions of the MQTT listener across restarts, with `FakeSink` and in-memory or file storage:
what a restarted listener restores (subscriptions, QoS 2 ids, expiry), that nothing a client is sent runs ahead
of the save of the session change it reveals, how saves are batched, and what a failing storage costs.

Clients are non-blocking sockets speaking through the codec, so a test can check that nothing has arrived
(loopback delivers a write at once; a round trip on another connection shows the loop moved on). Time is a
`ManualClock`: expiry happens when a test advances it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgestream.edge.clock import ManualClock
from edgestream.edge.mqtt.codec import encode_packet
from edgestream.edge.mqtt.decoder import PacketDecoder
from edgestream.edge.mqtt.listener import MqttListener
from edgestream.edge.mqtt.listener_settings import MqttListenerSettings
from edgestream.edge.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnackPacket,
    ConnectPacket,
    DisconnectPacket,
    Packet,
    PingreqPacket,
    PingrespPacket,
    PubcompPacket,
    PublishPacket,
    PubrecPacket,
    PubrelPacket,
    SubackPacket,
    SubscribePacket,
    Subscription,
)
from edgestream.edge.mqtt.properties import Properties
from edgestream.edge.mqtt.session_file import SessionFile
from edgestream.edge.mqtt.session_store import (
    MemorySessionStorage,
    SessionStorage,
    SessionStorageError,
    StoredSession,
)
from edgestream.edge.testing import FakeSink
from tests.aio import eventually

T = TypeVar("T")
TIMEOUT = 10.0  # generous: two shared cores
VERSIONS = [pytest.param(MQTT_3_1_1, id="3.1.1"), pytest.param(MQTT_5, id="5")]

pytestmark = pytest.mark.timeout(60)




class SockClient:
    """An MQTT client made of a non-blocking socket and the codec."""

    def __init__(self, sock: socket.socket, version: int) -> None:
        self.sock = sock
        self.version = version
        self.decoder = PacketDecoder(version)

    @classmethod
    async def open(cls, port: int, version: int) -> SockClient:
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock, version)

    async def send(self, *packets: Packet) -> None:
        data = b"".join(encode_packet(p, self.version) for p in packets)
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def recv(self) -> Packet:
        while (packet := self.decoder.next_packet()) is None:
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), TIMEOUT)
            if not data:
                raise ConnectionResetError("the listener closed the connection")
            self.decoder.receive_data(data)
        return packet

    def nothing_arrived(self) -> bool:
        if self.decoder.next_packet() is not None:
            return False
        try:
            return not self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"": closed, nothing sent
        except BlockingIOError:
            return True

    async def connect(self, client_id: str, *, persistent: bool = True, expiry_s: int = 300) -> ConnackPacket:
        props = Properties(session_expiry_interval=expiry_s) if self.version == MQTT_5 and persistent else Properties()
        await self.send(ConnectPacket(client_id, self.version, clean_start=not persistent, properties=props))
        connack = await self.recv()
        assert isinstance(connack, ConnackPacket)
        return connack

    def close(self) -> None:
        self.sock.close()


class GatedStorage(MemorySessionStorage):
    """In-memory storage whose saves can be made to wait until the test lets them finish."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()  # a save is stuck at the gate

    def save(self, changes: Mapping[str, StoredSession | None]) -> None:
        if not self.gate.is_set():
            self.waiting.set()
            assert self.gate.wait(TIMEOUT)
            self.waiting.clear()
        super().save(changes)


class BrokenStorage(MemorySessionStorage):
    def save(self, changes: Mapping[str, StoredSession | None]) -> None:
        raise SessionStorageError("the session disk is gone")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


Listen = Callable[..., Awaitable[tuple[MqttListener, int]]]


@pytest.fixture
async def listen(clock: ManualClock, sink: FakeSink) -> AsyncIterator[Listen]:
    running: list[MqttListener] = []

    async def make(storage: SessionStorage, **overrides: Any) -> tuple[MqttListener, int]:
        settings = MqttListenerSettings(**{"port": 0, "allow_anonymous": True, **overrides})
        listener = MqttListener(settings, sink, clock=clock, sessions=storage)
        running.append(listener)
        return listener, await listener.start()

    yield make
    for listener in running:
        await stop(listener, clock)


async def stop(listener: MqttListener, clock: ManualClock) -> None:
    stopping = asyncio.ensure_future(listener.stop())
    while not stopping.done():  # stop() waits on the manual clock for what never comes in a broken test
        await asyncio.sleep(0.005)
        if not stopping.done():
            clock.advance(1)
    await stopping


# ------------------------------------------------------------------------------------------- restarts


@pytest.mark.parametrize("kind", ["memory", "file"])
@pytest.mark.parametrize("version", VERSIONS)
async def test_a_restarted_listener_resumes_subscriptions_and_qos2_state(
    listen: Listen, sink: FakeSink, clock: ManualClock, tmp_path: Path, version: int, kind: str
) -> None:
    path = str(tmp_path / "listener" / "mqtt.sessions")
    storage: SessionStorage = SessionFile(path, clock=clock) if kind == "file" else MemorySessionStorage(clock=clock)
    first, port = await listen(storage)
    client = await SockClient.open(port, version)
    assert not (await client.connect("tail")).session_present
    await client.send(SubscribePacket(1, (Subscription("plant/#"),)))
    assert await client.recv() == SubackPacket(1, (0,))
    await client.send(PublishPacket("plant/a", b"once", 2, packet_id=5))
    assert await client.recv() == PubrecPacket(5)
    client.close()  # gone before its PUBREL
    await stop(first, clock)

    if kind == "file":
        storage = SessionFile(path, clock=clock)  # a new process reads the file
    second, port = await listen(storage)
    assert second.statistics().sessions_restored == 1
    again = await SockClient.open(port, version)
    assert (await again.connect("tail")).session_present
    await again.send(PublishPacket("plant/a", b"once", 2, True, packet_id=5))  # redelivered: not stored twice
    assert await again.recv() == PubrecPacket(5)
    await again.send(PubrelPacket(5))
    assert await again.recv() == PubcompPacket(5)  # MQTT 5: reason 0, the id was known
    assert [r.payload for r in sink.readings] == [b"once"]
    assert second.publish_local("plant/b", b"live") == 1
    assert await again.recv() == PublishPacket("plant/b", b"live")


async def test_a_stop_is_the_disconnect_of_the_clients_still_connected(listen: Listen, clock: ManualClock) -> None:
    storage = MemorySessionStorage(clock=clock)
    first, port = await listen(storage)
    clients = []
    for name, expiry in (("a", 60), ("b", 80)):
        client = await SockClient.open(port, MQTT_5)
        await client.connect(name, expiry_s=expiry)
        clients.append(client)
    clock.advance(30)
    await stop(first, clock)  # expiry counts from here, not from the connect, not from the next start
    for client in clients:
        assert isinstance(await client.recv(), DisconnectPacket)
    clock.advance(61)
    second, port = await listen(storage)
    stats = second.statistics()
    assert (stats.sessions_restored, stats.sessions_expired_at_load) == (1, 1)
    assert (await (await SockClient.open(port, MQTT_5)).connect("b")).session_present


async def test_sessions_expire_while_the_listener_is_down_and_while_it_runs(
    listen: Listen, clock: ManualClock
) -> None:
    storage = MemorySessionStorage(clock=clock)
    first, port = await listen(storage)
    for name, expiry in (("short", 10), ("long", 100)):
        client = await SockClient.open(port, MQTT_5)
        await client.connect(name, expiry_s=expiry)
        await client.send(DisconnectPacket())
    await eventually(lambda: first.statistics().sessions_stored == 2, "both sessions stored")
    await stop(first, clock)
    clock.advance(20)

    second, port = await listen(storage)
    stats = second.statistics()
    assert (stats.sessions_restored, stats.sessions_expired_at_load) == (1, 1)
    assert not (await (await SockClient.open(port, MQTT_5)).connect("short", persistent=False)).session_present
    clock.advance(80)  # "long" has 100 - 20 - 80 = 0 s left: the sweeper drops it, from the storage too
    await eventually(lambda: storage.statistics().stored == 0, "the expired session removed from the storage")
    assert not (await (await SockClient.open(port, MQTT_5)).connect("long")).session_present


async def test_a_clean_start_removes_the_stored_session_so_a_reused_packet_id_is_not_lost(
    listen: Listen, sink: FakeSink, clock: ManualClock
) -> None:
    storage = MemorySessionStorage(clock=clock)
    first, port = await listen(storage)
    client = await SockClient.open(port, MQTT_5)
    await client.connect("sensor")
    await client.send(PublishPacket("t", b"first", 2, packet_id=5))
    assert await client.recv() == PubrecPacket(5)
    client.close()
    await eventually(lambda: first.statistics().sessions_stored == 1, "session stored")
    clean = await SockClient.open(port, MQTT_5)
    assert not (await clean.connect("sensor", persistent=False)).session_present
    await stop(first, clock)

    second, port = await listen(storage)
    assert second.statistics().sessions_restored == 0
    again = await SockClient.open(port, MQTT_5)
    assert not (await again.connect("sensor")).session_present
    await again.send(PublishPacket("t", b"second", 2, packet_id=5))  # id 5 is free again: a new message
    assert await again.recv() == PubrecPacket(5)
    assert [r.payload for r in sink.readings] == [b"first", b"second"]


# ------------------------------------------------------------------------------- acks wait for the save


async def test_nothing_reaches_the_client_before_the_session_change_it_reveals_is_saved(
    listen: Listen, clock: ManualClock
) -> None:
    storage = GatedStorage(clock=clock)
    listener, port = await listen(storage)
    client = await SockClient.open(port, MQTT_5)
    await client.connect("gated")
    bystander = await SockClient.open(port, MQTT_5)
    await bystander.connect("bystander", persistent=False)

    async def held_until_saved(*packets: Packet) -> Packet:
        writes = storage.statistics().writes
        storage.gate.clear()
        await client.send(*packets)
        await eventually(storage.waiting.is_set, "a save waiting at the gate")
        await bystander.send(PingreqPacket())  # the loop ran on, yet nothing was written to `client`
        assert await bystander.recv() == PingrespPacket()
        assert client.nothing_arrived()
        storage.gate.set()
        answer = await client.recv()
        assert storage.statistics().writes > writes
        return answer

    assert await held_until_saved(SubscribePacket(1, (Subscription("a/#"),))) == SubackPacket(1, (0,))
    assert await held_until_saved(PublishPacket("a/b", b"x", 2, packet_id=7)) == PubrecPacket(7)
    assert await held_until_saved(PubrelPacket(7)) == PubcompPacket(7)
    client.close()
    await eventually(lambda: listener.statistics().sessions_stored == 1, "session stored")
    client = await SockClient.open(port, MQTT_5)  # a clean start replacing the stored session
    storage.gate.clear()
    await client.send(ConnectPacket("gated", MQTT_5, clean_start=True))
    await eventually(storage.waiting.is_set, "a save waiting at the gate")
    assert client.nothing_arrived()
    storage.gate.set()
    connack = await client.recv()
    assert isinstance(connack, ConnackPacket) and (connack.session_present, connack.reason_code) == (False, 0)


async def test_a_burst_of_qos2_messages_costs_one_save_for_its_pubrecs(
    listen: Listen, sink: FakeSink, clock: ManualClock
) -> None:
    storage = MemorySessionStorage(clock=clock)
    listener, port = await listen(storage)
    client = await SockClient.open(port, MQTT_3_1_1)
    await client.connect("burst")
    count = 50
    sink.hold()
    await client.send(*(PublishPacket("t", b"%d" % i, 2, packet_id=i + 1) for i in range(count)))
    await eventually(lambda: sink.pending == count, "every message handed to the sink")
    before = storage.statistics().writes
    sink.release()  # one group commit makes all of them durable
    assert [await client.recv() for _ in range(count)] == [PubrecPacket(i + 1) for i in range(count)]
    assert storage.statistics().writes - before == 1
    before = storage.statistics().writes
    await client.send(*(PubrelPacket(i + 1) for i in range(count)))
    assert [await client.recv() for _ in range(count)] == [PubcompPacket(i + 1) for i in range(count)]
    assert storage.statistics().writes - before <= 2  # one per read of the socket at most
    assert listener.statistics().session_store_writes == storage.statistics().writes


async def test_sessions_that_end_with_their_connection_never_touch_the_storage(
    listen: Listen, clock: ManualClock
) -> None:
    storage = MemorySessionStorage(clock=clock)
    _, port = await listen(storage)
    for version in (MQTT_3_1_1, MQTT_5):
        client = await SockClient.open(port, version)
        await client.connect(f"clean-{version}", persistent=False)
        await client.send(SubscribePacket(1, (Subscription("a"),)), PublishPacket("t", b"q2", 2, packet_id=1))
        assert [await client.recv(), await client.recv()] == [SubackPacket(1, (0,)), PubrecPacket(1)]
        await client.send(PubrelPacket(1))
        assert await client.recv() == PubcompPacket(1)
        client.close()
    assert storage.statistics().writes == 0


async def test_a_failing_storage_costs_persistence_not_acks(
    listen: Listen, sink: FakeSink, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    listener, port = await listen(BrokenStorage(clock=clock))
    client = await SockClient.open(port, MQTT_5)
    assert (await client.connect("unlucky")).reason_code == 0
    await client.send(SubscribePacket(1, (Subscription("a"),)), PublishPacket("t", b"x", 2, packet_id=3))
    assert [await client.recv(), await client.recv()] == [SubackPacket(1, (0,)), PubrecPacket(3)]
    stats = listener.statistics()
    assert stats.session_store_write_errors >= 2 and stats.session_store_writes == 0
    assert caplog.text.count("saving sessions failed: the session disk is gone") == 1  # once, not per save
