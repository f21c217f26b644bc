"""Reconnect delays: exponential growth with jitter, capped. Pure: no clock, no sleep; the caller waits.

Delay n (n = 0, 1, 2, ... failed attempts in a row) is drawn uniformly from [cap_n / 2, cap_n] where
cap_n = min(max_s, min_s * factor**n) ("equal jitter"). Half of the window is fixed so a broker that is down
is not hammered at near-zero intervals; the other half is random so a fleet of gateways that lost the same
broker does not reconnect in lockstep when it comes back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    min_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0  # failures since the last reset

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(f"backoff needs 0 < min_s <= max_s, got min_s={self.min_s} max_s={self.max_s}")
        if self.factor < 1:
            raise ValueError(f"backoff factor must be >= 1, got {self.factor}")

    def cap(self, attempt: int) -> float:
        """The upper bound of the delay after `attempt` failures in a row."""
        # Exponent clamped: factor**n overflows a float long before a gateway gives up.
        return min(self.max_s, self.min_s * self.factor ** min(attempt, 64))

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        cap = self.cap(self.attempts)
        self.attempts += 1
        return self.rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        """A connection succeeded (and stayed up): start again from `min_s`."""
        self.attempts = 0
