"""What drains first and how fast: the bandwidth cap (a token bucket) and the scheduler. Pure: the caller passes time.

After an outage every partition has a backlog, and the WAN (or the cap) cannot take them all at once. Each turn the
mirror asks `plan()` which partitions may send how much:

1. The budget of the turn is what the token bucket holds (bytes of key + value + headers), or unlimited without a
   cap; the in-flight window (records) bounds it too.
2. Partitions are *live* (caught up: their backlog fits in one batch, or the last record they sent is younger than
   `live_age_s`) or *backfill* (everything else).
3. Live partitions are served first, with up to `live_share` of the budget when backfill is waiting too (all of it
   when not): new readings keep flowing while a day of backlog drains, so dashboards fed from Kafka stay current.
4. Backfill gets the rest, strictly by topic priority (an `alarms` topic drains before `telemetry`), round robin
   among equal priorities. Budget a class leaves unused stays in the bucket for the next turn.

Grants are upper bounds: the mirror reads up to `max_bytes` and charges the bucket what it actually sent (at least
one record per grant, so a record larger than a small grant still goes; the bucket runs into debt and the next
turns wait). The long-run rate is the cap either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


class TokenBucket:
    """Bytes per second with a burst. `rate <= 0` means unlimited. Time is passed in (monotonic seconds)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = float(rate)
        self.burst = float(max(burst, 1.0))
        self.tokens = self.burst
        self._last = now

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def refill(self, now: float) -> None:
        if now > self._last:
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = max(self._last, now)

    def available(self, now: float) -> float:
        if self.unlimited:
            return math.inf
        self.refill(now)
        return self.tokens

    def set_rate(self, rate: float, burst: float, now: float) -> None:
        """A new cap (a config reload): what was earned at the old rate is kept, up to the new burst, and a debt
        stays a debt, so changing the cap never lets a burst through that neither cap would allow."""
        if not self.unlimited:
            self.refill(now)
        self.rate = float(rate)
        self.burst = float(max(burst, 1.0))
        self.tokens = min(self.tokens, self.burst)
        self._last = max(self._last, now)

    def take(self, nbytes: int) -> None:
        """Charge what was sent. May go negative: the debt is paid by waiting."""
        if not self.unlimited:
            self.tokens -= nbytes

    def wait_s(self, now: float) -> float:
        """Seconds until the bucket holds a positive balance again (0 if it does)."""
        if self.unlimited:
            return 0.0
        self.refill(now)
        if self.tokens > 0:
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class Candidate:
    key: int  # the caller's index of the partition
    priority: int
    live: bool
    records: int  # how many it may send now (backlog, bounded by the cursor's rules)


@dataclass(frozen=True, slots=True)
class Grant:
    key: int
    max_records: int
    max_bytes: float  # math.inf without a cap


def plan(candidates: Sequence[Candidate], *, budget_bytes: float, room_records: int, batch_records: int,
         batch_bytes: int, live_share: float, turn: int = 0) -> list[Grant]:
    """Who sends how much this turn (see the module docstring). `turn` rotates equal priorities."""
    if budget_bytes <= 0 or room_records <= 0 or not candidates:
        return []
    live = [c for c in candidates if c.live and c.records > 0]
    back = [c for c in candidates if not c.live and c.records > 0]
    grants: list[Grant] = []
    room = room_records
    budget = budget_bytes
    for group, share in ((live, live_share if back else 1.0), (back, 1.0)):
        if not group or room <= 0 or budget <= 0:
            continue
        cap = budget * share if math.isfinite(budget) else math.inf
        spent = 0.0
        for c in _ordered(group, turn):
            if room <= 0 or spent >= cap:
                break
            nbytes = min(float(batch_bytes), cap - spent)
            nrec = min(batch_records, c.records, room)
            grants.append(Grant(c.key, nrec, nbytes))
            spent += nbytes
            room -= nrec
        budget -= spent
    return grants


def _ordered(group: list[Candidate], turn: int) -> list[Candidate]:
    """Highest priority first; inside one priority, start at a different partition every turn (round robin)."""
    out: list[Candidate] = []
    for prio in sorted({c.priority for c in group}, reverse=True):
        level = sorted((c for c in group if c.priority == prio), key=lambda c: c.key)
        k = turn % len(level)
        out.extend(level[k:] + level[:k])
    return out


class RateMeter:
    """Events per second over a sliding window, from cumulative counts sampled now and then (drain rate, ETA)."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._samples: list[tuple[float, int]] = []

    def sample(self, now: float, total: int) -> None:
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.pop(0)

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def eta_s(lag_records: int, drain_per_s: float, ingest_per_s: float) -> float:
    """Seconds until the backlog is gone at the current rates: 0 when there is none, inf when it does not shrink."""
    if lag_records <= 0:
        return 0.0
    net = drain_per_s - ingest_per_s
    return lag_records / net if net > 0 else math.inf
