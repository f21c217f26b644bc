"""Realistic factory telemetry: temperatures, vibration, motor current, counters.

Each `Sensor` is a small deterministic process (seeded): a base level, slow drift, Gaussian noise, rare spikes,
dropouts (the sensor skips readings for a while) and, now and then, a malformed payload, because real lines
produce all of these and the gateway must handle them. Pure: no clock, no I/O; callers pass the time.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

# kind -> (unit, base, noise sigma, drift per hour, spike size)
KINDS: dict[str, tuple[str, float, float, float, float]] = {
    "temperature": ("degC", 41.0, 0.35, 1.5, 12.0),
    "vibration": ("mm/s", 2.2, 0.4, 0.3, 9.0),
    "current": ("A", 13.5, 0.6, 0.8, 20.0),
    "pressure": ("bar", 6.1, 0.05, 0.1, 2.5),
    "counter": ("parts", 0.0, 0.0, 0.0, 0.0),
}


@dataclass(frozen=True, slots=True)
class Sample:
    sensor_id: str
    kind: str
    unit: str
    value: float
    ts_ms: int
    status: str
    seq: int

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "sensor": self.sensor_id,
                "kind": self.kind,
                "ts": self.ts_ms,
                "value": self.value,
                "unit": self.unit,
                "status": self.status,
                "seq": self.seq,
            },
            separators=(",", ":"),
        ).encode()

    def to_csv(self) -> bytes:
        return f"{self.sensor_id},{self.kind},{self.ts_ms},{self.value},{self.unit},{self.status},{self.seq}".encode()


class Sensor:
    """One simulated sensor. `sample(ts_ms)` returns the next reading or None during a dropout."""

    def __init__(
        self,
        sensor_id: str,
        kind: str,
        *,
        seed: int = 0,
        dropout_rate: float = 0.002,
        spike_rate: float = 0.001,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown sensor kind {kind!r}; one of {sorted(KINDS)}")
        self.sensor_id = sensor_id
        self.kind = kind
        self.unit, self._base, self._sigma, self._drift, self._spike = KINDS[kind]
        self._rng = random.Random(f"{seed}:{sensor_id}")
        self._dropout_rate = dropout_rate
        self._spike_rate = spike_rate
        self._dropout_left = 0
        self._seq = 0
        self._count = 0.0
        self._phase = self._rng.random() * 2 * math.pi

    def sample(self, ts_ms: int) -> Sample | None:
        rng = self._rng
        if self._dropout_left > 0:
            self._dropout_left -= 1
            return None
        if rng.random() < self._dropout_rate:
            self._dropout_left = rng.randint(3, 30)
            return None
        self._seq += 1
        hours = ts_ms / 3_600_000
        status = "ok"
        if self.kind == "counter":
            self._count += rng.choice((0, 1, 1, 1, 2))
            value = self._count
        else:
            value = (
                self._base
                + self._drift * math.sin(hours * 2 * math.pi / 8 + self._phase)
                + rng.gauss(0.0, self._sigma)
            )
            if rng.random() < self._spike_rate:
                value += self._spike * (1 if rng.random() < 0.8 else -1)
                status = "warn"
        return Sample(self.sensor_id, self.kind, self.unit, round(value, 3), ts_ms, status, self._seq)


def fleet(count: int, *, seed: int = 0, lines: int = 4) -> list[Sensor]:
    """`count` sensors spread over production lines, kinds in a fixed rotation: line1/temperature-0, ..."""
    kinds = list(KINDS)
    return [
        Sensor(f"line{i % lines + 1}/{kinds[i % len(kinds)]}-{i}", kinds[i % len(kinds)], seed=seed)
        for i in range(count)
    ]


def malformed(rng: random.Random) -> bytes:
    """One of the broken payloads real devices send: truncated JSON, binary noise, an empty payload."""
    choice = rng.randrange(4)
    if choice == 0:
        return b'{"sensor":"line1/temperature-0","ts":17000'
    if choice == 1:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    if choice == 2:
        return b""
    return b"NaN,NaN,,\xff\xfe"


def stream(sensors: list[Sensor], start_ms: int, period_ms: int, *, malformed_rate: float = 0.0,
           seed: int = 0) -> Iterator[tuple[Sensor, bytes]]:
    """Endless round-robin of (sensor, payload): each tick every sensor reports once (unless dropped out)."""
    rng = random.Random(seed)
    ts = start_ms
    while True:
        for s in sensors:
            sample = s.sample(ts)
            if sample is None:
                continue
            if malformed_rate and rng.random() < malformed_rate:
                yield s, malformed(rng)
            else:
                yield s, sample.to_json()
        ts += period_ms
