"""Bandwidth cap (token bucket), the scheduler's priorities and live share, drain rate and ETA: pure functions."""

from __future__ import annotations

import math

from edgestream.gateway.mirror.flow import Candidate, RateMeter, TokenBucket, eta_s, plan


def test_token_bucket_holds_the_rate_over_time_with_debt() -> None:
    b = TokenBucket(rate=1000, burst=500, now=0.0)
    assert b.available(0.0) == 500
    b.take(1200)  # a record larger than what is there: allowed, paid back by waiting
    assert b.available(0.0) == -700
    assert math.isclose(b.wait_s(0.0), 0.701)
    assert b.available(0.5) == -200
    assert b.available(10.0) == 500, "never more than the burst"
    # Over a long run, sent bytes track rate * time + burst.
    sent, now = 0, 10.0
    b = TokenBucket(rate=1000, burst=500, now=now)
    while now < 70.0:
        if b.available(now) > 0:
            b.take(300)
            sent += 300
        now += 0.01
    assert abs(sent - (60 * 1000 + 500)) <= 300


def test_unlimited_bucket() -> None:
    b = TokenBucket(rate=0, burst=0, now=0.0)
    assert b.unlimited and b.available(0.0) == math.inf and b.wait_s(0.0) == 0.0
    b.take(10**9)
    assert b.available(1.0) == math.inf


def grants(cands: list[Candidate], budget: float, room: int = 10_000, turn: int = 0, share: float = 0.25):  # type: ignore[no-untyped-def]
    return plan(cands, budget_bytes=budget, room_records=room, batch_records=1000, batch_bytes=100_000,
                live_share=share, turn=turn)


def test_backfill_drains_by_strict_priority() -> None:
    cands = [Candidate(0, 0, False, 5000), Candidate(1, 10, False, 5000), Candidate(2, 5, False, 5000)]
    got = grants(cands, budget=150_000)
    assert [g.key for g in got] == [1, 2]  # 100 KB to the highest, the remaining 50 KB to the next
    assert got[0].max_bytes == 100_000 and got[1].max_bytes == 50_000


def test_live_partitions_keep_their_share_while_backfill_waits() -> None:
    back = Candidate(0, 10, False, 100_000)  # a high-priority backlog
    live = Candidate(1, 0, True, 10)  # a caught-up, low-priority partition with fresh readings
    got = grants([back, live], budget=40_000)
    assert [g.key for g in got] == [1, 0], "live first, whatever the backfill's priority"
    assert got[0].max_bytes == 10_000 and got[1].max_bytes == 30_000
    # Without backfill waiting, live may use everything; without live, backfill does.
    assert grants([live], budget=40_000)[0].max_bytes == 40_000
    assert grants([back], budget=40_000)[0].max_bytes == 40_000


def test_equal_priorities_take_turns() -> None:
    cands = [Candidate(k, 0, False, 5000) for k in range(3)]
    firsts = [grants(cands, budget=50_000, turn=t)[0].key for t in range(6)]
    assert firsts == [0, 1, 2, 0, 1, 2]


def test_the_in_flight_room_bounds_records() -> None:
    cands = [Candidate(0, 0, True, 5000), Candidate(1, 0, False, 5000)]
    got = grants(cands, budget=math.inf, room=1500)
    assert [(g.key, g.max_records) for g in got] == [(0, 1000), (1, 500)]
    assert grants(cands, budget=math.inf, room=0) == []
    assert grants(cands, budget=0.0) == []


def test_drain_rate_and_eta() -> None:
    m = RateMeter(window_s=10)
    for t in range(0, 30):
        m.sample(float(t), t * 500)
    assert math.isclose(m.rate(), 500)
    assert eta_s(10_000, 500, 100) == 25.0
    assert eta_s(10_000, 100, 500) == math.inf
    assert eta_s(0, 0, 0) == 0.0
