"""SerialSource on real ptys through pyserial: split reads, damage, unplug/replug, backpressure, acks, and the
`edgestream simulate serial` binary. Waits are conditions with deadlines; backoff runs on a ManualClock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edgestream.edge.clock import ManualClock
from edgestream.edge.errors import SourceUnavailableError
from edgestream.edge.serial.checksum import Checksum
from edgestream.edge.serial.fake import FakeSerialOpener
from edgestream.edge.serial.framing import LineFraming
from edgestream.edge.serial.port import PySerialOpener
from edgestream.edge.serial.settings import load_serial_settings
from edgestream.edge.serial.source import SerialSource
from edgestream.edge.serial.stuffing import CobsFraming
from edgestream.edge.simulate.serial import PtyPort, SerialDeviceSimulator, framing_for, write_all
from edgestream.edge.testing import FakeSink

EDGESTREAM = str(Path(sys.executable).with_name("edgestream"))


async def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll a condition on real I/O; generous deadline for two busy cores."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(source: SerialSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run())
    try:
        await wait_until(lambda: source.statistics().connected or task.done(), what="port open")
        yield task
    finally:
        await asyncio.wait_for(source.stop(), 15)
        await asyncio.wait_for(task, 15)


def source_for(port: str, sink: FakeSink, clock: ManualClock | None = None, **settings: Any) -> SerialSource:
    return SerialSource(
        "bench3",
        load_serial_settings({"port": port, "baudrate": 115200, **settings}),
        sink,
        clock=clock or ManualClock(),
    )


async def test_frames_split_across_reads_arrive_whole() -> None:
    pty = PtyPort()
    sink = FakeSink()
    framing = CobsFraming(checksum=Checksum("crc16-ccitt"))
    source = source_for(pty.path, sink, framing={"type": "cobs"}, checksum={"algorithm": "crc16-ccitt"})
    try:
        async with running(source):
            wire = framing.encode(b'{"sensor":"line1/temperature-0","value":41.2}') + framing.encode(b"\x00\x01")
            for size in (3, 17, 30, 31, len(wire)):  # each piece is read before the next is written
                piece, wire = wire[:size], wire[size:]
                expected = source.statistics().bytes + len(piece)
                await write_all(pty.master, piece)
                await wait_until(lambda e=expected: source.statistics().bytes == e, what="bytes read")
            await wait_until(lambda: len(sink.readings) == 2)
            assert [r.payload for r in sink.readings] == [b'{"sensor":"line1/temperature-0","value":41.2}', b"\x00\x01"]
            assert sink.dead_letters == []
            assert dict(sink.readings[0].fields) == {"port": pty.path}
    finally:
        pty.close()


async def test_garbage_overlong_and_checksum_failures_cost_no_good_frame() -> None:
    pty = PtyPort()
    sink = FakeSink()
    nmea = {"algorithm": "xor", "encoding": "hex", "skip": 1}
    source = source_for(
        pty.path,
        sink,
        framing={"type": "line", "terminator": "\r\n", "start": "$"},
        checksum=nmea,
        max_frame_bytes=200,
        nak="NAK\r\n",
        reply="ACK\r\n",
    )
    framing = LineFraming(b"\r\n", checksum=Checksum("xor", "hex", skip=1), start=b"$")
    good = [b"$GPGGA,1", b"$GPGGA,2", b"$GPGGA,3", b"$GPGGA,4"]
    bad_checksum = bytearray(framing.encode(b"$GPGGA,x"))
    bad_checksum[3] ^= 0x01
    stream = (
        framing.encode(good[0])
        + b"\x00\xff\x13power-up noise\r\n"
        + framing.encode(good[1])
        + b"$"
        + b"A" * 500
        + b"\r\n"
        + framing.encode(good[2])
        + bytes(bad_checksum)
        + framing.encode(good[3])
    )
    try:
        async with running(source):
            await write_all(pty.master, stream)
            await wait_until(lambda: len(sink.readings) == 4 and len(sink.dead_letters) == 3)
            assert [r.payload for r in sink.readings] == good
            assert [d.reason for d in sink.dead_letters] == ["garbage", "overlong", "checksum"]
            assert dict(source.statistics().errors) == {"garbage": 1, "overlong": 1, "checksum": 1}
            replies = bytearray()
            await wait_until(
                lambda: (
                    replies.extend(os.read(pty.master, 4096) if _readable(pty.master) else b"")
                    or replies.count(b"\r\n") == 7
                ),
                what="7 replies",
            )
            assert bytes(replies) == b"ACK\r\nNAK\r\nACK\r\nNAK\r\nACK\r\nNAK\r\nACK\r\n"
    finally:
        pty.close()


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


async def test_device_path_vanishes_and_returns(tmp_path: Path) -> None:
    device = SerialDeviceSimulator(framing_for("line"), rate=200, record=True, link=str(tmp_path / "ttyUSB0"))
    sink = FakeSink()
    clock = ManualClock()
    source = source_for(device.path, sink, clock, backoff_min_s=0.5, backoff_max_s=4.0)
    try:
        async with running(source):
            await device.run(count=40)
            await wait_until(lambda: len(sink.readings) == 40, what="first 40 frames")

            device.unplug()
            assert not os.path.exists(device.path)
            await wait_until(
                lambda: not source.statistics().connected and clock.sleepers == 1, what="source noticing the unplug"
            )
            # While the path is gone every reopen fails and the source backs off (on the manual clock).
            for _ in range(3):
                clock.advance(4.0)
                failures = source.statistics().open_failures
                await wait_until(
                    lambda f=failures: source.statistics().open_failures > f and clock.sleepers == 1,
                    what="a failed reopen",
                )

            device.plug()
            clock.advance(4.0)
            await wait_until(lambda: source.statistics().reconnects == 1, what="reconnect")
            await device.run(count=100)
            await wait_until(lambda: len(sink.readings) == 100, what="frames after the return")
            assert [r.payload for r in sink.readings] == device.sent
            stats = source.statistics()
            assert stats.reconnects == 1 and stats.open_failures >= 4 and stats.connected
            assert sink.dead_letters == []  # the unplug came between frames: nothing truncated
    finally:
        device.close()


async def test_backpressure_stops_reading_and_the_pty_fills_then_everything_flows() -> None:
    device = SerialDeviceSimulator(framing_for("line"), rate=0, baud=50_000_000, record=True)
    sink = FakeSink()
    source = source_for(device.path, sink, window=16)
    sink.hold()
    total = 3000  # ~350 KB: far more than a pty buffers
    try:
        async with running(source):
            sending = asyncio.create_task(device.run(count=total))
            await wait_until(lambda: source.statistics().paused, what="the source pausing")
            await wait_until(lambda: device.blocked, what="the device blocking on a full pty")
            read_while_paused = source.statistics().bytes
            in_flight = source.statistics().in_flight
            assert 16 <= in_flight <= 16 + 1024 // 100  # the window, plus at most one read's frames
            assert len(sink.readings) == in_flight and device.statistics().frames < total
            assert device.replies == b""  # nothing is durable, nothing is acknowledged

            sink.release()
            await asyncio.wait_for(sending, 60)
            await wait_until(lambda: len(sink.readings) == total, timeout=60, what="all frames stored")
            assert [r.payload for r in sink.readings] == device.sent
            stats = source.statistics()
            assert stats.bytes > read_while_paused and stats.pauses >= 1 and not stats.paused
    finally:
        device.close()


async def test_replies_are_sent_only_after_the_record_is_durable() -> None:
    device = SerialDeviceSimulator(framing_for("line"), rate=100, record=True)
    sink = FakeSink()
    source = source_for(device.path, sink, reply="ACK {seq}\n")
    sink.hold()
    try:
        async with running(source):
            await device.run(count=3)
            await wait_until(lambda: source.statistics().in_flight == 3, what="3 frames in flight")
            assert device.replies == b"" and source.statistics().replies == 0
            sink.release()
            await wait_until(lambda: bytes(device.replies) == b"ACK 1\nACK 2\nACK 3\n", what="3 acks")
            assert [r.payload for r in sink.readings] == device.sent
    finally:
        device.close()


@pytest.mark.timeout(120)
async def test_simulate_serial_binary_feeds_a_source() -> None:
    proc = subprocess.Popen(
        [
            EDGESTREAM,
            "simulate",
            "serial",
            "--rate",
            "300",
            "--framing",
            "cobs",
            "--checksum",
            "crc16-ccitt",
            "--malformed-rate",
            "0.05",
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        path = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        path = path.strip()
        assert path.startswith("/dev/pts/"), path
        sink = FakeSink()
        source = source_for(path, sink, framing={"type": "cobs"}, checksum={"algorithm": "crc16-ccitt"}, reply="\u0006")
        async with running(source):
            await wait_until(
                lambda: len(sink.readings) >= 200 and sink.dead_letters,
                timeout=60,
                what="frames and dead letters from the simulator",
            )
            await wait_until(lambda: source.statistics().replies >= 200, what="acks written")
        parsed = 0
        for r in sink.readings:
            with contextlib.suppress(ValueError):
                body = json.loads(r.payload)
                assert {"sensor", "kind", "ts", "value", "unit", "status", "seq"} <= set(body)
                parsed += 1
        assert parsed >= len(sink.readings) * 0.8
        assert {d.reason for d in sink.dead_letters} <= {"garbage", "checksum"}
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(asyncio.to_thread(proc.communicate), 30)
    assert proc.returncode == 0, err
    assert "frames" in err and "reply bytes received" in err
    received = int(err.rsplit(";", 1)[1].split()[0])
    assert received >= 100  # the device read the acks (the last ones may still be in the pty at SIGINT)


def test_simulate_serial_help_has_an_example() -> None:
    out = subprocess.run([EDGESTREAM, "simulate", "serial", "--help"], capture_output=True, text=True, check=True)
    assert "Example" in out.stdout and "edgestream simulate serial --rate" in out.stdout


class _Line:
    """One side of the opener contract: a device end the test drives, and an opener for the source's end."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "pyserial":
            self.pty: PtyPort | None = PtyPort()
            self.opener: Any = PySerialOpener()
            self.port = self.pty.path
        else:
            self.pty = None
            self.opener = FakeSerialOpener()
            self.port = "/dev/ttyFAKE0"
        self.received = bytearray()

    async def device_write(self, data: bytes) -> None:
        if self.pty is not None:
            await write_all(self.pty.master, data)
        else:
            assert self.opener.transport.push(data) == 0

    def device_read(self) -> bytes:
        if self.pty is not None:
            while _readable(self.pty.master):
                self.received += os.read(self.pty.master, 4096)
            return bytes(self.received)
        return b"".join(self.opener.transport.written)

    def unplug(self) -> None:
        if self.pty is not None:
            self.pty.close()
        else:
            self.opener.unplug()


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.parametrize("kind", ["fake", "pyserial"])
async def test_opener_contract(kind: str) -> None:
    """What SerialSource relies on, held by the real opener and by the fake the unit tests use."""
    line = _Line(kind)
    settings = load_serial_settings({"port": line.port})
    proto = _Recorder()
    transport = await line.opener.open(settings, proto)
    try:
        transport.pause_reading()  # right after open: must stick (reading started before open returned)
        await line.device_write(b"held back\n")
        for _ in range(20):
            await asyncio.sleep(0)
        assert bytes(proto.data) == b""
        transport.resume_reading()
        await wait_until(lambda: bytes(proto.data) == b"held back\n", what="data after resume")

        transport.write(b"ACK 1\n")
        await wait_until(lambda: line.device_read() == b"ACK 1\n", what="reply at the device")

        line.unplug()
        await asyncio.wait_for(proto.lost, 15)
        with pytest.raises(SourceUnavailableError):
            await line.opener.open(settings, _Recorder())
    finally:
        transport.close()
        if line.pty is not None:
            line.pty.close()
