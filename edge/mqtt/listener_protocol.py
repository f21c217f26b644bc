"""The asyncio side of one client connection: socket bytes into a `ServerConnection`, its events into the sink.

One `ListenerProtocol` per TCP/TLS connection, driven by asyncio's callbacks: no task per connection. Reading
stops (`pause_reading`) whenever the connection cannot make progress: its window of unresolved submissions is
full, it is being authenticated, or the client is not reading what we write. Acks produced by many
submissions resolving at once (one group commit) leave in one write.

Output waits for the session: when the client's stored session changed (see `listener_sessions.py`),
everything the connection would send is held, in order, until the listener's `SessionKeeper` has saved that
change and calls `release()`; a close asked for meanwhile happens after the release.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

from ..errors import RecordRejectedError, SinkClosedError
from ..source import DeadLetter, Reading
from . import reasons
from .connection import ServerConnection, State
from .events import ConnectionClosed, ConnectRequested, DeadLetterRequested, MessageReceived, SubscriptionsChanged
from .packets import PublishPacket, Will
from .properties import EMPTY, Properties

if TYPE_CHECKING:
    from .listener import MqttListener

log = logging.getLogger(__name__)

# What a RecordRejectedError's reason becomes in an MQTT 5 PUBACK/PUBREC (a code >= 0x80 ends the exchange:
# the client will not redeliver, which is the point of acknowledging a rejected record).
_REJECT_CODES = {
    "full": reasons.QUOTA_EXCEEDED,
    "quota": reasons.QUOTA_EXCEEDED,
    "too_large": reasons.QUOTA_EXCEEDED,
    "payload_format_invalid": reasons.PAYLOAD_FORMAT_INVALID,
    "decode": reasons.PAYLOAD_FORMAT_INVALID,
    "not_authorized": reasons.NOT_AUTHORIZED,
    "topic_name_invalid": reasons.TOPIC_NAME_INVALID,
    "no_route": reasons.TOPIC_NAME_INVALID,
}


def reject_code(reason: str) -> int:
    return _REJECT_CODES.get(reason, reasons.IMPLEMENTATION_SPECIFIC_ERROR)


class ListenerProtocol(asyncio.Protocol):
    def __init__(self, listener: MqttListener) -> None:
        self.listener = listener
        self.core = ServerConnection(listener.limits)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.certificate = False  # the TLS layer verified a client certificate
        now = listener.clock.monotonic()
        self.opened_at = now
        self.last_rx = now
        self.closed_at: float | None = None
        self.reading = True
        self._writing_paused = False
        self._progress_scheduled = False
        self._topic_cache: tuple[str, Mapping[str, str], tuple[tuple[str, bytes], ...]] | None = None
        self.hold_until = 0  # the keeper's generation this connection's output waits for
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._close_after_release = False
        self._ids_version = 0  # of the session's QoS 2 ids when last seen

    # ----------------------------------------------------------------------------------- asyncio calls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = str(transport.get_extra_info("peername"))
        self.certificate = bool(transport.get_extra_info("peercert"))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # dead peers of keepalive-0 clients still get noticed
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.listener.connection_made(self)

    def data_received(self, data: bytes) -> None:
        self.listener.counters.bytes_in += len(data)
        self.last_rx = self.listener.clock.monotonic()
        self.core.receive_data(data)
        self.pump()

    def eof_received(self) -> bool:
        return False  # a half-closed MQTT connection is over

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connection_lost(self)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.pump()

    # --------------------------------------------------------------------------------------- the engine

    def pump(self) -> None:
        """Handle every event the buffered bytes yield, send what that produced, then (un)pause reading."""
        core = self.core
        while (event := core.next_event()) is not None:
            kind = type(event)
            if kind is MessageReceived:
                self._submit(cast(MessageReceived, event))
            elif kind is DeadLetterRequested:
                self._dead_letter(cast(DeadLetterRequested, event))
            elif kind is ConnectRequested:
                self.listener.authenticate(self, cast(ConnectRequested, event))
            elif kind is SubscriptionsChanged:
                self.listener.subscriptions_changed(self)
            else:
                self._closed_by_protocol(cast(ConnectionClosed, event))
        self.flush()
        self._update_reading()

    def flush(self) -> None:
        session = self.core.session
        if session is not None and session.awaiting_release.version != self._ids_version:
            # a QoS 2 id was added (its record is durable) or released (PUBREL): saved before PUBREC/PUBCOMP
            self._ids_version = session.awaiting_release.version
            self.listener.session_changed(self)
        data = self.core.data_to_send()
        if not data:
            return
        if self._held or self.hold_until > self.listener.keeper.durable:
            self._held.append(data)
            self._held_bytes += len(data)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def session_attached(self) -> None:
        """The listener gave the connection its session (CONNECT accepted)."""
        session = self.core.session
        self._ids_version = session.awaiting_release.version if session is not None else 0

    def release(self) -> None:
        """The session changes this connection's output waited for are saved: send it (and close if asked)."""
        data = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if data:
            transport.write(data)
        if self._close_after_release:
            transport.close()

    @property
    def buffered_out(self) -> int:
        """Bytes written but not yet sent, and held for a save."""
        transport = self.transport
        return self._held_bytes + (transport.get_write_buffer_size() if transport is not None else 0)

    def send_live(self, data: bytes) -> None:
        """A live-tail message: behind any held output, so the client sees things in order."""
        if self._held or self.hold_until > self.listener.keeper.durable:
            self._held.append(data)
            self._held_bytes += len(data)
        elif self.transport is not None:
            self.transport.write(data)

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        want = not self.core.blocked and not self._writing_paused
        if want != self.reading:
            self.reading = want
            if want:
                self.last_rx = self.listener.clock.monotonic()  # our pause is no sign of a dead client
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _schedule_progress(self) -> None:
        # Completions of one group commit arrive as many callbacks in one loop pass: coalesce their acks.
        if not self._progress_scheduled:
            self._progress_scheduled = True
            asyncio.get_running_loop().call_soon(self._progress)

    def _progress(self) -> None:
        self._progress_scheduled = False
        self.pump()
        self.listener.progressed()

    # ----------------------------------------------------------------------------------- to the sink

    def _submit(self, event: MessageReceived) -> None:
        counters = self.listener.counters
        publish = event.publish
        counters.publishes[publish.qos] += 1
        self._send_to_sink(self.listener.sink.submit, self.reading_for(publish), event.ticket)

    def _send_to_sink(self, method: Any, item: Reading | DeadLetter, ticket: int | None) -> None:
        try:
            future = asyncio.ensure_future(cast(Awaitable[None], method(item)))
        except Exception as exc:  # a sink that raises instead of failing its awaitable
            self._settle(ticket, exc)
            return
        future.add_done_callback(partial(self._submitted, ticket))

    def _submitted(self, ticket: int | None, future: asyncio.Future[None]) -> None:
        exc = SinkClosedError("submission cancelled") if future.cancelled() else future.exception()
        self._settle(ticket, exc)

    def _settle(self, ticket: int | None, exc: BaseException | None) -> None:
        counters = self.listener.counters
        if exc is None:
            if ticket is not None:
                self.core.complete(ticket)
        elif isinstance(exc, RecordRejectedError):
            counters.count_rejected(exc.reason)
            if ticket is not None:
                self.core.complete(ticket, reject_code(exc.reason), str(exc))
        elif isinstance(exc, SinkClosedError):
            # Not stored, so not acknowledged: the client redelivers once the gateway is back.
            counters.sink_closed += 1
            self.close(reasons.SERVER_SHUTTING_DOWN, "sink closed")
        else:
            counters.sink_errors += 1
            log.error("MQTT listener: the sink failed a submission from %s; closing it unacknowledged",
                      self.peer, exc_info=exc)
            self.close(reasons.UNSPECIFIED_ERROR, "sink error")
        self._schedule_progress()

    def reading_for(self, publish: PublishPacket) -> Reading:
        cache = self._topic_cache
        if cache is None or cache[0] != publish.topic:
            # Sensors publish to the same topic over and over: build its fields and header once.
            fields = MappingProxyType({"topic": publish.topic, "client_id": self.core.client_id})
            cache = self._topic_cache = (publish.topic, fields, (("mqtt.topic", publish.topic.encode()),))
        headers = cache[2]
        if publish.properties is not EMPTY:
            headers = headers + _property_headers(publish.properties)
        if publish.retain:
            headers = (*headers, ("mqtt.retain", b"1"))
        listener = self.listener
        return Reading(listener.name, publish.payload, listener.clock.wall_ms(), cache[1], headers)

    def _dead_letter(self, event: DeadLetterRequested) -> None:
        listener = self.listener
        fields = {"client_id": self.core.client_id}
        if event.topic is not None:
            fields["topic"] = event.topic
        letter = DeadLetter(listener.name, event.payload, event.reason, listener.clock.wall_ms(), event.detail,
                            fields)
        listener.counters.dead_letters += 1
        log.warning("MQTT listener: dead letter from %s (%s): %s", self.peer, self.core.client_id, event.detail)
        self._send_to_sink(listener.sink.dead_letter, letter, event.ticket)

    def publish_will(self, will: Will) -> None:
        """Store the will of a client whose connection broke, like any message it sent."""
        listener = self.listener
        headers: tuple[tuple[str, bytes], ...] = (("mqtt.topic", will.topic.encode()), ("mqtt.will", b"1"))
        if will.properties is not EMPTY:
            headers = headers + _property_headers(will.properties)
        fields = {"topic": will.topic, "client_id": self.core.client_id}
        reading = Reading(listener.name, will.payload, listener.clock.wall_ms(), fields, headers)
        listener.counters.wills_published += 1
        self._send_to_sink(listener.sink.submit, reading, None)

    # ----------------------------------------------------------------------------------------- closing

    def _closed_by_protocol(self, event: ConnectionClosed) -> None:
        counters = self.listener.counters
        if event.violation:
            counters.count_malformed(event.reason)
            log.warning("MQTT listener: closing %s (%s): %s: %s", self.peer, self.core.client_id or "-",
                        event.reason, event.detail)
        self._close_transport()

    def close(self, reason_code: int, detail: str = "", *, keep_will: bool = False) -> None:
        """Close from the server side (MQTT 5 clients are told `reason_code`)."""
        if self.core.state is not State.CLOSED:
            self.core.close(reason_code, keep_will=keep_will, detail=detail)
        self._close_transport()

    def _close_transport(self) -> None:
        self.flush()
        if self.closed_at is None:
            self.closed_at = self.listener.clock.monotonic()
        if self._held:
            self._close_after_release = True  # the last acks (and the DISCONNECT) wait for their save
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # sends what is buffered (the DISCONNECT), then closes

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def check_timers(self, now: float, connect_timeout_s: float, close_grace_s: float) -> None:
        state = self.core.state
        counters = self.listener.counters
        if state is State.CLOSED:
            if self.closed_at is not None and now - self.closed_at > close_grace_s:
                self.abort()  # a client that does not read even its DISCONNECT
        elif state is State.AWAIT_CONNECT:
            if now - self.opened_at > connect_timeout_s:
                counters.connect_timeouts += 1
                self.close(reasons.UNSPECIFIED_ERROR)
        elif state is State.CONNECTED and self.reading and self._keepalive_expired(now):
            counters.keepalive_timeouts += 1
            self.close(reasons.KEEP_ALIVE_TIMEOUT, "keep alive timeout", keep_will=True)

    def _keepalive_expired(self, now: float) -> bool:
        keepalive = self.core.keepalive_s
        return bool(keepalive) and now - self.last_rx > 1.5 * keepalive  # MQTT: 1.5 times the keep alive


def _property_headers(props: Properties) -> tuple[tuple[str, bytes], ...]:
    headers = [(key, value.encode()) for key, value in props.user_properties]
    if props.content_type is not None:
        headers.append(("mqtt.content_type", props.content_type.encode()))
    return tuple(headers)
