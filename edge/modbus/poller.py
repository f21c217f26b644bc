"""Modbus RTU polling as a source: one `Reading` per unit per poll.

One poll, at each tick of `poll_interval_s` on the injected clock:

1. If the port is closed, open it; if that fails, count it and wait for the next tick (the tick is the retry).
2. For each unit in order, read its blocks in order. The first failing block ends that unit's poll (counted by
   unit and reason): a unit that stopped answering costs one timeout per poll, not one per block, and the
   units after it are still polled in the same tick.
3. A unit whose blocks all read becomes a Reading: payload is JSON `{"unit": 1, "ts": <ms>, "values": {name:
   value | [values]}, "raw": {name: [registers]}}` (NaN and infinities as null), fields {"port": ..., "unit":
   "1"}, timestamp from the clock when the unit's poll began.
4. Submissions stay in flight up to `window`; at the window, polling waits for the sink instead of queueing.

A tick that comes while the previous poll still runs is skipped and counted as an overrun: the schedule stays
on its grid instead of bunching up after a slow poll.
"""

from __future__ import annotations

import asyncio
import logging
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from ..clock import Clock, SystemClock, sleep_unless
from ..errors import DecodeError, RecordRejectedError, SinkClosedError, SourceUnavailableError
from ..source import Reading, Sink
from .client import ModbusClient, ModbusReadError
from .registers import decode_block
from .settings import ModbusSourceSettings, UnitSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UnitStatistics:
    unit: int
    polls: int  # polls attempted
    readings: int  # polls that produced a reading
    errors: Mapping[str, int]  # failed polls by reason: timeout, crc, exception, disconnected, decode, ...
    last_reading_ms: int  # wall time of the last good poll, 0 if none yet


@dataclass(frozen=True, slots=True)
class ModbusPollerStatistics:
    port: str
    connected: bool
    polls: int
    readings: int
    overruns: int
    connect_failures: int
    in_flight: int
    rejected: int
    sink_errors: int
    units: tuple[UnitStatistics, ...]


class _UnitState:
    __slots__ = ("errors", "last_ms", "polls", "readings", "settings")

    def __init__(self, settings: UnitSettings) -> None:
        self.settings = settings
        self.polls = 0
        self.readings = 0
        self.errors: dict[str, int] = {}
        self.last_ms = 0


