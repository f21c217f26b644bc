"""The mirror's sans-I/O cursor (acked prefix, generations, rewind, poison isolation) and start-up reconcile."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgestream.gateway.mirror.core import MirrorCursor, reconcile
from edgestream.gateway.mirror.errors import DeliveryError


def cursor(start: int = 0) -> MirrorCursor:
    return MirrorCursor("t", 0, "ab" * 16, 1, acked=start)


def err(name: str = "_MSG_TIMED_OUT") -> DeliveryError:
    return DeliveryError(name, "test")


def test_in_order_reports_advance_the_prefix() -> None:
    c = cursor(10)
    gen = c.sent(10, 5)
    assert (c.next_send, c.in_flight, c.acked) == (15, 5, 10)
    for off in range(10, 15):
        assert c.delivered(off, gen)
    assert (c.acked, c.in_flight, c.idle) == (15, 0, True)
    assert c.acked_records == 5


def test_out_of_order_reports_wait_for_the_gap_below() -> None:
    c = cursor()
    gen = c.sent(0, 5)
    for off in (3, 1, 4):
        c.delivered(off, gen)
    assert c.acked == 0, "nothing below the missing offset 0 may count"
    c.delivered(0, gen)
    assert c.acked == 2  # 0 and 1; 2 still missing
    c.delivered(2, gen)
    assert c.acked == 5


def test_duplicate_and_unknown_reports_are_counted_not_trusted() -> None:
    c = cursor()
    gen = c.sent(0, 3)
    c.delivered(0, gen)
    c.delivered(0, gen)  # twice
    c.delivered(7, gen)  # never sent in this generation
    c.delivered(2, gen)
    c.delivered(2, gen)
    assert c.acked == 1
    assert c.duplicate_reports == 3


def test_a_failure_stops_feeding_and_rewind_goes_to_the_persisted_prefix() -> None:
    c = cursor()
    gen = c.sent(0, 10)
    for off in range(4):
        c.delivered(off, gen)
    c.persisted_at(3, 1)
    c.failed(4, gen, err())
    for off in range(5, 10):
        c.delivered(off, gen)
    assert c.acked == 4 and c.sendable(100) == 0, "a pending failure stops feeding"
    c.rewind()
    assert (c.next_send, c.acked, c.generation, c.in_flight) == (3, 3, gen + 1, 0)
    assert c.sendable(100) == 97
    # Reports of the old generation (purged records) are ignored either way.
    assert not c.delivered(3, gen)
    assert not c.failed(3, gen, err("_PURGE_QUEUE"))
    assert c.acked == 3 and not c.failures


def test_persisting_ahead_of_the_acks_is_refused() -> None:
    c = cursor()
    gen = c.sent(0, 3)
    c.delivered(0, gen)
    assert c.persist_due() == 1
    with pytest.raises(ValueError, match="ahead of the acks"):
        c.persisted_at(2, 1)
    c.persisted_at(1, 1)
    assert c.persist_due() is None


def test_a_poison_suspect_is_sent_alone() -> None:
    c = cursor()
    gen = c.sent(0, 6)
    for off in range(2):
        c.delivered(off, gen)
    for off in range(2, 6):  # a whole batch refused because one record in it is too large
        c.failed(off, gen, err("MSG_SIZE_TOO_LARGE"))
    c.suspect_poison()
    c.persisted_at(2, 1)
    c.rewind()
    assert c.suspect == 2
    assert c.sendable(100) == 1, "the suspect goes alone, once nothing before it is in flight"
    gen = c.sent(2, 1)
    assert c.sendable(100) == 0, "nothing after the suspect while it is in flight"
    c.failed(2, gen, err("MSG_SIZE_TOO_LARGE"))
    assert c.dead_lettered(2)
    assert (c.acked, c.suspect, c.dead_letters, c.failures) == (3, None, 1, [])
    assert c.sendable(100) == 97


def test_a_suspect_that_goes_through_alone_was_only_a_neighbour() -> None:
    c = cursor()
    c.suspect = 5
    assert c.sendable(100) == 5  # up to the suspect
    gen = c.sent(0, 5)
    assert c.sendable(100) == 0  # the suspect waits until 0..4 are confirmed
    for off in range(5):
        c.delivered(off, gen)
    assert c.sendable(100) == 1
    gen = c.sent(5, 1)
    c.delivered(5, gen)
    assert c.suspect is None and c.sendable(100) == 94


def test_skipping_deleted_records_only_when_nothing_is_in_flight() -> None:
    c = cursor()
    gen = c.sent(0, 2)
    with pytest.raises(ValueError, match="in flight"):
        c.skip_to(50, "deleted")
    c.delivered(0, gen)
    c.delivered(1, gen)
    assert c.skip_to(50, "deleted") == 48
    assert (c.acked, c.next_send, c.skipped) == (50, 50, {"deleted": 48})


def test_operator_reset_moves_every_position_and_forgets_in_flight() -> None:
    c = cursor(100)
    gen = c.sent(100, 10)
    c.reset(20)
    assert (c.acked, c.persisted, c.next_send, c.in_flight) == (20, 20, 20, 0)
    assert not c.delivered(100, gen)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.randoms(use_true_random=False), st.data())
def test_prefix_is_exactly_the_first_unconfirmed_offset(n: int, rng, data) -> None:  # type: ignore[no-untyped-def]
    """Whatever order reports come in, and whichever fail, the prefix stops at the lowest offset not confirmed."""
    c = cursor()
    gen = c.sent(0, n)
    failed = set(data.draw(st.sets(st.integers(0, n - 1), max_size=3)))
    lost = set(data.draw(st.sets(st.integers(0, n - 1), max_size=3)))  # no report at all (yet)
    order = [o for o in range(n) if o not in lost]
    rng.shuffle(order)
    for off in order:
        if off in failed:
            c.failed(off, gen, err())
        else:
            c.delivered(off, gen)
    missing = sorted(failed | lost)
    assert c.acked == (missing[0] if missing else n)
    c.persisted_at(c.acked, 1)
    c.rewind()
    assert c.next_send == c.acked == (missing[0] if missing else n)


# -- reconcile (DESIGN 6, step 6) ------------------------------------------------------------------------------


def epochs(table: dict[int, int]):  # type: ignore[no-untyped-def]
    return lambda off: table.get(off)


def test_no_cursor_starts_at_the_log_start() -> None:
    r = reconcile(None, "", 0, log_id="aa", epoch=1, log_start=5, end=10, epoch_at=epochs({}))
    assert (r.offset, r.action) == (5, "new")


def test_a_cursor_of_another_log_starts_at_the_log_start() -> None:
    r = reconcile(70, "bb", 2, log_id="aa", epoch=0, log_start=0, end=3, epoch_at=epochs({}))
    assert (r.offset, r.action) == (0, "log_recreated")


def test_a_cursor_ahead_of_the_log_is_clamped_and_says_whether_the_epoch_protects_new_records() -> None:
    r = reconcile(150, "aa", 1, log_id="aa", epoch=2, log_start=0, end=100, epoch_at=epochs({}))
    assert (r.offset, r.action, r.epoch_raise_needed) == (100, "ahead_of_log", False)
    r = reconcile(150, "aa", 1, log_id="aa", epoch=1, log_start=0, end=100, epoch_at=epochs({}))
    assert (r.offset, r.action, r.epoch_raise_needed) == (100, "ahead_of_log", True)
    assert "epoch" in r.detail and "100..149" in r.detail


def test_a_cursor_below_the_log_start_counts_what_retention_deleted() -> None:
    r = reconcile(10, "aa", 1, log_id="aa", epoch=1, log_start=40, end=100, epoch_at=epochs({}))
    assert (r.offset, r.action, r.skipped) == (40, "deleted", 30)


def test_records_rewritten_after_the_cursor_was_saved_are_found_by_binary_search() -> None:
    table = {o: (1 if o < 63 else 2) for o in range(100)}
    calls: list[int] = []

    def epoch_at(off: int) -> int | None:
        calls.append(off)
        return table.get(off)

    r = reconcile(80, "aa", 1, log_id="aa", epoch=2, log_start=0, end=100, epoch_at=epoch_at)
    assert (r.offset, r.action) == (63, "rewritten")
    assert len(calls) <= 9


def test_a_plain_cursor_resumes_where_it_was() -> None:
    table = {o: 1 for o in range(100)}
    r = reconcile(80, "aa", 1, log_id="aa", epoch=2, log_start=0, end=100, epoch_at=epochs(table))
    assert (r.offset, r.action) == (80, "")
    r = reconcile(80, "", 0, log_id="aa", epoch=0, log_start=0, end=100, epoch_at=epochs(table))
    assert (r.offset, r.action) == (80, "")


def test_report_is_the_bound_delivery_callback() -> None:
    """What the producer calls per record: (generation, offset) bound in, (error, message) from the report."""
    c = cursor()
    gen = c.sent(0, 4)
    c.report(gen, 1, None, object())  # out of order
    c.report(gen, 0, None, object())
    assert c.acked == 2
    c.report(gen, 2, "broker error", object())  # kept as it came, for the shell to describe
    assert c.unreported_errors == [(2, gen, "broker error")] and c.acked == 2 and c.in_flight == 2
    c.report(gen - 1, 3, None, object())  # an older generation's: ignored
    assert c.acked == 2 and c.in_flight == 2 and c.reports == 4
