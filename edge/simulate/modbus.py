"""Modbus RTU units on a pty: pymodbus's RTU server behind a pseudo-terminal, values from the telemetry generator.

Two pty pairs and an in-process bridge: pymodbus's server opens one pair's slave like any serial port; the
gateway opens the other pair's slave (the printed path); the bridge copies bytes between the two masters. The
bridge is also the bus: a unit can be told to go silent (its responses are dropped, as when it loses power),
to corrupt its responses (one CRC byte flipped, as on a noisy RS-485 line) or to answer "device busy".

Register map of every unit (`REGISTER_MAP`, in the poller's `registers` format, so a poller can use it as is):

| function | address | type             | value                                          |
|----------|---------|------------------|------------------------------------------------|
| input    | 0       | float32          | temperature, degC                              |
| input    | 2       | float32          | vibration, mm/s                                |
| input    | 4       | float32          | motor current, A                               |
| input    | 6       | float32          | pressure, bar                                  |
| holding  | 0       | uint32           | parts counter                                  |
| holding  | 2       | uint16           | status: 0 ok, 1 warn (a spike on any sensor)   |
| holding  | 3       | int16, scale 0.1 | temperature in tenths of a degree              |
| holding  | 4       | float32, CDAB    | motor current again, low word first            |
| holding  | 6       | uint32           | seconds since the unit started                 |
| coils    | 0       | 2 bits           | running, alarm                                 |
| discrete | 0       | 1 bit            | door closed                                    |

Values are sampled from `edge.simulate.telemetry` sensors (seeded per unit) at most every 100 ms of the
injected clock, so the blocks of one poll read one consistent sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..clock import Clock, SystemClock
from ..modbus.registers import encode_value
from .serial import PtyPort, read_available
from .telemetry import Sensor

REGISTER_MAP: list[dict[str, Any]] = [
    {"name": "temperature", "function": "input", "address": 0, "type": "float32"},
    {"name": "vibration", "function": "input", "address": 2, "type": "float32"},
    {"name": "current", "function": "input", "address": 4, "type": "float32"},
    {"name": "pressure", "function": "input", "address": 6, "type": "float32"},
    {"name": "parts", "function": "holding", "address": 0, "type": "uint32"},
    {"name": "status", "function": "holding", "address": 2, "type": "uint16"},
    {"name": "temperature_x10", "function": "holding", "address": 3, "type": "int16", "scale": 0.1},
    {"name": "current_cdab", "function": "holding", "address": 4, "type": "float32", "word_order": "little"},
    {"name": "uptime", "function": "holding", "address": 6, "type": "uint32"},
    {"name": "running", "function": "coils", "address": 0, "count": 2},
    {"name": "door_closed", "function": "discrete", "address": 0},
]
SAMPLE_EVERY_S = 0.1
_KINDS = ("temperature", "vibration", "current", "pressure", "counter")


def poller_units(units: Iterable[int]) -> list[dict[str, Any]]:
    """The `units` setting of a poller that reads these simulated units."""
    return [{"unit": u, "registers": REGISTER_MAP} for u in units]


@dataclass(frozen=True, slots=True)
class ModbusDeviceStatistics:
    responses: dict[int, int]  # responses sent, by unit
    suppressed: dict[int, int]  # responses dropped because the unit is silent (or unknown)
    corrupted: dict[int, int]


class _Unit:
    def __init__(self, unit: int, seed: int, started: float) -> None:
        self.unit = unit
        self.sensors = {k: Sensor(f"unit{unit}/{k}", k, seed=seed, dropout_rate=0.0) for k in _KINDS}
        self.values: dict[str, float] = {}
        self.warn = False
        self.sampled_at = -1e9
        self.started = started

    def sample(self, wall_ms: int, now: float) -> None:
        if now - self.sampled_at < SAMPLE_EVERY_S:
            return
        self.sampled_at = now
        self.warn = False
        for kind, sensor in self.sensors.items():
            s = sensor.sample(wall_ms)
            if s is not None:
                self.values[kind] = s.value
                self.warn = self.warn or s.status == "warn"

    def holding(self, now: float) -> list[int]:
        v = self.values
        return [
            *encode_value("uint32", int(v["counter"]) & 0xFFFFFFFF),
            int(self.warn),
            *encode_value("int16", max(-32768, min(32767, round(v["temperature"] * 10)))),
            *encode_value("float32", v["current"], word_order="little"),
            *encode_value("uint32", int(now - self.started)),
        ]

    def inputs(self) -> list[int]:
        v = self.values
        return [w for k in ("temperature", "vibration", "current", "pressure") for w in encode_value("float32", v[k])]


class ModbusDeviceSimulator:
    """`await start()` returns the device path; `await stop()` ends it. `silence`, `corrupt` and `busy` change
    a unit's behaviour at once (tests call them between polls)."""

    def __init__(
        self,
        units: Iterable[int] = (1, 2),
        *,
        seed: int = 0,
        baudrate: int = 19200,
        parity: str = "N",  # ptys on recent Linux refuse PARENB (EINVAL): use parity = "N" against a sim
        link: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self._units = {u: _Unit(u, seed, self._clock.monotonic()) for u in units}
        if not self._units or not all(1 <= u <= 247 for u in self._units):
            raise ValueError("units must be one or more ids in 1..247")
        self._baudrate = baudrate
        self._parity = parity
        self._link = link
        self._line: PtyPort | None = None
        self._bus: PtyPort | None = None
        self._server: Any = None
        self.silent: set[int] = set()
        self.corrupting: set[int] = set()
        self.busy_units: set[int] = set()
        self._responses: dict[int, int] = {}
        self._suppressed: dict[int, int] = {}
        self._corrupted: dict[int, int] = {}

    @property
    def path(self) -> str:
        assert self._line is not None, "start() first"
        return self._line.path

    async def start(self) -> str:
        from pymodbus.framer import FramerType
        from pymodbus.server import ModbusSerialServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self._line = PtyPort(self._link)
        self._bus = PtyPort()
        loop = asyncio.get_running_loop()
        loop.add_reader(self._line.master, self._pump, self._line.master, self._bus.master)
        loop.add_reader(self._bus.master, self._pump, self._bus.master, self._line.master)
        devices = [
            SimDevice(
                unit,
                simdata=(
                    [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                    [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                    [SimData(0, count=8, values=0, datatype=DataType.REGISTERS)],
                    [SimData(0, count=8, values=0, datatype=DataType.REGISTERS)],
                ),
                action=functools.partial(self._action, unit),
            )
            for unit in self._units
        ]
        self._server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=self._bus.device,
            baudrate=self._baudrate,
            parity=self._parity,
            trace_packet=self._trace_packet,
        )
        await self._server.serve_forever(background=True)
        return self._line.path

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        loop = asyncio.get_running_loop()
        for port in (self._line, self._bus):
            if port is not None and not port.closed:
                with contextlib.suppress(Exception):
                    loop.remove_reader(port.master)
                port.close()

    def silence(self, unit: int, silent: bool = True) -> None:
        (self.silent.add if silent else self.silent.discard)(unit)

    def corrupt(self, unit: int, corrupt: bool = True) -> None:
        (self.corrupting.add if corrupt else self.corrupting.discard)(unit)

    def busy(self, unit: int, busy: bool = True) -> None:
        (self.busy_units.add if busy else self.busy_units.discard)(unit)

    def statistics(self) -> ModbusDeviceStatistics:
        return ModbusDeviceStatistics(dict(self._responses), dict(self._suppressed), dict(self._corrupted))

    # ----------------------------------------------------------------- the bus

    def _pump(self, src: int, dst: int) -> None:
        data = read_available(src)
        if data:
            with contextlib.suppress(BlockingIOError):
                os.write(dst, data)  # frames are a few bytes and the other side reads at once

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        unit = data[0]
        if unit in self.silent or unit not in self._units:
            self._suppressed[unit] = self._suppressed.get(unit, 0) + 1
            return b""
        self._responses[unit] = self._responses.get(unit, 0) + 1
        if unit in self.corrupting:
            self._corrupted[unit] = self._corrupted.get(unit, 0) + 1
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: Any,
    ) -> Any:
        from pymodbus.constants import ExcCodes

        if unit in self.busy_units:
            return ExcCodes.DEVICE_BUSY
        state = self._units[unit]
        now = self._clock.monotonic()
        state.sample(self._clock.wall_ms(), now)
        if function_code in (3, 4):
            values = state.holding(now) if function_code == 3 else state.inputs()
            registers[start_address : start_address + len(values)] = values
        elif function_code == 1:
            registers[0] = 0b01 | (0b10 if state.warn else 0)
        elif function_code == 2:
            registers[0] = 0b1
        return None
