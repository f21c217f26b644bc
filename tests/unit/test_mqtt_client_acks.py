"""In-order PUBACKs: only the settled prefix goes out, in receive order (MQTT 3.1.1 section 4.6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgestream.edge.mqtt.client_acks import AckQueue


def test_out_of_order_durability_acks_in_receive_order() -> None:
    q = AckQueue()
    t = [q.receive(mid, 1) for mid in (10, 11, 12, 13)]
    q.settle(t[2], True)
    q.settle(t[1], True)
    assert q.ready() == []  # 10 is not durable yet: nothing may be acked
    assert len(q) == 4 and q.pending == 2
    q.settle(t[0], True)
    assert q.ready() == [(10, 1), (11, 1), (12, 1)]
    assert len(q) == 1
    q.settle(t[3], True)
    assert q.ready() == [(13, 1)]
    assert len(q) == 0 and q.pending == 0


def test_a_never_ack_blocks_everything_after_it() -> None:
    q = AckQueue()
    a, b, c = q.receive(1, 1), q.receive(2, 1), q.receive(3, 1)
    q.settle(a, True)
    q.settle(b, False)  # sink closing: must come back after restart
    q.settle(c, True)
    assert q.ready() == [(1, 1)]
    assert q.blocked
    assert q.ready() == []
    assert len(q) == 2


def test_tickets_stay_valid_across_pops() -> None:
    q = AckQueue()
    first = q.receive(1, 1)
    q.settle(first, True)
    assert q.ready() == [(1, 1)]
    second = q.receive(2, 1)
    assert second == first + 1
    q.settle(second, True)
    assert q.ready() == [(2, 1)]


def test_settling_twice_or_an_unknown_ticket_is_a_bug() -> None:
    q = AckQueue()
    t = q.receive(5, 1)
    q.settle(t, True)
    with pytest.raises(ValueError, match="twice"):
        q.settle(t, True)
    q.ready()
    with pytest.raises(ValueError, match="not in the queue"):
        q.settle(t, True)
    with pytest.raises(ValueError, match="not in the queue"):
        q.settle(t + 5, True)


def test_qos_is_carried_to_the_ack() -> None:
    q = AckQueue()
    q.settle(q.receive(7, 2), True)
    assert q.ready() == [(7, 2)]


@given(st.permutations(list(range(30))), st.lists(st.booleans(), min_size=30, max_size=30))
def test_any_settle_order_yields_acks_in_receive_order(order: list[int], drain_after: list[bool]) -> None:
    q = AckQueue()
    tickets = [q.receive(1000 + i, 1) for i in range(30)]
    acked: list[int] = []
    settled: set[int] = set()
    for i, drain in zip(order, drain_after, strict=True):
        q.settle(tickets[i], True)
        settled.add(i)
        if drain:
            out = q.ready()
            acked += [mid for mid, _ in out]
            # Everything acked so far is a prefix of the receive order and was settled.
            assert acked == [1000 + k for k in range(len(acked))]
            assert all(m - 1000 in settled for m in acked)
    acked += [mid for mid, _ in q.ready()]
    assert acked == [1000 + k for k in range(30)]
    assert len(q) == 0
