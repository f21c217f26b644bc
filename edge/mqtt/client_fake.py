"""A scripted `MqttSession` for unit tests of the client source: no broker, no socket, no time.

`FakeSessions` is the session factory and plays the broker's side of the persistent session: it records every
session the source opens, can make the next connects fail, and remembers QoS 1 messages that were delivered
and not acked; a new session gets them again (DUP set) right after connecting, as a broker does. A test plays
the broker through the session: `deliver()` a PUBLISH, look at `acks`, `drop()` the connection. While the
source has paused reading, delivered messages wait in `buffered`, as they would in the kernel's socket
buffer, and reach the source when it resumes. `tests/integration/test_mqtt_client_session_contract.py` runs
the same checks against this fake and against paho with a real Mosquitto.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

from ..clock import Clock
from ..errors import SourceUnavailableError
from .client_session import ConnectResult, IncomingMessage
from .client_settings import MqttClientSettings, TopicFilter


class FakeMqttSession:
    def __init__(self, factory: FakeSessions, settings: MqttClientSettings,
                 handler: Callable[[IncomingMessage], None]) -> None:
        self._factory = factory
        self.settings = settings
        self._handler = handler
        self.closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.connected = False
        self.paused = False
        self.subscriptions: list[TopicFilter] = []
        self.acks: list[tuple[int, int]] = []
        self.buffered: deque[IncomingMessage] = deque()
        self.disconnected_cleanly = False
        self.aborted = False
        self._next_mid = max(factory.unacked, default=0) % 65535 + 1

    async def connect(self) -> ConnectResult:
        await asyncio.sleep(0)
        if self._factory.connect_errors:
            exc = self._factory.connect_errors.popleft()
            self.closed.set_result(exc)
            raise exc
        self.connected = True
        present = self._factory.session_present or self._factory.connections > 0
        self._factory.connections += 1
        asyncio.get_running_loop().call_soon(self._redeliver)
        return ConnectResult(session_present=present)

    def _redeliver(self) -> None:
        for msg in list(self._factory.unacked.values()):
            self.deliver(msg.topic, msg.payload, qos=msg.qos, mid=msg.mid, dup=True,
                         user_properties=msg.user_properties)

    async def subscribe(self, topics: Sequence[TopicFilter]) -> list[int]:
        await asyncio.sleep(0)
        self.subscriptions.extend(topics)
        return [t.qos for t in topics]

    def deliver(self, topic: str | None, payload: bytes, *, qos: int = 1, mid: int | None = None,
                user_properties: tuple[tuple[str, str], ...] = (), dup: bool = False) -> int:
        """The broker sends a PUBLISH; returns its packet id."""
        if mid is None:
            mid, self._next_mid = self._next_mid, self._next_mid % 65535 + 1
        msg = IncomingMessage(topic, payload, qos, mid, dup=dup, user_properties=user_properties)
        if qos:
            self._factory.unacked[mid] = msg
        if self.paused or self.buffered:
            self.buffered.append(msg)
        elif not self.closed.done():
            self._handler(msg)
        return mid

    def ack(self, mid: int, qos: int) -> None:
        if self.closed.done():
            raise AssertionError(f"ack({mid}) on a closed session")
        self.acks.append((mid, qos))
        self._factory.unacked.pop(mid, None)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        while self.buffered and not self.paused and not self.closed.done():
            self._handler(self.buffered.popleft())

    def drop(self, detail: str = "connection lost") -> None:
        """The network or the broker goes away."""
        if not self.closed.done():
            self.closed.set_result(SourceUnavailableError("fake broker", detail))

    async def disconnect(self) -> None:
        self.disconnected_cleanly = True
        if not self.closed.done():
            self.closed.set_result(None)

    def abort(self) -> None:
        if not self.closed.done():
            self.aborted = True
            self.closed.set_result(None)


class FakeSessions:
    """Session factory for `MqttClientSource(session_factory=...)`."""

    def __init__(self) -> None:
        self.sessions: list[FakeMqttSession] = []
        self.connect_errors: deque[BaseException] = deque()
        self.session_present = False  # what the first CONNACK says; later ones say True
        self.connections = 0
        self.unacked: dict[int, IncomingMessage] = {}  # the broker's side: delivered QoS 1, not acked yet

    def __call__(self, settings: MqttClientSettings, handler: Callable[[IncomingMessage], None],
                 clock: Clock) -> FakeMqttSession:
        session = FakeMqttSession(self, settings, handler)
        self.sessions.append(session)
        return session

    @property
    def current(self) -> FakeMqttSession:
        return self.sessions[-1]

    def fail_next_connect(self, exc: BaseException) -> None:
        self.connect_errors.append(exc)

    async def wait_connected(self, count: int = 1) -> FakeMqttSession:
        """Yield to the loop until `count` sessions have connected (and subscribed); returns the last one."""
        for _ in range(10_000):
            connected = [s for s in self.sessions if s.connected and s.subscriptions]
            if len(connected) >= count:
                return connected[count - 1]
            await asyncio.sleep(0)
        raise AssertionError(f"only {len(self.sessions)} sessions opened, wanted {count} connected")
