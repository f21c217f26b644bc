"""The clock sources use: wall time for record timestamps, monotonic time and sleep for polling and backoff.

Tests pass a `ManualClock` and advance it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch (record timestamps)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, deadlines)."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""


class SystemClock:
    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told to. `sleep` returns once `advance` has moved time past its deadline."""

    def __init__(self, wall_ms: int = 1_700_000_000_000, monotonic: float = 0.0) -> None:
        self._wall_ms = wall_ms
        self._mono = monotonic
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def wall_ms(self) -> int:
        return self._wall_ms

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._mono + seconds, fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting in `sleep` (lets a test advance exactly when a task is parked)."""
        return sum(1 for _, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._wall_ms += int(seconds * 1000)
        due = [(d, f) for d, f in self._sleepers if d <= self._mono]
        self._sleepers = [(d, f) for d, f in self._sleepers if d > self._mono]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)


async def sleep_unless(clock: Clock, seconds: float, stop: asyncio.Event) -> bool:
    """Sleep `seconds` on `clock`; return early when `stop` is set. True if the full time passed."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        stopper.cancel()
    return not stop.is_set()
