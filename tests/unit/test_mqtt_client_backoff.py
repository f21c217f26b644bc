"""Reconnect backoff: bounds, growth, cap, jitter, reset; deterministic with a seeded RNG."""

from __future__ import annotations

import random

import pytest

from edgestream.edge.mqtt.backoff import Backoff


def test_delays_stay_within_half_cap_and_cap_and_grow_to_the_maximum() -> None:
    b = Backoff(min_s=0.5, max_s=8.0, rng=random.Random(1))
    caps = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for cap in caps:
        d = b.next_delay()
        assert cap / 2 <= d <= cap
    assert b.attempts == len(caps)


def test_same_seed_same_delays_different_seed_different_delays() -> None:
    one, two, other = (Backoff(0.5, 30, rng=random.Random(s)) for s in (7, 7, 8))
    seq1 = [one.next_delay() for _ in range(10)]
    seq2 = [two.next_delay() for _ in range(10)]
    seq3 = [other.next_delay() for _ in range(10)]
    assert seq1 == seq2
    assert seq1 != seq3


def test_jitter_spreads_a_fleet() -> None:
    """Gateways that lost the same broker do not all come back at the same instant."""
    delays = {round(Backoff(1, 60, rng=random.Random(seed)).next_delay(), 6) for seed in range(50)}
    assert len(delays) > 40
    assert min(delays) >= 0.5 and max(delays) <= 1.0


def test_reset_starts_again_from_the_minimum() -> None:
    b = Backoff(0.5, 30, rng=random.Random(3))
    for _ in range(20):
        b.next_delay()
    assert b.next_delay() >= 15
    b.reset()
    assert b.attempts == 0
    assert b.next_delay() <= 0.5


def test_huge_attempt_counts_do_not_overflow() -> None:
    b = Backoff(0.5, 30, rng=random.Random(0), attempts=10_000)
    assert 15 <= b.next_delay() <= 30


@pytest.mark.parametrize(("min_s", "max_s", "factor"), [(0, 1, 2), (2, 1, 2), (-1, 1, 2), (0.5, 1, 0.5)])
def test_invalid_settings_are_refused(min_s: float, max_s: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(min_s, max_s, factor)
