"""The MQTT listener with `FakeSink`: acks only after durability, in order, backpressure, rejections, sink
shutdown, malformed and oversized packets, authentication, keepalive, sessions and takeover, QoS 2, live
tails, statistics and shutdown. Clients here are raw sockets speaking through the codec, so every byte the
listener sends is checked; tests/integration runs the real clients (paho, mosquitto_pub/sub).

Time is a `ManualClock`: keepalive and connect timeouts happen when a test advances it, never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import pytest

from edgestream.edge.clock import ManualClock
from edgestream.edge.errors import ConfigError
from edgestream.edge.mqtt.auth import Authenticator, Refusal, hash_password, verify_password
from edgestream.edge.mqtt.codec import encode_packet
from edgestream.edge.mqtt.connection import ServerConnection
from edgestream.edge.mqtt.decoder import PacketDecoder
from edgestream.edge.mqtt.errors import ListenerBindError
from edgestream.edge.mqtt.events import ConnectionLimits, ConnectRequested, MessageReceived
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
    PubackPacket,
    PubcompPacket,
    PublishPacket,
    PubrecPacket,
    PubrelPacket,
    SubackPacket,
    SubscribePacket,
    Subscription,
    UnsubackPacket,
    UnsubscribePacket,
    Will,
)
from edgestream.edge.mqtt.properties import Properties
from edgestream.edge.mqtt.session import SessionState, SessionStore
from edgestream.edge.mqtt.topics import TopicFilter, is_valid_topic_filter
from edgestream.edge.source import DeadLetter, Reading
from edgestream.edge.testing import FakeSink
from tests.aio import eventually

T = TypeVar("T")
TIMEOUT = 10.0  # generous: two shared cores
FAST_HASH = 1_000  # iterations for test users; real configs use the default

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------------------------------------- helpers




class RawClient:
    """An MQTT client made of a socket and the codec, to see exactly what the listener sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int) -> None:
        self.reader = reader
        self.writer = writer
        self.version = version
        self.decoder = PacketDecoder(version)

    @classmethod
    async def open(cls, port: int, version: int = MQTT_3_1_1) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, version)

    def send(self, *packets: Packet) -> None:
        self.writer.write(b"".join(encode_packet(p, self.version) for p in packets))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout: float = TIMEOUT) -> Packet:
        while True:
            packet = self.decoder.next_packet()
            if packet is not None:
                assert isinstance(packet, Packet.__args__)  # type: ignore[attr-defined]
                return packet
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionResetError("listener closed the connection")
            self.decoder.receive_data(data)

    async def recv_until(self, kind: type[T]) -> tuple[list[Packet], T]:
        """Packets received before the first `kind`, and that one."""
        before = []
        while True:
            packet = await self.recv()
            if isinstance(packet, kind):
                return before, packet
            before.append(packet)

    async def ping(self) -> list[Packet]:
        """Round trip a PINGREQ; returns whatever arrived before the PINGRESP (a sync point)."""
        self.send(PingreqPacket())
        before, _ = await self.recv_until(PingrespPacket)
        return before

    async def connect(self, client_id: str = "c1", **kwargs: Any) -> ConnackPacket:
        self.send(ConnectPacket(client_id, self.version, **kwargs))
        connack = await self.recv()
        assert isinstance(connack, ConnackPacket)
        return connack

    async def closed(self) -> list[Packet]:
        """Read until the listener closes the connection; returns the packets received before."""
        out = []
        with contextlib.suppress(ConnectionResetError):
            while True:
                out.append(await self.recv())
        return out

    def close(self) -> None:
        self.writer.close()


