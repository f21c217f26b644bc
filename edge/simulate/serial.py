"""A serial device on a pseudo-terminal: framed factory telemetry at a set rate, paced like a real UART.

The gateway opens the pty's *slave* path (`/dev/pts/N`, or a stable symlink such as `/tmp/ttyUSB-sim`) exactly
as it would open `/dev/ttyUSB0`; the device reads and writes the *master* fd. The simulator keeps its own fd
of the slave open so the line survives the gateway closing and reopening it (the master reads EIO once the
last slave fd closes), and sets it raw at once: a fresh pty echoes and translates CR/LF until pyserial sets it
raw, and an echo would feed the device its own frames.

Pacing: `rate` frames per second, and never faster than the line: each byte takes `bits_per_char / baud`
seconds (10 bits for 8N1), as on a real UART; `rate = 0` saturates the line. When the gateway stops reading
the pty buffer fills and the device waits, like a device with hardware flow control.

Damage, at `malformed_rate` per frame, one of: a payload that is not JSON (the telemetry generator's own bad
payloads, framed correctly: stored raw, counted at decode), a frame with one byte flipped (a checksum or
decoding failure at the gateway), or a burst of line noise. `unplug()` / `plug()` close and recreate the pty
(the link, if any, points at the new one): reads fail with EIO, then opens fail with ENOENT, then it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tty
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import Clock, SystemClock
from ..serial.checksum import Checksum
from ..serial.framing import Framing, LengthPrefixFraming, LineFraming
from ..serial.stuffing import CobsFraming, SlipFraming
from .telemetry import fleet, malformed

FRAMINGS = ("line", "cobs", "slip", "length")


class PtyPort:
    """One pty pair. `path` is what the gateway opens (the link if one was asked for)."""

    def __init__(self, link: str | None = None) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self._slave)
        self.link = link
        if link is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(self.device, link)
        self.closed = False

    @property
    def path(self) -> str:
        return self.link or self.device

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)
        os.close(self.master)
        os.close(self._slave)


async def write_all(fd: int, data: bytes, on_block: Callable[[bool], None] | None = None) -> None:
    """Write everything, waiting without blocking the loop while the tty buffer is full (`on_block(True)`
    when that wait starts, `on_block(False)` when it ends)."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            n = 0
        view = view[n:]
        if view:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _resolve, ready)
            if on_block is not None:
                on_block(True)
            try:
                await ready
            finally:
                loop.remove_writer(fd)
                if on_block is not None:
                    on_block(False)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def read_available(fd: int) -> bytes:
    """What the other side has written so far (b"" if nothing, or if the pty is gone)."""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def framing_for(name: str, checksum: str | None = None, *, max_frame_bytes: int = 4096) -> Framing:
    """The framing a simulated device speaks; matches a gateway `framing = {type = name}` with the same
    checksum (hex after "*" on lines, binary otherwise)."""
    if name == "line":
        ck = Checksum(checksum, "hex") if checksum else None
        return LineFraming(b"\n", max_frame_bytes=max_frame_bytes, checksum=ck)
    ck = Checksum(checksum) if checksum else None
    if name == "cobs":
        return CobsFraming(max_frame_bytes=max_frame_bytes, checksum=ck)
    if name == "slip":
        return SlipFraming(max_frame_bytes=max_frame_bytes, checksum=ck)
    if name == "length":
        return LengthPrefixFraming(max_frame_bytes=max_frame_bytes, checksum=ck)
    raise ValueError(f"unknown framing {name!r}; one of {', '.join(FRAMINGS)}")


@dataclass(frozen=True, slots=True)
class SerialDeviceStatistics:
    frames: int  # well-framed frames written (including non-JSON payloads)
    bad_payloads: int  # of those, payloads that are not JSON
    damaged_frames: int  # frames with a flipped byte
    noise_bursts: int
    bytes: int
    reply_bytes: int
    plugged: bool


