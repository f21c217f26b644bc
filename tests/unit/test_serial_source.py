"""SerialSource against a scripted port, FakeSink and ManualClock: acks, order, backpressure, reconnects."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from edgestream.edge.clock import ManualClock
from edgestream.edge.serial.fake import FakeSerialOpener
from edgestream.edge.serial.settings import load_serial_settings
from edgestream.edge.serial.source import SerialSource
from edgestream.edge.source import DeadLetter, Reading
from edgestream.edge.testing import FakeSink


async def until(cond: Callable[[], bool], steps: int = 2000) -> None:
    """Let the loop run until `cond` holds; nothing here waits for time, only for other tasks to take turns."""
    for _ in range(steps):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


class Rig:
    def __init__(self, sink: object | None = None, **overrides: object) -> None:
        settings = {"port": "/dev/ttyFAKE0", "reply": "ACK {seq}\n", **overrides}
        self.settings = load_serial_settings(settings)
        self.sink = sink if sink is not None else FakeSink()
        self.clock = ManualClock()
        self.opener = FakeSerialOpener(capacity=64)
        self.source = SerialSource(
            "line3",
            self.settings,
            self.sink,  # type: ignore[arg-type]
            clock=self.clock,
            opener=self.opener,
            rng=random.Random(7),
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Rig:
        self.task = asyncio.create_task(self.source.run())
        await until(lambda: self.opener.transport is not None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.source.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    @property
    def port(self):  # type: ignore[no-untyped-def]
        assert self.opener.transport is not None
        return self.opener.transport


async def test_frames_become_readings_and_errors_dead_letters() -> None:
    async with Rig(checksum={"algorithm": "sum8", "encoding": "hex"}, max_frame_bytes=32) as rig:
        rig.clock.advance(1.5)
        rig.port.push(b"a*61\nb*00\n" + b"x" * 40 + b"\nc*63\n")
        await until(lambda: len(rig.port.written) == 2)
        sink = rig.sink
        assert isinstance(sink, FakeSink)
        assert [r.payload for r in sink.readings] == [b"a", b"c"]
        r = sink.readings[0]
        assert (r.source, r.timestamp_ms, dict(r.fields)) == ("line3", 1_700_000_001_500, {"port": "/dev/ttyFAKE0"})
        assert [(d.reason, d.fields["port"]) for d in sink.dead_letters] == [
            ("checksum", "/dev/ttyFAKE0"),
            ("overlong", "/dev/ttyFAKE0"),
        ]
        stats = rig.source.statistics()
        assert (stats.frames, stats.dead_letters, stats.replies, stats.in_flight) == (2, 2, 2, 0)
        assert dict(stats.errors) == {"checksum": 1, "overlong": 1}
        assert stats.bytes == 56 and stats.connected


async def test_replies_wait_for_durability_and_keep_frame_order() -> None:
    class ReversingSink:
        """Resolves submissions in reverse order of arrival, as a sink with several partitions may."""

        def __init__(self) -> None:
            self.futures: list[asyncio.Future[None]] = []

        def submit(self, reading: Reading) -> Awaitable[None]:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.futures.append(fut)
            return fut

        def dead_letter(self, letter: DeadLetter) -> Awaitable[None]:
            return self.submit(None)  # type: ignore[arg-type]

    sink = ReversingSink()
    async with Rig(sink, nak="NAK\n", framing={"type": "line", "start": "$"}) as rig:
        rig.port.push(b"$1\n$2\nnoise\n$3\n")
        await until(lambda: len(sink.futures) == 4)
        for _ in range(50):
            await asyncio.sleep(0)
        assert rig.port.written == []  # nothing is durable yet
        for fut in reversed(sink.futures[1:]):
            fut.set_result(None)
        for _ in range(50):
            await asyncio.sleep(0)
        assert rig.port.written == []  # the first frame still is not: no reply may overtake it
        sink.futures[0].set_result(None)
        await until(lambda: len(rig.port.written) == 4)
        assert rig.port.written == [b"ACK 1\n", b"ACK 2\n", b"NAK\n", b"ACK 3\n"]


async def test_full_window_stops_reading_until_the_sink_catches_up() -> None:
    async with Rig(window=4) as rig:
        sink = rig.sink
        assert isinstance(sink, FakeSink)
        sink.hold()
        for i in range(4):
            assert rig.port.push(b"frame %d\n" % i) == 0
        await until(lambda: not rig.port.reading)
        stats = rig.source.statistics()
        assert stats.paused and stats.in_flight == 4 and stats.pauses == 1

        # The port now buffers like a tty (64 bytes here) and then refuses: the device has to wait.
        backlog = b"".join(b"frame %d\n" % i for i in range(4, 20))
        unplaced = rig.port.push(backlog)
        assert 0 < unplaced < len(backlog)
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(sink.readings) == 4 and rig.port.written == []

        rig.clock.advance(2.0)
        sink.release()
        await until(lambda: rig.port.reading and not rig.port.buffered)
        # The device sends what it held back; everything flows.
        assert rig.port.push(backlog[len(backlog) - unplaced :]) == 0
        await until(lambda: len(rig.port.written) == 20)
        assert [r.payload for r in sink.readings] == [b"frame %d" % i for i in range(20)]
        assert rig.port.written == [b"ACK %d\n" % (i + 1) for i in range(20)]
        stats = rig.source.statistics()
        assert not stats.paused and stats.paused_seconds == pytest.approx(2.0)


async def test_unplugged_adapter_is_reopened_with_jittered_exponential_backoff() -> None:
    async with Rig(backoff_min_s=1.0, backoff_max_s=5.0) as rig:
        sink = rig.sink
        assert isinstance(sink, FakeSink)
        rig.port.push(b"before\npartial")
        await until(lambda: len(sink.readings) == 1)
        rig.opener.unplug()
        await until(lambda: rig.opener.attempts == 2 and rig.clock.sleepers == 1)
        assert [d.reason for d in sink.dead_letters] == ["truncated"]
        assert sink.dead_letters[0].payload == b"partial"
        assert not rig.source.statistics().connected

        # Attempt n waits between half and all of min(max, 1 s * 2**n): never less, never more.
        waits = []
        for n in range(5):
            bound = min(5.0, 2.0**n)
            before = rig.opener.attempts
            rig.clock.advance(bound / 2 - 0.001)
            for _ in range(20):
                await asyncio.sleep(0)
            assert rig.opener.attempts == before, f"attempt {n} retried before half its backoff"
            step = 0.0
            while rig.opener.attempts == before:
                rig.clock.advance(0.01)
                step += 0.01
                for _ in range(5):
                    await asyncio.sleep(0)
            waits.append(bound / 2 + step)
            assert bound / 2 <= waits[-1] <= bound + 0.02
        assert len({round(w, 2) for w in waits}) == len(waits)  # jittered, not a fixed ladder
        await until(lambda: rig.clock.sleepers == 1)

        rig.opener.plug()
        rig.clock.advance(5.0)
        await until(lambda: rig.opener.opens == 2)
        rig.port.push(b"after\n")
        await until(lambda: len(rig.port.written) == 1)
        stats = rig.source.statistics()
        assert stats.reconnects == 1 and stats.open_failures == 6 and stats.connected
        assert [r.payload for r in sink.readings] == [b"before", b"after"]
        assert rig.port.written == [b"ACK 2\n"]  # the first ACK went out on the first connection


async def test_rejected_reading_is_still_acknowledged() -> None:
    async with Rig() as rig:
        sink = rig.sink
        assert isinstance(sink, FakeSink)
        sink.reject_next("too_large")
        rig.port.push(b"one\ntwo\n")
        await until(lambda: len(rig.port.written) == 2)
        assert rig.source.statistics().rejected == 1


async def test_closing_sink_gets_no_ack_and_stops_the_source() -> None:
    rig = Rig()
    sink = rig.sink
    assert isinstance(sink, FakeSink)
    await rig.__aenter__()
    sink.hold()
    rig.port.push(b"one\n")
    await until(lambda: len(sink.readings) == 1)
    sink.close()
    assert rig.task is not None
    await asyncio.wait_for(rig.task, 5)
    assert rig.port.written == [] and rig.port.closed


async def test_stop_drains_in_flight_frames_within_the_drain_timeout() -> None:
    async with Rig(drain_timeout_s=10.0) as rig:
        sink = rig.sink
        assert isinstance(sink, FakeSink)
        sink.hold()
        rig.port.push(b"one\ntwo\n")
        await until(lambda: len(sink.readings) == 2)
        stopping = asyncio.create_task(rig.source.stop())
        await until(lambda: rig.clock.sleepers == 1)
        assert not stopping.done() and not rig.port.reading
        sink.release()
        await asyncio.wait_for(stopping, 5)
        assert rig.port.written == [b"ACK 1\n", b"ACK 2\n"] and rig.port.closed


async def test_stop_gives_up_after_the_drain_timeout() -> None:
    async with Rig(drain_timeout_s=3.0) as rig:
        sink = rig.sink
        assert isinstance(sink, FakeSink)
        sink.hold()
        rig.port.push(b"one\n")
        await until(lambda: len(sink.readings) == 1)
        stopping = asyncio.create_task(rig.source.stop())
        await until(lambda: rig.clock.sleepers == 1)
        rig.clock.advance(3.0)
        await asyncio.wait_for(stopping, 5)
        assert rig.port.written == [] and rig.port.closed
        sink.release()
        for _ in range(10):
            await asyncio.sleep(0)
        assert rig.port.written == []
