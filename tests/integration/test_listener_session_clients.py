"""Persistent sessions of the MQTT listener across restarts, with real paho-mqtt 2.x clients (MQTT 3.1.1 and 5)
and the session file on disk: a subscription comes back with session_present=1, and a QoS 2 exchange cut by
a restart after the PUBREC neither stores its message twice nor forgets the packet id.

The listener runs on the test's event loop on a fixed port, so paho's own reconnect finds the restarted one;
`FakeSink` stands in for the log (it outlives the listeners, as the log outlives a restart). A small proxy on
the same loop loses the bytes in flight one way, as a crash loses what the kernel had not sent yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from edgestream.edge.mqtt.listener import MqttListener
from edgestream.edge.mqtt.listener_settings import MqttListenerSettings
from edgestream.edge.mqtt.session_file import SessionFile
from edgestream.edge.testing import FakeSink
from tests.aio import eventually
from tests.harness.procs import free_port

T = TypeVar("T")
TIMEOUT = 20.0  # generous: two shared cores, other suites running
PROTOCOLS = {"3.1.1": MQTTProtocolVersion.MQTTv311, "5": MQTTProtocolVersion.MQTTv5}

pytestmark = pytest.mark.timeout(120)




class Sensor:
    """A paho client with a persistent session that reconnects by itself (within 0.1-0.5 s)."""

    def __init__(self, client_id: str, protocol: str) -> None:
        self.protocol = protocol
        if protocol == "5":
            self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                      protocol=PROTOCOLS[protocol])
        else:
            self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                      protocol=PROTOCOLS[protocol], clean_session=False)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # floats work: it is a sleep
        self.connacks: list[bool] = []  # session_present of every CONNACK
        self.subscribed = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self.completions: list[int] = []  # reason code of each PUBACK/PUBCOMP
        self.client.on_connect = lambda c, u, flags, rc, p: self.connacks.append(bool(flags.session_present))
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.on_publish = lambda c, u, mid, rc, p: self.completions.append(rc.value)

    def start(self, port: int) -> None:
        """Connect in the background: paho's thread connects, and reconnects after every loss."""
        props = None
        if self.protocol == "5":
            props = PahoProperties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
        self.client.connect_async("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


class LossyProxy:
    """Forwards connections to the listener's port; `drop_down`/`drop_up` lose what flows to the client / to
    the listener, counted in `dropped_down`/`dropped_up`. A refused upstream closes the client's connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.drop_down = False
        self.drop_up = False
        self.dropped_down = 0
        self.dropped_up = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        for task in (self._pipe(reader, up_writer, up=True), self._pipe(up_reader, writer, up=False)):
            self._tasks.add(asyncio.ensure_future(task))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while data := await src.read(65536):
                if self.drop_up if up else self.drop_down:
                    if up:
                        self.dropped_up += len(data)
                    else:
                        self.dropped_down += len(data)
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


Restart = Callable[[], Awaitable[MqttListener]]


@pytest.fixture
async def listener(sink: FakeSink, tmp_path: Path) -> AsyncIterator[tuple[Restart, int, str]]:
    """(restart, port, session file): `restart()` stops the running listener, if any, and starts a new one on
    the same port with a new SessionFile on the same path, as a restarted gateway would."""
    port = free_port()
    path = str(tmp_path / "listener" / "sensors.sessions")
    running: list[MqttListener] = []

    async def restart() -> MqttListener:
        if running:
            await running[-1].stop()
        settings = MqttListenerSettings(port=port, allow_anonymous=True, stop_timeout_s=5.0)
        running.append(MqttListener(settings, sink, sessions=SessionFile(path)))
        await running[-1].start()
        return running[-1]

    yield restart, port, path
    sink.release()
    if running:
        await running[-1].stop()


@pytest.fixture
def sensors() -> Iterator[Callable[[str, str], Sensor]]:
    made: list[Sensor] = []

    def make(client_id: str, protocol: str) -> Sensor:
        made.append(Sensor(client_id, protocol))
        return made[-1]

    yield make
    for sensor in made:
        sensor.close()


@pytest.fixture
async def proxy(listener: tuple[Restart, int, str]) -> AsyncIterator[LossyProxy]:
    lossy = LossyProxy(listener[1])
    await lossy.start()
    yield lossy
    await lossy.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_subscription_survives_a_restart(listener: tuple[Restart, int, str],
                                                 sensors: Callable[[str, str], Sensor], protocol: str) -> None:
    restart, port, _ = listener
    await restart()
    tail = sensors(f"tail-{protocol}", protocol)
    tail.start(port)
    await eventually(lambda: tail.connacks, "CONNACK")
    tail.client.subscribe("plant/#", qos=1)
    await eventually(tail.subscribed.is_set, "SUBACK")
    await asyncio.to_thread(tail.client.disconnect)  # a clean disconnect: the session stays, with expiry
    tail.client.loop_stop()

    second = await restart()
    assert second.statistics().sessions_restored == 1
    again = sensors(f"tail-{protocol}", protocol)  # the sensor rebooted too: a new client, same id
    again.start(port)
    await eventually(lambda: again.connacks, "CONNACK after the restart")
    assert again.connacks == [True]
    await eventually(lambda: second.statistics().subscribers == 1, "the subscription restored")
    assert second.publish_local("plant/line1/temp", b"21.5") == 1
    await eventually(lambda: again.messages, "a live message")
    assert again.messages == [("plant/line1/temp", b"21.5")]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_qos2_message_whose_pubrec_was_lost_in_a_restart_is_stored_once(
    listener: tuple[Restart, int, str], proxy: LossyProxy, sink: FakeSink,
    sensors: Callable[[str, str], Sensor], protocol: str,
) -> None:
    restart, _, _ = listener
    await restart()
    sensor = sensors(f"q2-{protocol}", protocol)
    sensor.start(proxy.port)
    await eventually(lambda: sensor.connacks, "CONNACK")
    proxy.drop_down = True  # what the listener sends from now on never arrives
    info = sensor.client.publish("plant/line1/count", b"exactly once", qos=2)
    await eventually(lambda: proxy.dropped_down >= 4, "the PUBREC sent (and lost)")
    assert [r.payload for r in sink.readings] == [b"exactly once"]

    proxy.drop_down = False
    second = await restart()  # paho reconnects, finds its session and redelivers the PUBLISH with DUP
    assert second.statistics().sessions_restored == 1
    await eventually(info.is_published, "the QoS 2 exchange completed after the restart")
    assert sensor.connacks[-1] is True
    assert second.statistics().acks_sent == 1  # the redelivery arrived and got its PUBREC ...
    assert [r.payload for r in sink.readings] == [b"exactly once"]  # ... without being stored again


async def test_a_pubrel_lost_in_a_restart_is_completed_by_the_restarted_listener(
    listener: tuple[Restart, int, str], proxy: LossyProxy, sink: FakeSink,
    sensors: Callable[[str, str], Sensor],
) -> None:
    restart, _, _ = listener
    await restart()
    sensor = sensors("q2-pubrel", "5")
    sensor.start(proxy.port)
    await eventually(lambda: sensor.connacks, "CONNACK")
    sink.hold()  # no PUBREC until the test has cut the way up
    info = sensor.client.publish("plant/line2/count", b"released late", qos=2)
    await eventually(lambda: sink.pending == 1, "the message handed to the log")
    proxy.drop_up = True  # the PUBREL paho answers with is lost
    sink.release()
    await eventually(lambda: proxy.dropped_up >= 4, "the PUBREL sent (and lost)")

    proxy.drop_up = False
    await restart()  # paho resends its PUBREL; the restarted listener still knows the id
    await eventually(info.is_published, "PUBCOMP after the restart")
    assert sensor.completions == [0]  # not 0x92 "packet identifier not found"
    assert [r.payload for r in sink.readings] == [b"released late"]


async def test_the_session_file_is_where_it_was_asked_to_be(listener: tuple[Restart, int, str],
                                                            sensors: Callable[[str, str], Sensor]) -> None:
    restart, port, path = listener
    first = await restart()
    tail = sensors("file-check", "3.1.1")
    tail.start(port)
    await eventually(lambda: tail.connacks, "CONNACK")
    tail.client.subscribe("a/b", qos=0)
    await eventually(tail.subscribed.is_set, "SUBACK")
    assert first.statistics().session_store_writes >= 2  # the CONNACK's save, then the SUBACK's
    assert b'"file-check"' in Path(path).read_bytes() and b'"a/b"' in Path(path).read_bytes()
