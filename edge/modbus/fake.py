"""A scripted Modbus master for unit tests of the poller: register tables per unit, and failures on demand."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import SourceUnavailableError
from .client import ModbusReadError


class FakeModbusClient:
    """`tables[unit][function]` maps address -> register (or bit). `fail[unit] = reason` makes every read of that
    unit fail with that reason; `on_read` runs before each read (tests advance a clock there, as a slow unit
    would take time)."""

    def __init__(self) -> None:
        self.tables: dict[int, dict[str, dict[int, int]]] = {}
        self.fail: dict[int, str] = {}
        self.reads: list[tuple[int, str, int, int]] = []
        self.plugged = True
        self.connects = 0
        self._connected = False
        self.on_read: Callable[[int, str], None] | None = None

    def set(self, unit: int, function: str, address: int, words: Sequence[int]) -> None:
        table = self.tables.setdefault(unit, {}).setdefault(function, {})
        for i, w in enumerate(words):
            table[address + i] = int(w)

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        if not self.plugged:
            raise SourceUnavailableError("/dev/fake", "No such file or directory")
        self.connects += 1
        self._connected = True

    def unplug(self) -> None:
        self.plugged = False
        self._connected = False

    def plug(self) -> None:
        self.plugged = True

    async def read(self, unit: int, function: str, address: int, count: int) -> Sequence[int] | Sequence[bool]:
        self.reads.append((unit, function, address, count))
        if self.on_read is not None:
            self.on_read(unit, function)
        if not self._connected:
            raise ModbusReadError(unit, "disconnected", "port closed")
        if unit in self.fail:
            raise ModbusReadError(unit, self.fail[unit], code=2 if self.fail[unit] == "exception" else 0)
        table = self.tables.get(unit, {}).get(function)
        if table is None or any(a not in table for a in range(address, address + count)):
            raise ModbusReadError(unit, "exception", "exception code 2", code=2)
        values = [table[a] for a in range(address, address + count)]
        if function in ("coils", "discrete"):
            return [bool(v) for v in values]
        return values

    def close(self) -> None:
        self._connected = False
