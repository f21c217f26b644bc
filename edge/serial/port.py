"""The serial port as the source sees it: open with settings, get an asyncio transport back.

`PySerialOpener` is the real one (pyserial + pyserial-asyncio-fast's event-loop transport, no thread per
port); `edge.serial.fake.FakeSerialOpener` is the scripted one for unit tests. pyserial's exceptions end here:
an unopenable port is `SourceUnavailableError` (retriable: the adapter may be unplugged), a parameter the
driver refuses is `ConfigError`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from ..errors import ConfigError, SourceUnavailableError
from .settings import SerialSourceSettings


class SerialTransport(Protocol):
    def write(self, data: bytes) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


class SerialOpener(Protocol):
    async def open(self, settings: SerialSourceSettings, protocol: asyncio.Protocol) -> SerialTransport:
        """Open the port and connect `protocol`. Returns once `connection_made` ran and reading has started,
        so the caller may pause reading at once."""
        ...


class _Started(asyncio.Protocol):
    """Forwards to the real protocol and tells the opener when the transport has called `connection_made`.

    pyserial-asyncio-fast queues `connection_made` and then the add_reader call; a task woken from
    `connection_made` runs after both, so a `pause_reading` issued then is not undone."""

    def __init__(self, inner: asyncio.Protocol, started: asyncio.Future[None]) -> None:
        self._inner = inner
        self._started = started

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)
        if not self._started.done():
            self._started.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class PySerialOpener:
    """Opens real ports (and pyserial URLs such as `loop://`) with `exclusive=True`: two processes reading one
    line would each get half the bytes."""

    async def open(self, settings: SerialSourceSettings, protocol: asyncio.Protocol) -> SerialTransport:
        import serial
        import serial_asyncio_fast

        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        try:
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: _Started(protocol, started),
                settings.port,
                baudrate=settings.baudrate,
                bytesize=settings.bytesize,
                parity=settings.parity,
                stopbits=settings.stopbits,
                rtscts=settings.rtscts,
                xonxoff=settings.xonxoff,
                exclusive=True,
            )
        except ValueError as exc:
            raise ConfigError(
                f"serial port {settings.port}: {exc}",
                key="port",
                hint="check baudrate, bytesize, parity and stopbits",
            ) from None
        except (serial.SerialException, OSError) as exc:
            raise SourceUnavailableError(settings.port, str(exc)) from None
        await started
        return transport
