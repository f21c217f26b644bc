"""MQTT client mode: subscribe to a broker with a persistent session and PUBACK only what is durable.

How one message flows (DESIGN.md sections 3 and 5):

1. The broker sends PUBLISH (QoS 1) on our persistent session (MQTT 5 clean_start=0 + Session Expiry Interval,
   or 3.1.1 clean_session=0, fixed client id). Manual ack is on before CONNECT, so nothing is auto-acked.
2. `_on_message` turns it into a `Reading` and calls `sink.submit`; the message takes a ticket in the
   connection's `AckQueue` (receive order).
3. When the submission resolves (durable), or fails with `RecordRejectedError` (counted and dropped by the
   sink), the ticket settles as "ack". `SinkClosedError` settles it as "never": it stays unacked at the
   broker and comes back on the next session.
4. Once per loop turn the settled prefix is PUBACKed, in receive order (MQTT 3.1.1 section 4.6).

Backpressure: at most `max_inflight` QoS 1 messages are unacked; MQTT 5 tells the broker so (Receive Maximum),
and for 3.1.1 the source stops reading the socket when the window is full, so messages wait at the broker, not
in our memory. MQTT 5 pauses only at twice the window (QoS 0 messages, and redeliveries after a reconnect
while the old copies are still in the sink), which keeps PINGRESPs flowing while the log is blocked; a 3.1.1
connection paused longer than the keepalive is dropped by paho and re-established with backoff.

Connections fail and come back with jittered exponential backoff (`backoff.py`) on the injected clock; the
broker then redelivers every unacked message (DUP=1) and the source stores it again: at least once.

Why paho-mqtt driven from the event loop, not aiomqtt and not paho's own thread. Measured with
`tests/bench/mqtt_client_choice.py --count 50000 --runs 3`: QoS 1 drain of 50,000 queued ~124 B messages from
a local Mosquitto 2.0.11, MQTT 3.1.1 unless noted, window 1000, 2-core AMD EPYC build machine shared with
other work (msg/s is noisy there; CPU per message is steady), median of 3 runs, every message acked (0
redelivered to a verifying reconnect):

    subscriber                                 msg/s (min..max)          CPU us/msg
    paho, own thread, auto-ack (baseline)      23,810 (16,704..29,480)   34
    paho, loop_forever, manual ack in callback 36,929 (25,386..37,935)   21
    aiomqtt 2.5.1 + manual-ack workaround      11,747 (11,265..13,382)   76
    paho thread -> loop, call_soon_threadsafe  23,905 (18,354..23,933)   40
    this source, MQTT 3.1.1                    29,180 (19,885..38,668)   25
    this source, MQTT 5 (Receive Maximum)      20,016 (13,568..22,391)   39

- aiomqtt costs 3x the CPU per message of this source, has no manual-ack API (the workaround reaches into
  the private `client._client`), and its bounded queue discards messages when full.
- paho's own thread plus a hand-off into the loop costs 1.6x (thread switches, a socketpair write per
  PUBACK), even in a prototype without the Reading and the ack queue. Here paho runs in the loop as aiomqtt
  does it (add_reader, loop_misc), so every callback is on the loop thread and acks go out from one place.
- This source adds ~4 us/msg to bare paho (the Reading, the sink's future, the ack queue). MQTT 5 adds
  ~14 us/msg, all of it paho decoding PUBLISH properties. TCP_NODELAY is set on the socket: with Nagle on,
  MQTT 5 ran at 8,568 msg/s in a 20,000-message run (the broker waits for PUBACKs that Nagle holds back).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..clock import Clock, SystemClock
from ..errors import EdgeError, RecordRejectedError, SinkClosedError
from ..source import DeadLetter, Reading, Sink
from .backoff import Backoff
from .client_acks import AckQueue
from .client_session import (
    BrokerRefusedError,
    BrokerTlsError,
    IncomingMessage,
    MqttSession,
    PahoSession,
    SessionFactory,
    SubscriptionRefusedError,
)
from .client_settings import MqttClientSettings, TlsSettings, TopicFilter

__all__ = [
    "BrokerRefusedError",
    "BrokerTlsError",
    "MqttClientSettings",
    "MqttClientSource",
    "MqttClientStatistics",
    "SubscriptionRefusedError",
    "TlsSettings",
    "TopicFilter",
]

STABLE_AFTER_S = 10.0  # a connection that ends sooner counts as a failed attempt (e.g. two gateways, one id)

T = TypeVar("T")
_STOPPED: Any = object()


@dataclass(frozen=True, slots=True)
class MqttClientStatistics:
    received: int  # PUBLISH packets handed to the sink (redeliveries included)
    acked: int  # PUBACKs sent
    rejected: int  # submissions the sink refused for good (acked anyway)
    dead_letters: int
    sink_errors: int  # submissions that failed otherwise (not acked; redelivered after a reconnect)
    reconnects: int  # connections established after the first
    connect_failures: int
    connected: bool
    subscribed: bool  # the broker acknowledged every topic filter on this connection
    paused: bool  # not reading: the in-flight window is full or the sink is closing
    inflight: int  # received, not yet acked (or, for QoS 0, not yet stored)
    bytes: int  # payload bytes received
    session_present: bool  # the broker still had our session at the last CONNACK
    last_error: str


class _Connection:
    __slots__ = ("acks", "dead", "flush_scheduled", "paused", "session")

    def __init__(self, session: MqttSession) -> None:
        self.session = session
        self.acks = AckQueue()
        self.dead = False
        self.paused = False
        self.flush_scheduled = False


class MqttClientSource:
    """`edge.source.Source` for MQTT client mode. `run()` connects, reconnects and returns after `stop()`."""

    def __init__(
        self,
        name: str,
        settings: MqttClientSettings,
        sink: Sink,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self._sink = sink
        self._clock: Clock = clock or SystemClock()
        self._backoff = Backoff(settings.backoff_min_s, settings.backoff_max_s, rng=rng or random.Random())
        self._factory: SessionFactory = session_factory or PahoSession
        window = settings.max_inflight
        self._pause_at = 2 * window if settings.is_v5 else window
        self._resume_at = max(0, self._pause_at * 3 // 4 - 1)  # hysteresis: fewer pause/resume flips
        self._conn: _Connection | None = None
        self._loose = 0  # unresolved submissions outside the current AckQueue: QoS 0, and dead connections'
        self._sink_closed = False
        self._stop_fut: asyncio.Future[None] | None = None
        self._done: asyncio.Event | None = None
        self._settle_waiter: asyncio.Future[None] | None = None
        self._stopping = False
        self._received = self._acked = self._rejected = self._dead_letters = self._sink_errors = 0
        self._reconnects = self._connections = self._connect_failures = self._bytes = 0
        self._session_present = self._connected = self._subscribed = False
        self._last_error = ""

    # -- Source interface -----------------------------------------------------------------------------------

    async def run(self) -> None:
        if self._done is not None and not self._done.is_set():
            raise RuntimeError(f"source {self.name!r} is already running")
        loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self._stop_fut = loop.create_future()
        if self._stopping:
            self._stop_fut.set_result(None)
        try:
            while not self._stopping:
                await self._connection_once()
                if self._stopping:
                    break
                await self._unless_stopped(self._clock.sleep(self._backoff.next_delay()))
        finally:
            self._done.set()

    async def stop(self) -> None:
        """Stop reading, wait up to drain_timeout_s for in-flight records to settle, ack them, DISCONNECT."""
        self._stopping = True
        if self._stop_fut is not None and not self._stop_fut.done():
            self._stop_fut.set_result(None)
        if self._done is not None:
            await self._done.wait()

    def statistics(self) -> MqttClientStatistics:
        conn = self._conn
        return MqttClientStatistics(
            received=self._received, acked=self._acked, rejected=self._rejected,
            dead_letters=self._dead_letters, sink_errors=self._sink_errors, reconnects=self._reconnects,
            connect_failures=self._connect_failures, connected=self._connected, subscribed=self._subscribed,
            paused=conn is not None and conn.paused,
            inflight=self._inflight(), bytes=self._bytes, session_present=self._session_present,
            last_error=self._last_error,
        )

    # -- one connection -------------------------------------------------------------------------------------

    async def _connection_once(self) -> None:
        conn = _Connection(self._factory(self._settings, self._on_message, self._clock))
        self._conn = conn
        session = conn.session
        up_since: float | None = None
        try:
            try:
                result = await self._unless_stopped(session.connect())
                if result is _STOPPED:
                    return
                up_since = self._clock.monotonic()
                self._reconnects += self._connections > 0
                self._connections += 1
                self._session_present = result.session_present
                self._connected = True
                if self._inflight() >= self._pause_at or self._sink_closed:
                    self._pause(conn)
                if await self._unless_stopped(session.subscribe(self._settings.topics)) is _STOPPED:
                    return
                self._subscribed = True
            except EdgeError as exc:
                self._connect_failures += 1
                self._last_error = str(exc)
                if not exc.retriable:
                    raise
                return
            await self._unless_stopped(asyncio.shield(session.closed))
            if self._stopping and not session.closed.done():
                await self._drain(conn)
                await session.disconnect()
            elif session.closed.done() and session.closed.result() is not None:
                self._last_error = str(session.closed.result())
        finally:
            self._connected = self._subscribed = False
            session.abort()  # no-op when already closed
            self._retire(conn)
            if up_since is not None and self._clock.monotonic() - up_since >= STABLE_AFTER_S:
                self._backoff.reset()

    async def _unless_stopped(self, aw: Awaitable[T]) -> T:
        """Await `aw` unless stop() comes first; then cancel it and return _STOPPED."""
        task = asyncio.ensure_future(aw)
        assert self._stop_fut is not None
        try:
            waiting: list[asyncio.Future[Any]] = [task, self._stop_fut]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, EdgeError):
            pass
        return _STOPPED  # type: ignore[no-any-return]

    async def _drain(self, conn: _Connection) -> None:
        self._pause(conn)
        timer = asyncio.ensure_future(self._clock.sleep(self._settings.drain_timeout_s))
        try:
            while (conn.acks.pending or self._loose) and not timer.done() and not conn.session.closed.done():
                self._settle_waiter = asyncio.get_running_loop().create_future()
                waiting: list[asyncio.Future[Any]] = [self._settle_waiter, timer, conn.session.closed]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            self._settle_waiter = None
        self._flush(conn)

    def _retire(self, conn: _Connection) -> None:
        if conn.dead:
            return
        conn.dead = True
        self._loose += conn.acks.pending  # their submissions may still resolve; nothing will ack them
        if self._conn is conn:
            self._conn = None

    # -- messages, settlement, acks -------------------------------------------------------------------------

    def _on_message(self, msg: IncomingMessage) -> None:
        conn = self._conn
        if conn is None or conn.dead:
            return  # not acked: the broker redelivers it
        self._received += 1
        self._bytes += len(msg.payload)
        ticket = conn.acks.receive(msg.mid, msg.qos) if msg.qos else -1
        if ticket < 0:
            self._loose += 1
        fut: asyncio.Future[None]
        try:
            if msg.topic is None:
                self._dead_letters += 1
                aw = self._sink.dead_letter(DeadLetter(
                    source=self.name, payload=msg.payload, reason="malformed_packet",
                    timestamp_ms=self._clock.wall_ms(), detail="topic is not valid UTF-8",
                    fields={"client_id": self._settings.client_id}))
            else:
                aw = self._sink.submit(self._reading(msg.topic, msg))
            fut = asyncio.ensure_future(aw)
        except Exception as exc:  # a sink that raises instead of returning a failed awaitable
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(exc)
        if fut.done():
            self._settled(conn, ticket, fut)
        else:
            fut.add_done_callback(functools.partial(self._settled, conn, ticket))
        if self._inflight() >= self._pause_at:
            self._pause(conn)

    def _reading(self, topic: str, msg: IncomingMessage) -> Reading:
        headers: tuple[tuple[str, bytes], ...] = (("mqtt.topic", topic.encode()),)
        if msg.user_properties:
            headers += tuple((k, v.encode()) for k, v in msg.user_properties)
        return Reading(
            source=self.name,
            payload=bytes(msg.payload),
            timestamp_ms=self._clock.wall_ms(),
            fields={"topic": topic, "client_id": self._settings.client_id},
            headers=headers,
        )

    def _settled(self, conn: _Connection, ticket: int, fut: asyncio.Future[None]) -> None:
        exc: BaseException | None = SinkClosedError("submission cancelled") if fut.cancelled() \
            else fut.exception()
        ack = exc is None
        if isinstance(exc, RecordRejectedError):
            self._rejected += 1
            ack = True
        elif isinstance(exc, SinkClosedError):
            self._sink_closed = True  # nothing more can be stored: stop reading until stop()
            if self._conn is not None:
                self._pause(self._conn)
        elif exc is not None:
            self._sink_errors += 1
            self._last_error = f"sink failed: {exc!r}"
        if ticket < 0 or conn.dead:
            self._loose -= 1
        else:
            conn.acks.settle(ticket, ack)
            if not conn.flush_scheduled:
                conn.flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush, conn)
            if exc is not None and not ack and not self._sink_closed:
                # The queue is blocked behind this message for good: start a new session so the broker
                # redelivers it (and everything after it) instead of waiting forever.
                asyncio.get_running_loop().call_soon(conn.session.abort)
        waiter = self._settle_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._maybe_resume()

    def _flush(self, conn: _Connection) -> None:
        """The one place that sends PUBACKs: the settled prefix of this connection, in receive order."""
        conn.flush_scheduled = False
        if conn.dead or conn.session.closed.done():
            return
        ready = conn.acks.ready()
        for mid, qos in ready:
            conn.session.ack(mid, qos)
        self._acked += len(ready)
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        conn = self._conn
        if conn is None or not conn.paused:
            return
        if self._sink_closed:
            return  # stays paused until stop(): nothing more can be stored
        if not self._stopping and self._inflight() <= self._resume_at:
            conn.paused = False
            conn.session.resume_reading()

    def _pause(self, conn: _Connection) -> None:
        if not conn.paused:
            conn.paused = True
            conn.session.pause_reading()

    def _inflight(self) -> int:
        conn = self._conn
        return self._loose + (len(conn.acks) if conn is not None else 0)
