"""A serial line as a source: frames in, `Reading`s out, replies back once the record is durable.

The flow for one connection:

1. The port delivers bytes (`data_received`); the framing turns them into frames and framing errors, in order.
2. Each frame becomes a `Reading` (fields {"port": ...}) and goes to `sink.submit`; each error goes to
   `sink.dead_letter` with its reason. Both awaitables join one FIFO of in-flight submissions.
3. The ack loop awaits the FIFO's head, sends that item's reply (`reply` for frames, `nak` for errors), pops
   it, and moves on: replies leave in stream order and only after durability, whatever order the sink resolves
   in.
4. When the FIFO holds `window` items the transport stops reading; the device's bytes wait in the kernel's tty
   buffer and then in the device (flow control or its own buffer). Reading resumes at half the window. One
   read (at most 1 KiB) can overshoot the window by the frames it holds, so memory stays bounded.
5. When the port fails (adapter unplugged: reads fail, the path vanishes) the framing is flushed (a partial
   frame becomes a "truncated" dead letter), and the source reopens the port with jittered exponential backoff
   on the injected clock. Frames already submitted still get their replies if the port is back by then;
   otherwise the reply is dropped and counted, because the device has reset and would not know what it
   acknowledges.

A sink that rejects a reading for good (`RecordRejectedError`) has counted it: the device still gets its reply
so it does not resend forever. A closing sink (`SinkClosedError`) gets no reply and the source stops.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import types
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from ..clock import Clock, SystemClock, sleep_unless
from ..errors import FramingError, RecordRejectedError, SinkClosedError, SourceUnavailableError
from ..source import DeadLetter, Reading, Sink
from .framing import Frame
from .port import PySerialOpener, SerialOpener, SerialTransport
from .settings import SerialSourceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SerialSourceStatistics:
    port: str
    connected: bool
    frames: int  # frames delimited (and submitted)
    bytes: int  # bytes read from the port
    errors: types.MappingProxyType[str, int]  # framing errors by reason ("garbage", "overlong", ...)
    dead_letters: int
    rejected: int  # readings the sink refused for good (acked anyway)
    sink_errors: int  # submissions that failed otherwise (not acked)
    replies: int
    replies_dropped: int  # due while the port was down or the device was not taking replies
    reconnects: int  # successful reopens after a loss
    open_failures: int
    in_flight: int
    paused: bool
    pauses: int
    paused_seconds: float


class _Pending:
    __slots__ = ("future", "reply")

    def __init__(self, future: asyncio.Future[Any], reply: bytes | None) -> None:
        self.future = future
        self.reply = reply


class _Connection(asyncio.Protocol):
    """One open port. Forwards bytes to the source; `lost` resolves when the port fails or closes."""

    def __init__(self, source: SerialSource) -> None:
        self._source = source
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._source._on_data(data)

    def pause_writing(self) -> None:
        # The device is not taking replies (flow control, or it stopped reading): drop them rather than let
        # the transport's buffer grow with every frame.
        self._source._write_paused = True

    def resume_writing(self) -> None:
        self._source._write_paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class SerialSource:
    def __init__(
        self,
        name: str,
        settings: SerialSourceSettings,
        sink: Sink,
        *,
        clock: Clock | None = None,
        opener: SerialOpener | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._sink = sink
        self._clock = clock or SystemClock()
        self._opener = opener or PySerialOpener()
        self._rng = rng or random.Random()
        self._framing = settings.build_framing()
        self._fields = types.MappingProxyType({"port": settings.port})
        self._reply = settings.reply
        self._reply_fixed = (
            settings.render(settings.reply, seq=0) if settings.reply and "{" not in settings.reply else None
        )
        self._nak = settings.nak
        self._window = settings.window
        self._resume_at = settings.window // 2

        self._pending: collections.deque[_Pending] = collections.deque()
        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._finished = asyncio.Event()
        self._transport: SerialTransport | None = None
        self._write_paused = False
        self._running = False

        self._frames = 0
        self._bytes = 0
        self._errors: dict[str, int] = {}
        self._dead_letters = 0
        self._rejected = 0
        self._sink_errors = 0
        self._replies = 0
        self._replies_dropped = 0
        self._reconnects = 0
        self._open_failures = 0
        self._paused = False
        self._pauses = 0
        self._paused_since = 0.0
        self._paused_total = 0.0

    # ---------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        if self._running:
            raise RuntimeError("SerialSource.run() is already running")
        self._running = True
        acker = asyncio.create_task(self._ack_loop(), name=f"{self.name} acks")
        try:
            opened_before = False
            while not self._stop_requested.is_set():
                conn = await self._open()
                if conn is None:
                    break
                if opened_before:
                    self._reconnects += 1
                    log.warning("%s: %s is back (reconnect %d)", self.name, self.settings.port, self._reconnects)
                opened_before = True
                exc = await self._until_lost_or_stop(conn)
                if self._stop_requested.is_set() and self._transport is not None:
                    self._transport.pause_reading()
                self._end_of_stream()
                if self._stop_requested.is_set():
                    break
                log.warning("%s: lost %s: %s; reopening", self.name, self.settings.port, exc or "closed")
            await self._drain(acker)
        finally:
            acker.cancel()
            self._close_transport()
            self._abandon_pending()
            self._running = False
            self._finished.set()

    async def stop(self) -> None:
        """Stop reading, wait (up to `drain_timeout_s`) for in-flight frames to become durable and be replied
        to, close the port. Returns when `run` has returned."""
        self._stop_requested.set()
        if self._running:
            await self._finished.wait()

    async def _open(self) -> _Connection | None:
        """Open the port, retrying with jittered exponential backoff. None if stopped meanwhile."""
        attempt = 0
        while not self._stop_requested.is_set():
            conn = _Connection(self)
            try:
                transport = await self._opener.open(self.settings, conn)
            except SourceUnavailableError as exc:
                self._open_failures += 1
                delay = min(self.settings.backoff_max_s, self.settings.backoff_min_s * 2.0**attempt)
                delay *= 0.5 + self._rng.random() / 2  # jitter: many gateways must not retry in lockstep
                attempt += 1
                if attempt == 1:
                    log.warning("%s: cannot open %s (%s); retrying", self.name, self.settings.port, exc.detail)
                if not await self._sleep_unless_stopped(delay):
                    return None
                continue
            self._transport = transport
            self._write_paused = False
            if self._paused:
                transport.pause_reading()
            return conn
        return None

    async def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep on the injected clock; False if `stop` came first."""
        return await sleep_unless(self._clock, seconds, self._stop_requested)

    async def _until_lost_or_stop(self, conn: _Connection) -> Exception | None:
        stopper = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait((conn.lost, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if conn.lost.done():
            self._transport = None
            return conn.lost.result()
        return None

    def _end_of_stream(self) -> None:
        """The byte stream ended (port lost or stopping): report what the framing still holds."""
        events = self._framing.flush()
        if events:
            self._handle(events, self._clock.wall_ms())

    async def _drain(self, acker: asyncio.Task[None]) -> None:
        transport = self._transport
        if transport is not None:
            transport.pause_reading()
        if not self._pending:
            return
        done = asyncio.ensure_future(self._pending_empty())
        timer = asyncio.ensure_future(self._clock.sleep(self.settings.drain_timeout_s))
        try:
            await asyncio.wait((done, timer, acker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            timer.cancel()
        if self._pending:
            log.warning(
                "%s: stopping with %d frames not yet durable; they get no reply",
                self.name,
                len(self._pending),
            )

    async def _pending_empty(self) -> None:
        while self._pending:
            self._wake.clear()
            await self._wake.wait()

    def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def _abandon_pending(self) -> None:
        for item in self._pending:
            # Retrieve the outcome whenever it comes, so an abandoned failure is not reported as unhandled.
            item.future.add_done_callback(_consume)
        self._pending.clear()

    # ---------------------------------------------------------------- data path

    def _on_data(self, data: bytes) -> None:
        self._bytes += len(data)
        events = self._framing.feed(data)
        if events:
            self._handle(events, self._clock.wall_ms())

    def _handle(self, events: list[Frame | FramingError], now_ms: int) -> None:
        sink = self._sink
        pending = self._pending
        for event in events:
            if type(event) is Frame:
                self._frames += 1
                reading = Reading(self.name, event.payload, now_ms, self._fields)
                future = _as_future(sink.submit, reading)
                if self._reply_fixed is not None:
                    reply: bytes | None = self._reply_fixed
                elif self._reply is not None:
                    reply = self.settings.render(self._reply, seq=self._frames)
                else:
                    reply = None
                pending.append(_Pending(future, reply))
            else:
                assert isinstance(event, FramingError)
                self._errors[event.reason] = self._errors.get(event.reason, 0) + 1
                self._dead_letters += 1
                letter = DeadLetter(self.name, event.data, event.reason, now_ms, event.detail, self._fields)
                nak = self.settings.render(self._nak, seq=self._frames) if self._nak is not None else None
                pending.append(_Pending(_as_future(sink.dead_letter, letter), nak))
        self._wake.set()
        if len(pending) >= self._window and not self._paused:
            self._pause()

    def _pause(self) -> None:
        self._paused = True
        self._pauses += 1
        self._paused_since = self._clock.monotonic()
        if self._transport is not None:
            self._transport.pause_reading()

    def _resume(self) -> None:
        self._paused = False
        self._paused_total += self._clock.monotonic() - self._paused_since
        if self._transport is not None and not self._stop_requested.is_set():
            self._transport.resume_reading()

    async def _ack_loop(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            item = pending[0]
            future = item.future
            if not future.done():
                # asyncio.wait, not await: cancelling this loop must not cancel the sink's future.
                await asyncio.wait((future,))
            send = True
            if future.cancelled():
                self._sink_errors += 1
                send = False
            elif (exc := future.exception()) is not None:
                if isinstance(exc, RecordRejectedError):
                    self._rejected += 1
                elif isinstance(exc, SinkClosedError):
                    log.warning("%s: sink closed; stopping without acknowledging %d frames", self.name, len(pending))
                    self._stop_requested.set()
                    return
                else:
                    log.error("%s: the sink failed to store a frame; not acknowledging it", self.name, exc_info=exc)
                    self._sink_errors += 1
                    send = False
            if pending and pending[0] is item:
                pending.popleft()
            if send and item.reply is not None:
                self._send_reply(item.reply)
            if self._paused and len(pending) <= self._resume_at:
                self._resume()
            if not pending:
                self._wake.set()  # lets _pending_empty see the drain

    def _send_reply(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._write_paused:
            self._replies_dropped += 1
            return
        transport.write(data)
        self._replies += 1

    # ---------------------------------------------------------------- statistics

    def statistics(self) -> SerialSourceStatistics:
        paused_seconds = self._paused_total
        if self._paused:
            paused_seconds += self._clock.monotonic() - self._paused_since
        return SerialSourceStatistics(
            port=self.settings.port,
            connected=self._transport is not None,
            frames=self._frames,
            bytes=self._bytes,
            errors=types.MappingProxyType(dict(self._errors)),
            dead_letters=self._dead_letters,
            rejected=self._rejected,
            sink_errors=self._sink_errors,
            replies=self._replies,
            replies_dropped=self._replies_dropped,
            reconnects=self._reconnects,
            open_failures=self._open_failures,
            in_flight=len(self._pending),
            paused=self._paused,
            pauses=self._pauses,
            paused_seconds=paused_seconds,
        )


def _as_future(submit: Any, item: Any) -> asyncio.Future[Any]:
    """Start a submission now (a coroutine would otherwise wait until awaited) and never raise here: a sink
    that raises synchronously fails this one item, in order, like any other failure."""
    try:
        awaitable: Awaitable[Any] = submit(item)
        return asyncio.ensure_future(awaitable)
    except Exception as exc:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(exc)
        return future


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
