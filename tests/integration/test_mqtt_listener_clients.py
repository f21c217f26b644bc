"""The MQTT listener against real clients: paho-mqtt 2.x (MQTT 3.1.1 and 5, QoS 0 and 1, TLS with a
throwaway CA, passwords, client certificates) and mosquitto_pub / mosquitto_sub (Debian mosquitto-clients),
plus malformed bytes from a raw socket while real clients keep publishing.

The listener runs on the test's event loop; paho runs its network thread (`loop_start`) and its blocking
calls go through `asyncio.to_thread`, so the loop keeps serving. Waiting is on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from edgestream.edge.mqtt.auth import hash_password
from edgestream.edge.mqtt.listener import MqttListener
from edgestream.edge.mqtt.listener_settings import MqttListenerSettings
from edgestream.edge.testing import FakeSink
from tests.aio import eventually
from tests.harness.mosquitto import TlsFiles, make_test_pki

T = TypeVar("T")
TIMEOUT = 20.0  # generous: two shared cores, other suites running
PASSWORD = "s3cret-sensor-pw"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
PROTOCOLS = {"3.1.1": MQTTProtocolVersion.MQTTv311, "5": MQTTProtocolVersion.MQTTv5}

pytestmark = pytest.mark.timeout(120)




@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"), client_cn="sensor-7")


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


ListenerFactory = Callable[..., Awaitable[tuple[MqttListener, int]]]


@pytest.fixture
async def listener_factory(sink: FakeSink) -> AsyncIterator[ListenerFactory]:
    listeners: list[MqttListener] = []

    async def make(**overrides: Any) -> tuple[MqttListener, int]:
        base: dict[str, Any] = {"port": 0, "allow_anonymous": True, "stop_timeout_s": 2.0}
        base.update(overrides)
        listener = MqttListener(MqttListenerSettings(**base), sink)
        listeners.append(listener)
        return listener, await listener.start()

    yield make
    sink.release()
    for listener in listeners:
        await listener.stop()


class Paho:
    """A paho client on its own network thread; blocking calls are meant for `asyncio.to_thread`."""

    def __init__(self, client_id: str, protocol: str, *, tls: TlsFiles | None = None, client_cert: bool = False,
                 username: str | None = None, password: str | None = None, inflight: int = 20) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=PROTOCOLS[protocol])
        self.client.max_inflight_messages_set(inflight)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca),
                                certfile=str(tls.client_cert) if client_cert else None,
                                keyfile=str(tls.client_key) if client_cert else None)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.answered = threading.Event()
        self.subscribed = threading.Event()
        self.reason_code: Any = None
        self.messages: list[paho.MQTTMessage] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.answered.set()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = lambda client, userdata, message: self.messages.append(message)

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason_code: Any,
                    properties: object) -> None:
        self.reason_code = reason_code
        self.answered.set()

    def connect(self, port: int) -> Any:
        """Connect (TCP, TLS, CONNECT) and wait for the CONNACK; returns its reason code, or raises
        ConnectionError if the connection ended without one."""
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self.answered.wait(TIMEOUT):
            raise AssertionError("neither a CONNACK nor a disconnect")
        if self.reason_code is None:
            raise ConnectionError("closed before CONNACK")
        return self.reason_code

    def publish_all(self, topic: str, payloads: list[bytes], qos: int,
                    properties: PahoProperties | None = None) -> list[paho.MQTTMessageInfo]:
        infos = [self.client.publish(topic, p, qos=qos, properties=properties) for p in payloads]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
        return infos

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def paho_clients() -> Iterator[Callable[..., Paho]]:
    made: list[Paho] = []

    def make(*args: Any, **kwargs: Any) -> Paho:
        made.append(Paho(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


# ------------------------------------------------------------------------------------------------- paho


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@pytest.mark.parametrize("qos", [0, 1])
async def test_paho_publishes_are_stored_in_order(listener_factory: ListenerFactory, sink: FakeSink,
                                                  paho_clients: Callable[..., Paho], protocol: str,
                                                  qos: int) -> None:
    listener, port = await listener_factory()
    client = paho_clients(f"paho-{protocol}-{qos}", protocol)
    rc = await asyncio.to_thread(client.connect, port)
    assert rc == 0
    payloads = [b'{"n":%d}' % i for i in range(300)]
    infos = await asyncio.to_thread(client.publish_all, "plant/line1/temp", payloads, qos)
    assert all(info.is_published() for info in infos)
    await eventually(lambda: len(sink.readings) == len(payloads), "every message stored")
    assert [r.payload for r in sink.readings] == payloads
    assert {(r.fields["topic"], r.fields["client_id"]) for r in sink.readings} == {
        ("plant/line1/temp", f"paho-{protocol}-{qos}")
    }
    stats = listener.statistics()
    assert stats.publishes_received[qos] == len(payloads)
    assert stats.acks_sent == (len(payloads) if qos else 0)


async def test_paho_waits_for_the_log_before_its_publish_completes(
    listener_factory: ListenerFactory, sink: FakeSink, paho_clients: Callable[..., Paho]
) -> None:
    _, port = await listener_factory()
    client = paho_clients("patient", "5")
    await asyncio.to_thread(client.connect, port)
    sink.hold()
    info = client.client.publish("t", b"durable?", qos=1)
    await eventually(lambda: sink.pending == 1, "the record handed to the sink")
    # a SUBSCRIBE sent after the PUBLISH: once paho has its SUBACK, it has seen anything sent before it
    client.client.subscribe("sync", qos=0)
    await eventually(client.subscribed.is_set, "SUBACK")
    assert not info.is_published()
    sink.release()
    await eventually(info.is_published, "PUBACK after the release")


async def test_paho_mqtt5_user_properties_become_headers(
    listener_factory: ListenerFactory, sink: FakeSink, paho_clients: Callable[..., Paho]
) -> None:
    _, port = await listener_factory()
    client = paho_clients("props", "5")
    await asyncio.to_thread(client.connect, port)
    props = PahoProperties(PacketTypes.PUBLISH)
    props.UserProperty = [("site", "b7"), ("unit", "degC")]
    await asyncio.to_thread(client.publish_all, "plant/a", [b"21.5"], 1, props)
    await eventually(lambda: sink.readings, "stored")
    assert sink.readings[0].headers == (("mqtt.topic", b"plant/a"), ("site", b"b7"), ("unit", b"degC"))


async def test_paho_live_tail_subscriber(listener_factory: ListenerFactory,
                                         paho_clients: Callable[..., Paho]) -> None:
    listener, port = await listener_factory()
    tail = paho_clients("tail", "5")
    await asyncio.to_thread(tail.connect, port)
    tail.client.subscribe("plant/+/temp", qos=1)
    await eventually(lambda: listener.statistics().subscribers == 1, "subscribed")
    for i in range(5):
        listener.publish_local(f"plant/l{i}/temp", b"%d" % i)
    listener.publish_local("plant/l1/pressure", b"no")
    await eventually(lambda: len(tail.messages) == 5, "5 live messages")
    assert [(m.topic, m.payload, m.qos) for m in tail.messages] == [
        (f"plant/l{i}/temp", b"%d" % i, 0) for i in range(5)
    ]


# ------------------------------------------------------------------------------------------ TLS and auth


async def test_paho_over_tls_with_a_password(listener_factory: ListenerFactory, sink: FakeSink,
                                             paho_clients: Callable[..., Paho], pki: TlsFiles) -> None:
    listener, port = await listener_factory(
        allow_anonymous=False, users={"sensor": hash_password(PASSWORD, iterations=10_000)},
        tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key),
    )
    for protocol in ("3.1.1", "5"):
        good = paho_clients(f"tls-{protocol}", protocol, tls=pki, username="sensor", password=PASSWORD)
        assert await asyncio.to_thread(good.connect, port) == 0
        await asyncio.to_thread(good.publish_all, "secure/t", [protocol.encode()], 1)
        bad = paho_clients(f"tls-bad-{protocol}", protocol, tls=pki, username="sensor", password="nope")
        rc = await asyncio.to_thread(bad.connect, port)
        assert rc.is_failure and rc.value in (4, 0x86)  # bad user name or password, in 3.1.1 and 5
    assert [r.payload for r in sink.readings] == [b"3.1.1", b"5"]
    assert listener.statistics().auth_failures == 2


async def test_plain_mqtt_on_a_tls_port_gets_nowhere(listener_factory: ListenerFactory,
                                                    paho_clients: Callable[..., Paho], pki: TlsFiles) -> None:
    listener, port = await listener_factory(tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key),
                                            connect_timeout_s=2)
    plain = paho_clients("plain", "3.1.1")
    with pytest.raises(ConnectionError):
        await asyncio.to_thread(plain.connect, port)
    assert listener.statistics().publishes_received == {0: 0, 1: 0, 2: 0}


async def test_client_certificates_authenticate_and_no_certificate_is_refused(
    listener_factory: ListenerFactory, sink: FakeSink, paho_clients: Callable[..., Paho], pki: TlsFiles
) -> None:
    _, port = await listener_factory(
        allow_anonymous=False, tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key),
        tls_ca_file=str(pki.ca), require_client_cert=True,
    )
    with_cert = paho_clients("sensor-7", "5", tls=pki, client_cert=True)
    assert await asyncio.to_thread(with_cert.connect, port) == 0
    await asyncio.to_thread(with_cert.publish_all, "certified", [b"ok"], 1)
    without = paho_clients("anon", "5", tls=pki, client_cert=False)
    with pytest.raises((ssl.SSLError, ConnectionError)):  # TLS 1.3 reports the refusal after the handshake
        await asyncio.to_thread(without.connect, port)
    assert [r.payload for r in sink.readings] == [b"ok"]


# ------------------------------------------------------------------------------------- mosquitto clients


async def _run(*argv: str, stdin: bytes | None = None, timeout: float = TIMEOUT) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
async def test_mosquitto_pub_lines_at_qos1(listener_factory: ListenerFactory, sink: FakeSink,
                                           version: str) -> None:
    listener, port = await listener_factory()
    lines = [b'{"seq":%d,"t":21.5}' % i for i in range(500)]
    proc = await asyncio.create_subprocess_exec(
        MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "-V", version, "-q", "1", "-i", f"mp-{version}",
        "-t", "plant/press/4", "-l", stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"\n".join(lines) + b"\n")
    # mosquitto_pub -l disconnects at end of input even with messages still queued (2.0.11 loses the tail
    # that way), so input stays open until every line is acknowledged
    await eventually(lambda: listener.statistics().acks_sent == len(lines), "every line acknowledged")
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    assert [r.payload for r in sink.readings] == lines


async def test_mosquitto_pub_over_tls_with_a_password_and_a_user_property(
    listener_factory: ListenerFactory, sink: FakeSink, pki: TlsFiles
) -> None:
    _, port = await listener_factory(
        allow_anonymous=False, users={"sensor": hash_password(PASSWORD, iterations=10_000)},
        tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key),
    )
    base = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port), "--cafile", str(pki.ca), "-V", "mqttv5",
            "-q", "1", "-t", "secure/x", "-u", "sensor"]
    rc, _, err = await _run(*base, "-P", PASSWORD, "-m", "hello", "-D", "publish", "user-property", "k", "v")
    assert rc == 0, err
    rc, _, err = await _run(*base, "-P", "wrong", "-m", "nope")
    assert rc != 0
    assert [(r.payload, r.headers) for r in sink.readings] == [(b"hello", (("mqtt.topic", b"secure/x"),
                                                                             ("k", b"v")))]


async def test_mosquitto_sub_tails_what_the_gateway_accepted(listener_factory: ListenerFactory) -> None:
    listener, port = await listener_factory()
    sub = asyncio.ensure_future(_run(MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5",
                                     "-t", "plant/#", "-C", "3", "-v", "-i", "mosquitto-tail"))
    await eventually(lambda: listener.statistics().subscribers == 1, "mosquitto_sub subscribed")
    listener.publish_local("other/x", b"skip")
    for i in range(3):
        listener.publish_local(f"plant/{i}", b"v%d" % i)
    rc, out, err = await sub
    assert rc == 0, err
    assert out.splitlines() == [b"plant/0 v0", b"plant/1 v1", b"plant/2 v2"]


# ---------------------------------------------------------------------------------- hostile neighbours


@pytest.mark.parametrize("garbage", [
    pytest.param(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c\x36\x05\x00\x01a\x00\x01", id="qos3-publish"),
    pytest.param(b"\xff" * 64, id="ff-bytes"),
    pytest.param(b"\x10\xff\xff\xff\xff\xff", id="5-byte-length"),
    pytest.param(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c\x30" + b"\xff\xff\xff\x7f", id="256MB-announced"),
])
async def test_malformed_bytes_do_not_disturb_real_clients(
    listener_factory: ListenerFactory, sink: FakeSink, paho_clients: Callable[..., Paho], garbage: bytes
) -> None:
    listener, port = await listener_factory(max_packet_bytes=4096, oversize_capture_bytes=0)
    client = paho_clients("steady", "3.1.1")
    await asyncio.to_thread(client.connect, port)
    publishing = asyncio.ensure_future(
        asyncio.to_thread(client.publish_all, "steady/t", [b"%d" % i for i in range(400)], 1)
    )
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(garbage)
        await writer.drain()
        # closed on us, after a CONNACK where the CONNECT was good
        assert await asyncio.wait_for(reader.read(), TIMEOUT) in (b"", b"\x20\x02\x00\x00")
        writer.close()
    infos = await publishing
    assert all(info.is_published() for info in infos)
    await eventually(lambda: len(sink.readings) == 400, "the steady client's messages")
    stats = listener.statistics()
    assert sum(stats.malformed.values()) == 5
    assert stats.connections_current == 1
