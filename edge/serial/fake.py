"""A scripted serial port for unit tests of serial sources: plug, unplug, push bytes, see what was written.

Like a real line, bytes pushed while the reader is paused wait in a bounded "kernel buffer"; `push` reports
how many bytes it could not place (the device would block), which is what backpressure tests look at.
"""

from __future__ import annotations

import asyncio

from ..errors import SourceUnavailableError
from .settings import SerialSourceSettings


class FakeSerialTransport:
    def __init__(self, protocol: asyncio.Protocol, capacity: int) -> None:
        self.protocol = protocol
        self.written: list[bytes] = []
        self.reading = True
        self.closed = False
        self.buffered = bytearray()
        self.capacity = capacity

    # transport side, called by the source
    def write(self, data: bytes) -> None:
        if not self.closed:
            self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        if self.buffered and not self.closed:
            data = bytes(self.buffered)
            self.buffered.clear()
            self.protocol.data_received(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    # device side, called by the test
    def push(self, data: bytes) -> int:
        """Deliver bytes as the device sends them; returns how many did not fit (0 = all placed)."""
        if self.closed:
            return len(data)
        if self.reading and not self.buffered:
            self.protocol.data_received(data)
            return 0
        room = self.capacity - len(self.buffered)
        self.buffered += data[: max(room, 0)]
        return max(len(data) - room, 0)


class FakeSerialOpener:
    """Opens `FakeSerialTransport`s while plugged; raises `SourceUnavailableError` while unplugged."""

    def __init__(self, *, plugged: bool = True, capacity: int = 4096) -> None:
        self.plugged = plugged
        self.capacity = capacity
        self.transport: FakeSerialTransport | None = None
        self.opens = 0
        self.attempts = 0
        self.opened = asyncio.Event()

    async def open(self, settings: SerialSourceSettings, protocol: asyncio.Protocol) -> FakeSerialTransport:
        self.attempts += 1
        if not self.plugged:
            raise SourceUnavailableError(settings.port, "No such file or directory")
        self.opens += 1
        transport = FakeSerialTransport(protocol, self.capacity)
        self.transport = transport
        protocol.connection_made(transport)  # type: ignore[arg-type]
        self.opened.set()
        return transport

    def unplug(self) -> None:
        """The adapter disappears: the open transport fails and new opens fail until `plug()`."""
        self.plugged = False
        self.opened.clear()
        transport = self.transport
        if transport is not None and not transport.closed:
            transport.closed = True
            transport.protocol.connection_lost(OSError(5, "Input/output error"))

    def plug(self) -> None:
        self.plugged = True
