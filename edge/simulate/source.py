"""A source inside the gateway that makes factory telemetry: `type = "simulated"` in the config.

For demos, benchmarks and idle-RSS measurements without any broker or device. It behaves like a real source:
readings go through the sink, at most `window` are unacknowledged at a time (so it slows down when the log
blocks), and it counts what it made.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import msgspec

from ..clock import Clock, SystemClock
from ..errors import ConfigError, RecordRejectedError, SinkClosedError
from ..source import Reading, Sink
from .telemetry import fleet, malformed


class SimulatedSourceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    sensors: int = 20
    rate: float = 50.0  # readings per second, all sensors together
    malformed_rate: float = 0.0  # share of payloads that are broken on purpose
    seed: int = 0
    window: int = 1000  # unacknowledged readings at most
    topic_prefix: str = "factory"

    def __post_init__(self) -> None:
        if not 1 <= self.sensors <= 100_000:
            raise ConfigError(f"sensors = {self.sensors}: expected 1 to 100000", key="sensors")
        if not 0 < self.rate <= 1_000_000:
            raise ConfigError(f"rate = {self.rate}: expected more than 0 and at most 1000000", key="rate")
        if not 0 <= self.malformed_rate <= 1:
            raise ConfigError(f"malformed_rate = {self.malformed_rate}: expected 0 to 1", key="malformed_rate")
        if not 1 <= self.window <= 1_000_000:
            raise ConfigError(f"window = {self.window}: expected 1 to 1000000", key="window")


@dataclass(frozen=True, slots=True)
class SimulatedSourceStatistics:
    generated: int
    acked: int
    rejected: int
    malformed: int
    in_flight: int


class SimulatedSource:
    def __init__(self, name: str, settings: SimulatedSourceSettings, sink: Sink, clock: Clock | None = None) -> None:
        self.name = name
        self.settings = settings
        self.sink = sink
        self.clock = clock or SystemClock()
        self._stopping = asyncio.Event()
        self._generated = self._acked = self._rejected = self._malformed = 0
        self._window = asyncio.Semaphore(settings.window)
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        s = self.settings
        sensors = fleet(s.sensors, seed=s.seed)
        rng = random.Random(s.seed)
        tick = max(0.01, 1 / s.rate)  # pace in ticks of at least 10 ms
        per_tick = s.rate * tick
        carry = 0.0
        i = 0
        next_t = self.clock.monotonic()
        while not self._stopping.is_set():
            carry += per_tick
            n = int(carry)
            carry -= n
            ts = self.clock.wall_ms()
            for _ in range(n):
                sensor = sensors[i % len(sensors)]
                i += 1
                sample = sensor.sample(ts)
                if sample is None:
                    continue
                if s.malformed_rate and rng.random() < s.malformed_rate:
                    payload = malformed(rng)
                    self._malformed += 1
                else:
                    payload = sample.to_json()
                topic = f"{s.topic_prefix}/{sensor.sensor_id}"
                await self._window.acquire()
                if self._stopping.is_set():
                    self._window.release()
                    break
                reading = Reading(self.name, payload, ts, {"topic": topic, "sensor": sensor.sensor_id})
                self._generated += 1
                task = asyncio.ensure_future(self._submit(reading))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            next_t += tick
            delay = next_t - self.clock.monotonic()
            if delay < -1.0:  # fell far behind (the log blocked): do not burst to catch up
                next_t = self.clock.monotonic()
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, delay)) if delay > 0 else None
            except TimeoutError:
                pass

    async def _submit(self, reading: Reading) -> None:
        try:
            await self.sink.submit(reading)
            self._acked += 1
        except RecordRejectedError:
            self._rejected += 1
        except SinkClosedError:
            pass
        finally:
            self._window.release()

    async def stop(self) -> None:
        self._stopping.set()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=10)

    def statistics(self) -> SimulatedSourceStatistics:
        return SimulatedSourceStatistics(self._generated, self._acked, self._rejected, self._malformed,
                                         len(self._in_flight))