class SerialDeviceSimulator:
    """Write framed telemetry into a pty until stopped. `sent` keeps every good frame's payload when `record`
    is set (tests compare it with what the gateway stored)."""

    def __init__(
        self,
        framing: Framing,
        *,
        rate: float = 10.0,
        baud: int = 115_200,
        bits_per_char: int = 10,
        malformed_rate: float = 0.0,
        sensors: int = 8,
        seed: int = 0,
        link: str | None = None,
        clock: Clock | None = None,
        record: bool = False,
    ) -> None:
        if rate < 0 or baud <= 0 or not 0 <= malformed_rate <= 1:
            raise ValueError("need rate >= 0, baud > 0 and 0 <= malformed_rate <= 1")
        self.framing = framing
        self.rate = rate
        self.byte_time = bits_per_char / baud
        self.malformed_rate = malformed_rate
        self._sensors = fleet(sensors, seed=seed)
        self._rng = random.Random(seed)
        self._clock = clock or SystemClock()
        self._link = link
        self.port: PtyPort | None = PtyPort(link)
        self._plugged = asyncio.Event()
        self._plugged.set()
        self._stop = asyncio.Event()
        self.record = record
        self.sent: list[bytes] = []
        self.replies = bytearray()  # what the gateway wrote back, most recent 1 MiB
        self._reader_fd: int | None = None
        self.blocked = False  # waiting for room in the pty: the gateway is not reading
        self._frames = self._bad = self._damaged = self._noise = self._bytes = self._reply_bytes = 0

    @property
    def path(self) -> str:
        """The device path the gateway should open."""
        if self._link is not None:
            return self._link
        assert self.port is not None
        return self.port.path

    # --------------------------------------------------------------- the device's life

    async def run(self, count: int | None = None) -> None:
        """Send frames until `stop()` (or `count` frames). Pacing uses the injected clock."""
        clock = self._clock
        next_frame = line_free = clock.monotonic()
        sensor_index = 0
        try:
            while not self._stop.is_set() and (count is None or self._frames < count):
                await self._plugged.wait()
                port = self.port
                assert port is not None
                self._watch_replies(port.master)
                sensor = self._sensors[sensor_index % len(self._sensors)]
                sensor_index += 1
                sample = sensor.sample(clock.wall_ms())
                if sample is None:
                    continue  # a sensor dropout: no frame this turn
                wire = self._wire(sample.to_json())
                if self.rate:
                    next_frame = max(next_frame + 1 / self.rate, clock.monotonic() - 1.0)
                    await self._sleep_until(next_frame)
                try:
                    await write_all(port.master, wire, self._set_blocked)
                except OSError:
                    continue  # unplugged meanwhile: the frame never reached the line
                self._bytes += len(wire)
                # The UART needs len(wire) byte times; sleeping in ~5 ms steps keeps the line saturated
                # without waking the loop for every frame.
                line_free = max(line_free, clock.monotonic() - 0.005) + len(wire) * self.byte_time
                if line_free - clock.monotonic() > 0.005:
                    await self._sleep_until(line_free)
        finally:
            # Replies keep being read between runs (the gateway acknowledges after the device went quiet);
            # `close` and `unplug` stop that.
            if self.port is not None and not self.port.closed:
                self._watch_replies(self.port.master)

    def _set_blocked(self, blocked: bool) -> None:
        self.blocked = blocked

    async def _sleep_until(self, t: float) -> None:
        delay = t - self._clock.monotonic()
        if delay > 0:
            await self._clock.sleep(delay)

    def _wire(self, payload: bytes) -> bytes:
        rng = self._rng
        if self.malformed_rate and rng.random() < self.malformed_rate:
            kind = rng.randrange(3)
            if kind == 0:
                bad = malformed(rng)
                try:
                    wire = self.framing.encode(bad)
                except ValueError:  # e.g. a terminator inside, or empty SLIP: use one that frames
                    bad = b"NaN,NaN,,\xff\xfe"
                    wire = self.framing.encode(bad)
                self._frames += 1
                self._bad += 1
                return wire
            if kind == 1:
                damaged = bytearray(self.framing.encode(payload))
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
                self._damaged += 1
                return bytes(damaged)
            self._noise += 1
            return bytes(rng.randrange(256) for _ in range(rng.randint(1, 24)))
        self._frames += 1
        if self.record:
            self.sent.append(payload)
        return self.framing.encode(payload)

    def stop(self) -> None:
        self._stop.set()
        self._plugged.set()  # wake a device waiting to be plugged back in, so it can end

    def close(self) -> None:
        self.stop()
        self._unwatch_replies()
        if self.port is not None:
            self.port.close()

    def unplug(self) -> None:
        """Pull the adapter: the pty and its link disappear until `plug()`."""
        self._plugged.clear()
        self._unwatch_replies()
        if self.port is not None:
            self.port.close()
            self.port = None

    def plug(self) -> None:
        """A new pty appears at the same link path (the device path of a USB adapter is its link)."""
        if self.port is None:
            self.port = PtyPort(self._link)
        self._plugged.set()

    # --------------------------------------------------------------- replies

    def _watch_replies(self, fd: int) -> None:
        if self._reader_fd == fd:
            return
        self._unwatch_replies()
        asyncio.get_running_loop().add_reader(fd, self._on_reply, fd)
        self._reader_fd = fd

    def _unwatch_replies(self) -> None:
        if self._reader_fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._reader_fd)
            self._reader_fd = None

    def _on_reply(self, fd: int) -> None:
        data = read_available(fd)
        if not data:
            return
        self._reply_bytes += len(data)
        self.replies += data
        if len(self.replies) > 1 << 20:
            del self.replies[: len(self.replies) - (1 << 20)]

    def statistics(self) -> SerialDeviceStatistics:
        return SerialDeviceStatistics(
            self._frames, self._bad, self._damaged, self._noise, self._bytes, self._reply_bytes, self._plugged.is_set()
        )