class ModbusPoller:
    def __init__(
        self,
        name: str,
        settings: ModbusSourceSettings,
        sink: Sink,
        *,
        clock: Clock | None = None,
        client: ModbusClient | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._sink = sink
        self._clock = clock or SystemClock()
        if client is None:
            from .client import PymodbusRtuClient

            client = PymodbusRtuClient(settings)
        self._client = client
        self._units = [_UnitState(u) for u in settings.units]
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._stop_requested = asyncio.Event()
        self._finished = asyncio.Event()
        self._room = asyncio.Event()
        self._running = False
        self._polls = 0
        self._readings = 0
        self._overruns = 0
        self._connect_failures = 0
        self._rejected = 0
        self._sink_errors = 0

    async def run(self) -> None:
        if self._running:
            raise RuntimeError("ModbusPoller.run() is already running")
        self._running = True
        try:
            interval = self.settings.poll_interval_s
            due = self._clock.monotonic()
            while not self._stop_requested.is_set():
                await self.poll_once()
                due += interval
                now = self._clock.monotonic()
                if now >= due:
                    missed = math.floor((now - due) / interval) + 1
                    self._overruns += missed
                    due += missed * interval
                if not await self._sleep_unless_stopped(due - now):
                    break
        finally:
            self._client.close()
            self._running = False
            self._finished.set()

    async def stop(self) -> None:
        """Stop after the poll in progress; returns when `run` has returned. Readings already submitted are
        left to the sink (a Modbus unit gets no acknowledgement)."""
        self._stop_requested.set()
        if self._running:
            await self._finished.wait()

    async def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep on the injected clock; False if `stop` came first."""
        return await sleep_unless(self._clock, seconds, self._stop_requested)

    async def _room_or_stop(self) -> bool:
        """Wait until fewer than `window` readings are in flight; False if `stop` came first."""
        while len(self._in_flight) >= self.settings.window and not self._stop_requested.is_set():
            self._room.clear()
            room = asyncio.ensure_future(self._room.wait())
            stopper = asyncio.ensure_future(self._stop_requested.wait())
            try:
                await asyncio.wait((room, stopper), return_when=asyncio.FIRST_COMPLETED)
            finally:
                room.cancel()
                stopper.cancel()
        return not self._stop_requested.is_set()

    async def poll_once(self) -> None:
        """One pass over every unit (steps 1-4 above)."""
        self._polls += 1
        client = self._client
        if not client.connected:
            try:
                await client.connect()
            except SourceUnavailableError as exc:
                self._connect_failures += 1
                if self._connect_failures == 1 or self._connect_failures % 60 == 0:
                    log.warning("%s: %s", self.name, exc)
                return
        for state in self._units:
            if not await self._room_or_stop():
                return
            try:
                await self._poll_unit(state)
            except ModbusReadError as exc:
                state.errors[exc.reason] = state.errors.get(exc.reason, 0) + 1
                if exc.reason == "disconnected":
                    log.warning("%s: %s lost: %s", self.name, self.settings.port, exc.detail)
                    client.close()
                    return

    async def _poll_unit(self, state: _UnitState) -> None:
        unit = state.settings.unit
        state.polls += 1
        ts = self._clock.wall_ms()
        values: dict[str, Any] = {}
        raw: dict[str, list[int]] = {}
        for block in state.settings.registers:
            words = await self._client.read(unit, block.function, block.address, block.size)
            try:
                values[block.name] = decode_block(block, words)
            except DecodeError as exc:
                raise ModbusReadError(unit, "decode", exc.detail) from None
            raw[block.name] = [int(w) for w in words]
        # msgspec writes NaN and infinities (a float32 register may hold them) as null: JSON has neither.
        payload = msgspec.json.encode({"unit": unit, "ts": ts, "values": values, "raw": raw})
        reading = Reading(
            self.name, payload, ts, types.MappingProxyType({"port": self.settings.port, "unit": str(unit)})
        )
        state.readings += 1
        state.last_ms = ts
        self._readings += 1
        self._submit(reading)

    def _submit(self, reading: Reading) -> None:
        try:
            future: asyncio.Future[Any] = asyncio.ensure_future(self._sink.submit(reading))
        except Exception as exc:  # a sink that raises instead of failing its awaitable: same accounting
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        self._in_flight.add(future)
        future.add_done_callback(self._settled)

    def _settled(self, future: asyncio.Future[Any]) -> None:
        self._in_flight.discard(future)
        self._room.set()
        if future.cancelled():
            self._sink_errors += 1
            return
        exc = future.exception()
        if exc is None:
            return
        if isinstance(exc, RecordRejectedError):
            self._rejected += 1
        elif isinstance(exc, SinkClosedError):
            self._stop_requested.set()
        else:
            self._sink_errors += 1
            log.error("%s: the sink failed to store a reading", self.name, exc_info=exc)

    def statistics(self) -> ModbusPollerStatistics:
        return ModbusPollerStatistics(
            port=self.settings.port,
            connected=self._client.connected,
            polls=self._polls,
            readings=self._readings,
            overruns=self._overruns,
            connect_failures=self._connect_failures,
            in_flight=len(self._in_flight),
            rejected=self._rejected,
            sink_errors=self._sink_errors,
            units=tuple(
                UnitStatistics(s.settings.unit, s.polls, s.readings, types.MappingProxyType(dict(s.errors)), s.last_ms)
                for s in self._units
            ),
        )
