"""The Modbus RTU master as the poller sees it: connect, read a block, close.

`PymodbusRtuClient` wraps pymodbus's asyncio serial client (the optional `modbus` extra; pymodbus has its own
serial transport over pyserial). Everything pymodbus raises or returns on failure ends here as a
`ModbusReadError` with a bounded `reason`:

- "timeout": no answer within `timeout_s` (times `1 + retries` attempts);
- "crc": bytes came back but never formed a valid frame for this request (pymodbus drops a frame whose CRC
  fails and then times out; the bytes seen during the last attempt tell the two apart);
- "exception": the unit answered with a Modbus exception response (`code` says which: 2 illegal address, ...);
- "disconnected": the port is gone (adapter unplugged) or cannot be opened.

pymodbus reconnects on its own with real-time sleeps; that is switched off (`reconnect_delay=0`) because the
poller retries on its own schedule, from the injected clock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import EdgeError, SourceUnavailableError
from .settings import ModbusSourceSettings


class _CountedElsewhere(logging.Filter):
    """Drops pymodbus's per-request "No response received" errors (each with a dump of the last frames): the
    poller counts every failed read by unit and reason, and a unit that is switched off would otherwise write
    an error to the journal at every poll. Other pymodbus messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No response received" not in record.getMessage()


def _quiet_pymodbus() -> None:
    logger = logging.getLogger("pymodbus.logging")
    if not any(isinstance(f, _CountedElsewhere) for f in logger.filters):
        logger.addFilter(_CountedElsewhere())


class ModbusReadError(EdgeError):
    """One read of one unit failed; counted by unit and reason, never fatal."""

    retriable = True

    def __init__(self, unit: int, reason: str, detail: str = "", *, code: int = 0) -> None:
        super().__init__(f"unit {unit}: {reason}" + (f" ({detail})" if detail else ""))
        self.unit = unit
        self.reason = reason
        self.detail = detail
        self.code = code


class ModbusClient(Protocol):
    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None:
        """Open the port; `SourceUnavailableError` if it cannot be opened now."""
        ...

    async def read(self, unit: int, function: str, address: int, count: int) -> Sequence[int] | Sequence[bool]:
        """`count` registers (or bits) from `address`; `ModbusReadError` on failure."""
        ...

    def close(self) -> None: ...


class PymodbusRtuClient:
    def __init__(self, settings: ModbusSourceSettings) -> None:
        from pymodbus.client import AsyncModbusSerialClient
        from pymodbus.framer import FramerType

        _quiet_pymodbus()
        self._port = settings.port
        self._client = AsyncModbusSerialClient(
            settings.port,
            framer=FramerType.RTU,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            timeout=settings.timeout_s,
            retries=settings.retries,
            reconnect_delay=0,
            trace_packet=self._trace_packet,
        )
        # pymodbus counts unanswered requests and, past a limit, treats the line as dead; one silent unit on a
        # shared bus says nothing about the others, so that limit is set out of reach.
        self._client.set_max_no_responses(1 << 30)
        self._received = 0

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # Sending starts an attempt; on receipt `data` is the whole receive buffer of the attempt so far.
        self._received = 0 if sending else len(data)
        return data

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def connect(self) -> None:
        if not await self._client.connect():
            raise SourceUnavailableError(self._port, "cannot open the serial port")

    async def read(self, unit: int, function: str, address: int, count: int) -> Sequence[int] | Sequence[bool]:
        from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

        client = self._client
        calls: dict[str, Any] = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coils": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }
        self._received = 0
        try:
            response = await calls[function](address, count=count, device_id=unit)
        except ConnectionException as exc:
            raise ModbusReadError(unit, "disconnected", str(exc)) from None
        except ModbusIOException as exc:
            if not client.connected:
                raise ModbusReadError(unit, "disconnected", str(exc)) from None
            reason = "crc" if self._received else "timeout"
            raise ModbusReadError(unit, reason, f"{function} {address}+{count}") from None
        except ModbusException as exc:
            raise ModbusReadError(unit, "protocol", str(exc)) from None
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise ModbusReadError(unit, "exception", f"exception code {code}", code=code)
        if function in ("coils", "discrete"):
            return list(response.bits[:count])
        return list(response.registers)

    def close(self) -> None:
        self._client.close()