class ManualSink:
    """A sink whose submissions each resolve when the test says, in any order."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.futures: list[asyncio.Future[None]] = []

    def submit(self, reading: Reading) -> Awaitable[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.readings.append(reading)
        self.futures.append(future)
        return future

    def dead_letter(self, letter: DeadLetter) -> Awaitable[None]:
        raise AssertionError("no dead letters expected")


def settings(**overrides: Any) -> MqttListenerSettings:
    base: dict[str, Any] = {"port": 0, "allow_anonymous": True, "host": "127.0.0.1"}
    base.update(overrides)
    return MqttListenerSettings(**base)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


ListenerFactory = Callable[..., Awaitable[tuple[MqttListener, int]]]


@pytest.fixture
async def make_listener(clock: ManualClock, sink: FakeSink) -> AsyncIterator[ListenerFactory]:
    listeners: list[MqttListener] = []

    async def make(sink_: Any = None, **overrides: Any) -> tuple[MqttListener, int]:
        listener = MqttListener(settings(**overrides), sink_ if sink_ is not None else sink, clock=clock)
        listeners.append(listener)
        return listener, await listener.start()

    yield make
    for listener in listeners:
        if isinstance(listener.sink, FakeSink):
            listener.sink.release()
        stopping = asyncio.ensure_future(listener.stop())
        while not stopping.done():  # stop() waits on the manual clock for acks that may never come
            clock.advance(10)
            await asyncio.sleep(0.001)
        await stopping


VERSIONS = [pytest.param(MQTT_3_1_1, id="3.1.1"), pytest.param(MQTT_5, id="5")]


# ---------------------------------------------------------------------------------------- acks and order


@pytest.mark.parametrize("version", VERSIONS)
async def test_puback_waits_for_durability(make_listener: ListenerFactory, sink: FakeSink, version: int) -> None:
    _, port = await make_listener()
    client = await RawClient.open(port, version)
    assert (await client.connect()).reason_code == 0
    sink.hold()
    client.send(PublishPacket("plant/t1", b"21.5", 1, packet_id=7))
    # the PINGRESP proves the PUBLISH was processed; nothing may have been acknowledged before it
    assert await client.ping() == []
    assert [r.payload for r in sink.readings] == [b"21.5"]
    sink.release()
    assert await client.recv() == PubackPacket(7)


@pytest.mark.parametrize("version", VERSIONS)
async def test_acks_leave_in_arrival_order_whatever_order_records_become_durable(
    make_listener: ListenerFactory, version: int
) -> None:
    manual = ManualSink()
    _, port = await make_listener(manual)
    client = await RawClient.open(port, version)
    await client.connect()
    client.send(*(PublishPacket("t", bytes([i]), 1 + i % 2, packet_id=100 + i) for i in range(6)))
    await eventually(lambda: len(manual.futures) == 6, "6 submissions")
    for future in reversed(manual.futures[1:]):  # all but the first become durable, newest first
        future.set_result(None)
    assert await client.ping() == []  # everything waits behind the first
    manual.futures[0].set_result(None)
    acks = [await client.recv() for _ in range(6)]
    assert [(type(a), a.packet_id) for a in acks] == [  # type: ignore[attr-defined]
        (PubackPacket if i % 2 == 0 else PubrecPacket, 100 + i) for i in range(6)
    ]


async def test_a_full_window_stops_reading_the_socket(make_listener: ListenerFactory, sink: FakeSink) -> None:
    listener, port = await make_listener(receive_maximum=4)
    flooder = await RawClient.open(port)
    await flooder.connect("flooder")
    sink.hold()
    payload = b"x" * 1000
    count = 5_000  # 5 MB: more than the listener would read in one go if it kept reading
    flooder.send(*(PublishPacket("flood", payload, 1, packet_id=1 + i % 65535) for i in range(count)))
    await eventually(lambda: len(sink.readings) == 4, "4 readings")
    # a round trip on another connection: the loop ran past the flooder's readable data
    other = await RawClient.open(port)
    await other.connect("other")
    await other.ping()
    stats = listener.statistics()
    assert len(sink.readings) == 4
    assert stats.inflight == 4
    assert stats.bytes_in < 2_000_000, "the listener kept reading a connection whose window is full"
    sink.release()
    await eventually(lambda: listener.statistics().acks_sent == count, "every message acknowledged", 60)
    assert len(sink.readings) == count


@pytest.mark.parametrize("version", VERSIONS)
async def test_qos0_counts_against_the_window_too(make_listener: ListenerFactory, sink: FakeSink,
                                                  version: int) -> None:
    _listener, port = await make_listener(receive_maximum=3)
    client = await RawClient.open(port, version)
    await client.connect()
    sink.hold()
    client.send(*(PublishPacket("q0", b"%d" % i) for i in range(10)))
    await eventually(lambda: len(sink.readings) == 3)
    await (await _connected(port, "sync")).ping()
    assert len(sink.readings) == 3
    sink.release()
    await eventually(lambda: len(sink.readings) == 10)
    assert [r.payload for r in sink.readings] == [b"%d" % i for i in range(10)]


async def _connected(port: int, client_id: str, version: int = MQTT_3_1_1, **kwargs: Any) -> RawClient:
    client = await RawClient.open(port, version)
    connack = await client.connect(client_id, **kwargs)
    assert connack.reason_code == 0, connack
    return client


# ------------------------------------------------------------------------------------ sink outcomes


@pytest.mark.parametrize(("version", "reason", "code"), [
    (MQTT_3_1_1, "full", 0), (MQTT_5, "full", 0x97), (MQTT_5, "payload_format_invalid", 0x99),
    (MQTT_5, "something_else", 0x83),
])
async def test_rejected_records_are_acked_with_a_reason_and_counted(
    make_listener: ListenerFactory, sink: FakeSink, version: int, reason: str, code: int
) -> None:
    listener, port = await make_listener()
    client = await _connected(port, "c", version)
    sink.reject_next(reason)
    client.send(PublishPacket("t", b"x", 1, packet_id=1), PublishPacket("t", b"y", 1, packet_id=2))
    first, second = await client.recv(), await client.recv()
    assert isinstance(first, PubackPacket) and (first.packet_id, first.reason_code) == (1, code)
    if code:
        assert first.properties.reason_string == f"record rejected ({reason})"
    assert second == PubackPacket(2)
    assert listener.statistics().rejected == {reason: 1}
    assert [r.payload for r in sink.readings] == [b"y"]


async def test_rejection_reason_strings_respect_request_problem_information(
    make_listener: ListenerFactory, sink: FakeSink
) -> None:
    _, port = await make_listener()
    client = await _connected(port, "c", MQTT_5, properties=Properties(request_problem_information=0))
    sink.reject_next("full")
    client.send(PublishPacket("t", b"x", 1, packet_id=1))
    assert await client.recv() == PubackPacket(1, 0x97)


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_closed_sink_means_no_ack_and_a_closed_connection(
    make_listener: ListenerFactory, sink: FakeSink, version: int
) -> None:
    listener, port = await make_listener()
    client = await _connected(port, "c", version)
    sink.hold()
    client.send(PublishPacket("t", b"x", 1, packet_id=1))
    await eventually(lambda: sink.readings)
    sink.close()
    received = await client.closed()
    assert received == ([DisconnectPacket(0x8B, Properties(reason_string="sink closed"))] if version == MQTT_5
                        else [])
    assert listener.statistics().sink_closed == 1
    assert listener.statistics().acks_sent == 0


async def test_a_sink_that_raises_does_not_take_the_listener_down(make_listener: ListenerFactory) -> None:
    class BrokenSink(ManualSink):
        def submit(self, reading: Reading) -> Awaitable[None]:
            raise RuntimeError("bug in the router")

    listener, port = await make_listener(BrokenSink())
    client = await _connected(port, "c")
    client.send(PublishPacket("t", b"x", 1, packet_id=1))
    assert await client.closed() == []
    assert listener.statistics().sink_errors == 1
    assert (await _connected(port, "next")).writer is not None  # still serving


# ------------------------------------------------------------------------------- malformed and oversized


@pytest.mark.parametrize(("version", "data", "label", "code"), [
    (MQTT_3_1_1, b"\x36\x05\x00\x01a\x00\x01", "malformed_packet", None),  # QoS 3
    (MQTT_5, b"\x36\x06\x00\x01a\x00\x01\x00", "malformed_packet", 0x81),
    (MQTT_5, encode_packet(ConnectPacket("again", MQTT_5), MQTT_5), "protocol_error", 0x82),  # second CONNECT
    (MQTT_5, encode_packet(PublishPacket("a/+", b""), MQTT_5), "topic_name_invalid", 0x90),
    (MQTT_5, encode_packet(PublishPacket("t", b"", 2, packet_id=1), MQTT_5), "qos_not_supported", 0x9B),
    (MQTT_5, encode_packet(PublishPacket("t", b"", properties=Properties(topic_alias=99)), MQTT_5),
     "topic_alias_invalid", 0x94),
    (MQTT_5, encode_packet(PublishPacket("", b"", properties=Properties(topic_alias=1)), MQTT_5),
     "protocol_error", 0x82),
    (MQTT_5, b"\xf0\x00", "protocol_error", 0x82),  # AUTH
    (MQTT_5, encode_packet(SubscribePacket(1, (Subscription("a"),), Properties(subscription_identifiers=(3,))),
                           MQTT_5), "subscription_identifiers_not_supported", 0xA1),
    (MQTT_3_1_1, b"\x20\x02\x00\x00", "protocol_error", None),  # a CONNACK from a client
])
async def test_protocol_violations_close_only_that_connection(
    make_listener: ListenerFactory, sink: FakeSink, version: int, data: bytes, label: str, code: int | None
) -> None:
    listener, port = await make_listener(max_qos=1, topic_alias_maximum=4)
    bystander = await _connected(port, "bystander", MQTT_5)
    client = await _connected(port, "bad", version)
    client.send_raw(data)
    received = await client.closed()
    if code is None:
        assert received == []
    else:
        assert len(received) == 1 and isinstance(received[0], DisconnectPacket)
        assert received[0].reason_code == code
    assert listener.statistics().malformed == {label: 1}
    bystander.send(PublishPacket("still/here", b"ok", 1, packet_id=1))
    assert await bystander.recv() == PubackPacket(1)


async def test_garbage_before_connect_closes_silently(make_listener: ListenerFactory) -> None:
    listener, port = await make_listener()
    client = await RawClient.open(port)
    client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await client.closed() == []
    assert sum(listener.statistics().malformed.values()) == 1


async def test_mqtt_3_1_is_told_the_version_is_unacceptable(make_listener: ListenerFactory) -> None:
    listener, port = await make_listener()
    client = await RawClient.open(port)
    client.send_raw(b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01c")
    assert await client.closed() == [ConnackPacket(False, 0x01)]
    assert listener.statistics().malformed == {"unsupported_protocol_version": 1}


async def test_oversized_publish_in_mqtt_5_is_dead_lettered_and_refused(
    make_listener: ListenerFactory, sink: FakeSink
) -> None:
    listener, port = await make_listener(max_packet_bytes=1024, oversize_capture_bytes=100_000)
    client = await _connected(port, "big", MQTT_5)
    big = PublishPacket("plant/image", b"x" * 5000, 1, packet_id=3)
    client.send(big)
    received = await client.closed()
    assert [(type(p), p.reason_code) for p in received] == [(DisconnectPacket, 0x95)]  # type: ignore[attr-defined]
    assert len(sink.dead_letters) == 1
    letter = sink.dead_letters[0]
    assert (letter.reason, letter.payload, letter.timestamp_ms) == ("too_large", b"x" * 5000, 1_700_000_000_000)
    assert letter.fields == {"topic": "plant/image", "client_id": "big"}
    assert letter.detail == f"PUBLISH of {len(encode_packet(big, MQTT_5))} bytes over the 1024-byte limit"
    stats = listener.statistics()
    assert (stats.dead_letters, stats.malformed) == (1, {"packet_too_large": 1})


async def test_oversized_publish_in_mqtt_3_is_dead_lettered_acked_and_the_connection_goes_on(
    make_listener: ListenerFactory, sink: FakeSink
) -> None:
    listener, port = await make_listener(max_packet_bytes=1024, oversize_capture_bytes=100_000)
    client = await _connected(port, "big")
    client.send(PublishPacket("t", b"a", 1, packet_id=1), PublishPacket("plant/image", b"x" * 5000, 1, packet_id=2),
                PublishPacket("t", b"b", 1, packet_id=3))
    assert [await client.recv() for _ in range(3)] == [PubackPacket(1), PubackPacket(2), PubackPacket(3)]
    assert [r.payload for r in sink.readings] == [b"a", b"b"]
    assert [(d.reason, d.fields["topic"]) for d in sink.dead_letters] == [("too_large", "plant/image")]
    assert listener.statistics().malformed == {}


async def test_a_packet_over_the_capture_limit_only_closes_the_connection(
    make_listener: ListenerFactory, sink: FakeSink
) -> None:
    listener, port = await make_listener(max_packet_bytes=1024, oversize_capture_bytes=2048)
    client = await _connected(port, "huge", MQTT_5)
    client.send_raw(b"\x30" + bytes([0xFF, 0xFF, 0xFF, 0x7F]))  # announces 256 MB and sends none of it
    assert [(type(p), p.reason_code) for p in await client.closed()] == [  # type: ignore[attr-defined]
        (DisconnectPacket, 0x95)
    ]
    assert sink.dead_letters == []
    assert listener.statistics().malformed == {"packet_too_large": 1}


async def test_a_publish_that_cannot_be_decoded_is_kept_as_a_dead_letter(
    make_listener: ListenerFactory, sink: FakeSink
) -> None:
    _listener, port = await make_listener()
    client = await _connected(port, "c", MQTT_5)
    bad = b"\x32\x08\x00\x03a\x00b\x00\x01\x00"  # U+0000 in the topic
    client.send_raw(bad)
    assert [(type(p), p.reason_code) for p in await client.closed()] == [  # type: ignore[attr-defined]
        (DisconnectPacket, 0x81)
    ]
    assert [(d.reason, d.payload) for d in sink.dead_letters] == [("malformed_packet", bad)]
    assert "U+0000" in sink.dead_letters[0].detail


# --------------------------------------------------------------------------------------- readings


async def test_readings_carry_topic_client_id_headers_and_the_clock_time(
    make_listener: ListenerFactory, sink: FakeSink, clock: ManualClock
) -> None:
    _, port = await make_listener(name="sensors")
    client = await _connected(port, "press-4", MQTT_5)
    clock.advance(2.5)
    props = Properties(user_properties=(("unit", "bar"), ("line", "4")), content_type="application/json",
                       topic_alias=1)
    client.send(PublishPacket("plant/press/4", b'{"p":6.1}', 1, True, packet_id=1, properties=props),
                PublishPacket("", b'{"p":6.2}', 0, properties=Properties(topic_alias=1)))
    await client.recv()
    await eventually(lambda: len(sink.readings) == 2)
    first, second = sink.readings
    assert first.source == "sensors"
    assert first.timestamp_ms == 1_700_000_002_500
    assert dict(first.fields) == {"topic": "plant/press/4", "client_id": "press-4"}
    assert first.headers == (("mqtt.topic", b"plant/press/4"), ("unit", b"bar"), ("line", b"4"),
                             ("mqtt.content_type", b"application/json"), ("mqtt.retain", b"1"))
    assert dict(second.fields) == {"topic": "plant/press/4", "client_id": "press-4"}  # alias resolved
    assert second.headers == (("mqtt.topic", b"plant/press/4"),)


# ----------------------------------------------------------------------------------- authentication


async def test_passwords_are_checked_against_hashes(make_listener: ListenerFactory, sink: FakeSink) -> None:
    users = {"plant": hash_password("s3cret", iterations=FAST_HASH)}
    listener, port = await make_listener(users=users, allow_anonymous=False)
    for version, bad, anonymous in ((MQTT_3_1_1, 0x04, 0x05), (MQTT_5, 0x86, 0x87)):
        ok = await RawClient.open(port, version)
        assert (await ok.connect("a", username="plant", password=b"s3cret")).reason_code == 0
        wrong = await RawClient.open(port, version)
        assert (await wrong.connect("b", username="plant", password=b"guess")).reason_code == bad
        assert await wrong.closed() == []
        unknown = await RawClient.open(port, version)
        assert (await unknown.connect("c", username="nobody", password=b"s3cret")).reason_code == bad
        anon = await RawClient.open(port, version)
        assert (await anon.connect("d")).reason_code == anonymous
    assert listener.statistics().auth_failures == 6


def test_hashes_verify_and_the_authenticator_remembers_only_successes() -> None:
    encoded = hash_password("pw", iterations=FAST_HASH)
    assert encoded.startswith("pbkdf2_sha256$1000$")
    assert verify_password(b"pw", encoded) and not verify_password(b"pW", encoded)
    assert hash_password("pw", iterations=FAST_HASH) != encoded  # salted
    auth = Authenticator({"u": encoded}, allow_anonymous=False)
    assert not auth.is_fast("u", b"pw")
    assert auth.check("u", b"wrong", certificate=False) is Refusal.BAD_CREDENTIALS
    assert not auth.is_fast("u", b"wrong")
    assert auth.check("u", b"pw", certificate=False) is None
    assert auth.is_fast("u", b"pw") and not auth.is_fast("u", b"wrong")
    assert auth.check("u", b"wrong", certificate=True) is Refusal.BAD_CREDENTIALS  # a name must always match
    assert auth.check(None, None, certificate=True) is None
    assert auth.check(None, None, certificate=False) is Refusal.NOT_AUTHORIZED
    assert auth.check(None, b"pw", certificate=True) is Refusal.BAD_CREDENTIALS


async def test_mqtt_5_enhanced_authentication_is_refused(make_listener: ListenerFactory) -> None:
    listener, port = await make_listener()
    client = await RawClient.open(port, MQTT_5)
    connack = await client.connect("c", properties=Properties(authentication_method="SCRAM-SHA-1"))
    assert connack.reason_code == 0x8C
    assert listener.statistics().malformed == {"bad_authentication_method": 1}


async def test_empty_client_ids(make_listener: ListenerFactory, sink: FakeSink) -> None:
    listener, port = await make_listener()
    v5 = await RawClient.open(port, MQTT_5)
    connack = await v5.connect("")
    assert connack.reason_code == 0
    assigned = connack.properties.assigned_client_identifier
    assert assigned and assigned.startswith("auto-")
    v5.send(PublishPacket("t", b"x"))
    await eventually(lambda: sink.readings)
    assert sink.readings[0].fields["client_id"] == assigned
    v3 = await RawClient.open(port)
    assert (await v3.connect("", clean_start=False)).reason_code == 0x02
    assert listener.statistics().malformed == {"client_identifier_not_valid": 1}


# -------------------------------------------------------------------------------------- timers


@pytest.mark.parametrize("version", VERSIONS)
async def test_keepalive_is_enforced_at_one_and_a_half_times(
    make_listener: ListenerFactory, sink: FakeSink, clock: ManualClock, version: int
) -> None:
    listener, port = await make_listener()
    will = Will("status/s1", b"offline", 1)
    quiet = await _connected(port, "quiet", version, keepalive=10, will=will)
    chatty = await _connected(port, "chatty", version, keepalive=10)
    for _ in range(3):
        clock.advance(7)  # chatty pings every 7 s of clock time; quiet says nothing for 21 s
        await chatty.ping()
    received = await quiet.closed()
    assert received == ([DisconnectPacket(0x8D, Properties(reason_string="keep alive timeout"))]
                        if version == MQTT_5 else [])
    await chatty.ping()
    stats = listener.statistics()
    assert (stats.keepalive_timeouts, stats.connections_current, stats.wills_published) == (1, 1, 1)
    assert [(r.fields["topic"], r.payload, r.headers[-1]) for r in sink.readings] == [
        ("status/s1", b"offline", ("mqtt.will", b"1"))
    ]


async def test_mqtt_5_keepalive_is_capped_by_the_server(make_listener: ListenerFactory) -> None:
    _, port = await make_listener(keepalive_max_s=60)
    for asked in (0, 600):
        client = await RawClient.open(port, MQTT_5)
        assert (await client.connect(f"k{asked}", keepalive=asked)).properties.server_keep_alive == 60
    client = await RawClient.open(port, MQTT_5)
    assert (await client.connect("k30", keepalive=30)).properties.server_keep_alive is None


async def test_a_connection_that_never_sends_connect_is_closed(
    make_listener: ListenerFactory, clock: ManualClock
) -> None:
    listener, port = await make_listener(connect_timeout_s=5)
    idle = await RawClient.open(port)
    await eventually(lambda: listener.statistics().connections_current == 1)
    closing = asyncio.ensure_future(idle.closed())
    while not closing.done():
        clock.advance(1)
        await asyncio.sleep(0.01)
    assert listener.statistics().connect_timeouts == 1


# ------------------------------------------------------------------------------------ sessions, takeover


async def test_a_second_connection_with_the_same_client_id_takes_over(
    make_listener: ListenerFactory, sink: FakeSink
) -> None:
    listener, port = await make_listener()
    first = await _connected(port, "sensor-9", MQTT_5, will=Will("status", b"gone"))
    second = await _connected(port, "sensor-9", MQTT_3_1_1)
    received = await first.closed()
    assert [(type(p), p.reason_code) for p in received] == [(DisconnectPacket, 0x8E)]  # type: ignore[attr-defined]
    second.send(PublishPacket("t", b"from second", 1, packet_id=1))
    assert await second.recv() == PubackPacket(1)
    stats = listener.statistics()
    assert (stats.takeovers, stats.connections_current, stats.wills_published) == (1, 1, 0)


async def test_a_persistent_session_keeps_subscriptions_and_qos2_state(
    make_listener: ListenerFactory, sink: FakeSink
) -> None:
    listener, port = await make_listener()
    persistent = {"clean_start": False, "properties": Properties(session_expiry_interval=300)}
    client = await _connected(port, "tail", MQTT_5, **persistent)
    client.send(SubscribePacket(1, (Subscription("plant/#"),)))
    assert await client.recv() == SubackPacket(1, (0,))
    client.send(PublishPacket("plant/a", b"once", 2, packet_id=5))
    assert await client.recv() == PubrecPacket(5)
    client.close()  # gone before PUBREL
    await eventually(lambda: listener.statistics().sessions_stored == 1)

    again = await RawClient.open(port, MQTT_5)
    connack = await again.connect("tail", **persistent)
    assert connack.session_present
    again.send(PublishPacket("plant/a", b"once", 2, True, packet_id=5))  # redelivered: not stored twice
    assert await again.recv() == PubrecPacket(5)
    again.send(PubrelPacket(5))
    assert await again.recv() == PubcompPacket(5)
    assert [r.payload for r in sink.readings] == [b"once"]
    assert listener.publish_local("plant/b", b"live") == 1  # the subscription came back with the session
    assert await again.recv() == PublishPacket("plant/b", b"live")

    fresh = await RawClient.open(port, MQTT_5)
    assert not (await fresh.connect("tail")).session_present  # clean start discards it
    assert listener.publish_local("plant/b", b"live") == 0


async def test_mqtt_3_clean_session_false_resumes_and_clean_session_true_does_not(
    make_listener: ListenerFactory,
) -> None:
    listener, port = await make_listener()
    client = await _connected(port, "v3", clean_start=False)
    client.send(SubscribePacket(1, (Subscription("x"),)))
    await client.recv()
    client.send(DisconnectPacket())
    await client.closed()
    await eventually(lambda: listener.statistics().sessions_stored == 1)
    assert (await _connected_connack(port, "v3", clean_start=False)).session_present
    assert not (await _connected_connack(port, "v3", clean_start=True)).session_present


async def _connected_connack(port: int, client_id: str, version: int = MQTT_3_1_1, **kwargs: Any) -> ConnackPacket:
    client = await RawClient.open(port, version)
    connack = await client.connect(client_id, **kwargs)
    client.close()
    return connack


def test_the_session_store_expires_and_bounds_sessions() -> None:
    store = SessionStore(max_sessions=2)
    store.put(SessionState("a", expiry_s=10), now=0)
    store.put(SessionState("b", expiry_s=100), now=0)
    store.put(SessionState("none", expiry_s=0), now=0)  # ends with its connection: not kept
    assert len(store) == 2
    store.put(SessionState("c", expiry_s=50), now=0)  # full: the one expiring first goes
    assert store.evicted == 1 and store.take("a", now=1) is None
    assert store.take("c", now=60) is None and store.expired == 1
    session = store.take("b", now=60)
    assert session is not None and session.client_id == "b"
    assert len(store) == 0


# ----------------------------------------------------------------------------------------- QoS 2


async def test_qos2_exchange_and_redelivery_before_pubrel(make_listener: ListenerFactory, sink: FakeSink) -> None:
    _, port = await make_listener()
    client = await _connected(port, "q2", MQTT_5)
    sink.hold()
    client.send(PublishPacket("t", b"exactly once", 2, packet_id=9))
    assert await client.ping() == []  # no PUBREC before durable
    client.send(PublishPacket("t", b"exactly once", 2, True, packet_id=9))  # retransmitted meanwhile
    assert await client.ping() == []
    sink.release()
    assert await client.recv() == PubrecPacket(9)
    client.send(PublishPacket("t", b"exactly once", 2, True, packet_id=9))  # PUBREC lost, say
    assert await client.recv() == PubrecPacket(9)
    client.send(PubrelPacket(9))
    assert await client.recv() == PubcompPacket(9)
    client.send(PubrelPacket(9))
    assert await client.recv() == PubcompPacket(9, 0x92)
    assert [r.payload for r in sink.readings] == [b"exactly once"]


# ------------------------------------------------------------------------------------------ live tails


@pytest.mark.parametrize("version", VERSIONS)
async def test_subscribers_get_matching_messages_at_qos0(make_listener: ListenerFactory, version: int) -> None:
    listener, port = await make_listener()
    client = await _connected(port, "tail", version)
    failure = 0x8F if version == MQTT_5 else 0x80
    shared = 0x9E if version == MQTT_5 else 0x80
    client.send(SubscribePacket(1, (Subscription("plant/+/temp", 1), Subscription("alarms/#", 2),
                                    Subscription("bad/#/x"), Subscription("$share/g/x"))))
    assert await client.recv() == SubackPacket(1, (0, 0, failure, shared))
    assert listener.publish_local("plant/a/temp", b"1") == 1
    assert listener.publish_local("plant/a/b/temp", b"no") == 0
    assert listener.publish_local("alarms", b"2") == 1  # "#" matches the parent level too
    assert listener.publish_local("alarms/x/y", b"3") == 1
    assert listener.publish_local("$SYS/alarms", b"no") == 0
    got = [await client.recv() for _ in range(3)]
    assert got == [PublishPacket("plant/a/temp", b"1"), PublishPacket("alarms", b"2"),
                   PublishPacket("alarms/x/y", b"3")]
    client.send(UnsubscribePacket(2, ("alarms/#", "never")))
    assert await client.recv() == UnsubackPacket(2, (0, 0x11) if version == MQTT_5 else ())
    assert listener.publish_local("alarms", b"4") == 0
    assert listener.statistics().forwarded == 3


async def test_no_local_and_the_subscribers_maximum_packet_size(make_listener: ListenerFactory) -> None:
    listener, port = await make_listener()
    client = await _connected(port, "me", MQTT_5, properties=Properties(maximum_packet_size=100))
    client.send(SubscribePacket(1, (Subscription("t", no_local=True),)))
    await client.recv()
    assert listener.publish_local("t", b"mine", client_id="me") == 0
    assert listener.publish_local("t", b"x" * 200, client_id="other") == 0
    assert listener.publish_local("t", b"yours", client_id="other") == 1
    assert await client.recv() == PublishPacket("t", b"yours")
    assert listener.statistics().subscriber_drops == 1


async def test_a_subscriber_that_does_not_read_loses_messages_instead_of_growing_memory(
    make_listener: ListenerFactory,
) -> None:
    listener, port = await make_listener(subscriber_buffer_bytes=64 * 1024)
    slow = await _connected(port, "slow")
    slow.send(SubscribePacket(1, (Subscription("#"),)))
    await slow.recv()  # and never reads again
    payload = b"x" * 32 * 1024
    sent = 0
    for _ in range(2000):  # up to 64 MB, far past what socket buffers hold
        sent += 1
        listener.publish_local("big", payload)
        if listener.statistics().subscriber_drops:
            break
        await asyncio.sleep(0)  # let the transport hand what it can to the kernel
    stats = listener.statistics()
    assert stats.subscriber_drops == 1, f"no drop after {sent} messages"
    # what was forwarded fits in the socket buffers plus the 64 KiB allowance, not in 64 MB
    assert stats.forwarded * len(payload) < 32 * 1024 * 1024
    fast = await _connected(port, "fast")
    fast.send(SubscribePacket(1, (Subscription("#"),)))
    await fast.recv()
    assert listener.publish_local("big", payload) == 1  # the fast one gets it, the slow one drops it again
    assert await fast.recv() == PublishPacket("big", payload)
    assert listener.statistics().subscriber_drops == 2


async def test_subscribing_can_be_switched_off(make_listener: ListenerFactory) -> None:
    listener, port = await make_listener(allow_subscribe=False)
    client = await _connected(port, "tail", MQTT_5)
    client.send(SubscribePacket(1, (Subscription("#"),)))
    assert await client.recv() == SubackPacket(1, (0x87,))
    assert listener.publish_local("t", b"x") == 0


def test_topic_filters() -> None:
    cases = [("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False), ("a/#", "a", True),
             ("#", "a/b/c", True), ("+/+", "/x", True), ("+", "$SYS", False), ("#", "$SYS/x", False),
             ("$SYS/#", "$SYS/x", True), ("a/+/c", "a//c", True), ("a", "A", False)]
    for text, topic, expected in cases:
        assert TopicFilter.parse(text).matches_topic(topic) is expected, (text, topic)
    for bad in ("", "a/#/b", "a#", "a/b+", "++"):
        assert not is_valid_topic_filter(bad)


# ---------------------------------------------------------------------------------- limits, lifecycle


async def test_connections_over_the_limit_are_refused(make_listener: ListenerFactory) -> None:
    listener, port = await make_listener(max_connections=2)
    held = [await _connected(port, "a"), await _connected(port, "b")]
    third = await RawClient.open(port)
    third.send(ConnectPacket("c"))
    assert await third.closed() == []
    stats = listener.statistics()
    assert (stats.connections_current, stats.connections_refused) == (2, 1)
    held[0].close()
    await eventually(lambda: listener.statistics().connections_current == 1)
    assert (await _connected_connack(port, "c")).reason_code == 0  # room again


async def test_statistics_count_what_happened(make_listener: ListenerFactory) -> None:
    listener, port = await make_listener()
    client = await _connected(port, "s", MQTT_5)
    frames = [PublishPacket("t", b"0"), PublishPacket("t", b"1", 1, packet_id=1),
              PublishPacket("t", b"2", 2, packet_id=2)]
    client.send(*frames)
    assert {type(await client.recv()) for _ in range(2)} == {PubackPacket, PubrecPacket}
    stats = listener.statistics()
    assert stats.publishes_received == {0: 1, 1: 1, 2: 1}
    assert stats.acks_sent == 2
    assert stats.bytes_in == len(encode_packet(ConnectPacket("s", MQTT_5), MQTT_5)) + sum(
        len(encode_packet(f, MQTT_5)) for f in frames)
    assert (stats.connections_total, stats.connections_current) == (1, 1)


async def test_stop_waits_for_in_flight_acks_then_says_goodbye(
    clock: ManualClock, sink: FakeSink
) -> None:
    listener = MqttListener(settings(stop_timeout_s=30), sink, clock=clock)
    port = await listener.start()
    client = await _connected(port, "c", MQTT_5)
    sink.hold()
    client.send(PublishPacket("t", b"x", 1, packet_id=1))
    await eventually(lambda: sink.readings)
    stopping = asyncio.ensure_future(listener.stop())
    await eventually(lambda: clock.sleepers == 2, "stop() waiting on its deadline (and the timer task)")
    assert not stopping.done()
    sink.release()
    assert await client.closed() == [PubackPacket(1), DisconnectPacket(0x8B, Properties(
        reason_string="server shutting down"))]
    await asyncio.wait_for(stopping, TIMEOUT)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_stop_gives_up_on_acks_at_its_deadline(clock: ManualClock, sink: FakeSink) -> None:
    listener = MqttListener(settings(stop_timeout_s=30), sink, clock=clock)
    port = await listener.start()
    client = await _connected(port, "c")
    sink.hold()
    client.send(PublishPacket("t", b"x", 1, packet_id=1))
    await eventually(lambda: sink.readings)
    stopping = asyncio.ensure_future(listener.stop())
    while not stopping.done():
        clock.advance(1)
        await asyncio.sleep(0.01)
    assert await client.closed() == []  # never acknowledged: the client will redeliver


async def test_start_reports_configuration_and_bind_errors(tmp_path: Any, sink: FakeSink) -> None:
    with pytest.raises(ConfigError) as err:
        await MqttListener(settings(tls_cert_file=str(tmp_path / "missing.pem"),
                                    tls_key_file=str(tmp_path / "missing.key")), sink).start()
    assert err.value.key == "tls_cert_file"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenerBindError) as bind:
            await MqttListener(settings(port=port), sink).start()
    assert bind.value.port == port and bind.value.retriable


@pytest.mark.parametrize(("overrides", "message"), [
    ({"allow_anonymous": False}, "nobody could connect"),
    ({"users": {"u": "s3cret"}}, "users.u: not a pbkdf2_sha256"),
    ({"tls_cert_file": "c.pem"}, "tls_cert_file and tls_key_file go together"),
    ({"require_client_cert": True, "tls_cert_file": "c", "tls_key_file": "k"}, "require_client_cert needs"),
    ({"tls_ca_file": "ca.pem"}, "need TLS"),
    ({"max_packet_bytes": 1000, "oversize_capture_bytes": 10}, "oversize_capture_bytes"),
])
def test_settings_say_what_is_wrong(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(**overrides)
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert({"port": 0, "allow_anonymous": True, **overrides}, MqttListenerSettings)


def test_settings_decode_from_toml_and_refuse_unknown_keys() -> None:
    encoded = hash_password("pw", iterations=FAST_HASH)
    text = f'port = 8883\nreceive_maximum = 16\n[users]\nplant = "{encoded}"\n'
    parsed = msgspec.toml.decode(text.encode(), type=MqttListenerSettings)
    assert (parsed.port, parsed.receive_maximum, parsed.users) == (8883, 16, {"plant": encoded})
    with pytest.raises(msgspec.ValidationError, match="recieve_maximum"):
        msgspec.toml.decode(b"allow_anonymous = true\nrecieve_maximum = 1\n", type=MqttListenerSettings)
    with pytest.raises(msgspec.ValidationError, match=r"\$.port"):
        msgspec.toml.decode(b"allow_anonymous = true\nport = 70000\n", type=MqttListenerSettings)


# ------------------------------------------------------------------------- the sans-I/O core on its own


def test_the_connection_core_without_sockets() -> None:
    core = ServerConnection(ConnectionLimits(receive_maximum=2))
    core.receive_data(encode_packet(ConnectPacket("c", MQTT_3_1_1), MQTT_3_1_1))
    event = core.next_event()
    assert isinstance(event, ConnectRequested) and event.client_id == "c"
    assert core.blocked and core.next_event() is None  # nothing more until authenticated
    core.accept(SessionState("c"), session_present=False)
    assert core.data_to_send() == b"\x20\x02\x00\x00"
    core.receive_data(b"".join(encode_packet(PublishPacket("t", b"%d" % i, 1, packet_id=i + 1), MQTT_3_1_1)
                               for i in range(3)))
    first, second = core.next_event(), core.next_event()
    assert isinstance(first, MessageReceived) and isinstance(second, MessageReceived)
    assert core.window_full and core.next_event() is None  # the third waits, still as bytes
    core.complete(second.ticket)
    assert core.data_to_send() == b""  # behind the first
    core.complete(first.ticket)
    assert core.data_to_send() == b"\x40\x02\x00\x01\x40\x02\x00\x02"
    third = core.next_event()
    assert isinstance(third, MessageReceived) and third.publish.payload == b"2"
