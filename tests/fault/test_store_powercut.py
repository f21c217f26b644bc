"""Simulated power cuts (store.simfs) at random points of the write path, rolls, retention, cursor commits and
state writes, and during recovery itself.

- `fsync` mode: nothing acknowledged is ever lost; offsets stay contiguous; recovery raises the epoch so that no
  (log id, epoch, partition, offset) ever names two different records.
- `interval` mode: what is lost is bounded: only records acknowledged within the last interval before the cut;
  what recovery cut off is reported (bytes and records) and matches what disappeared from the files.
"""

from __future__ import annotations

import concurrent.futures
import random

import pytest

from edgestream.store import Log, LogBrokenError, LogClosedError, RecordIn, StoreError
from edgestream.store.cursors import CursorPosition
from edgestream.store.simfs import SimFileSystem
from tests.fault.store_support import DATA, FakeClock, Ledger, check_after_restart, open_sim, small_topic

pytestmark = pytest.mark.fault

TOPIC = "t"
FSYNC_SEEDS = range(60)
ROUNDS = 8


def _open_with_cuts(fs: SimFileSystem, clock: FakeClock, rng: random.Random) -> Log:
    """Open (recover), sometimes cutting the power in the middle of recovery first."""
    if rng.random() < 0.3:
        fs.cut_after(rng.randint(1, 25))
        try:
            log = open_sim(fs, clock, maintenance_ms=10, scrub_interval_ms=0)
        except OSError:
            pass  # the cut hit recovery: the next open recovers from that
        else:
            fs.cut_after(None)
            return log
    return open_sim(fs, clock, maintenance_ms=10, scrub_interval_ms=0)


def _segment_sizes(fs: SimFileSystem, partition: int) -> dict[str, int]:
    d = f"{DATA}/topics/{TOPIC}/{partition}"
    if not fs.isdir(d):
        return {}
    return {n: fs.file_size(f"{d}/{n}") for n in fs.listdir(d) if n.endswith(".log")}


def _commit_cursor(log: Log, part: int, rng: random.Random | None, cursor: dict[str, int]) -> None:
    """Move the required cursor "mirror" to a point near the end (the end itself without `rng`)."""
    p = log.partition(TOPIC, part)
    hw = p.high_watermark
    target = rng.randint(max(p.log_start, hw - 30), hw) if rng else hw
    if not cursor:  # the cursor is about to exist: from now on retention is bounded by it
        for q in log.topic(TOPIC).partitions:
            cursor[f"{q.index}:floor"] = q.log_start
    cursor[f"{part}:attempt"] = max(target, cursor.get(f"{part}:attempt", 0))
    log.cursors.commit("mirror", {(TOPIC, part): CursorPosition(target, p.log_id.hex(), p.epoch)}, required=True)
    cursor[str(part)] = target
    log.run_maintenance()


def _result(log: Log, part: int, fut: concurrent.futures.Future[int], cursor: dict[str, int]) -> int:
    for _ in range(1000):
        try:
            return fut.result(0.01)
        except concurrent.futures.TimeoutError:
            if log.partition(TOPIC, part).blocked:
                # at its cap, and the required cursor lags: let the cursor read on so retention can delete
                _commit_cursor(log, part, None, cursor)
    raise AssertionError("an append was not acknowledged within 10 s")


def _run_until_cut(log: Log, fs: SimFileSystem, clock: FakeClock, rng: random.Random, ledger: Ledger,
                   acked_at: dict[tuple[int, int], int], cursor: dict[str, int]) -> None:
    """Append (a few batches in flight), advance time, run housekeeping and commit a required cursor, until the
    scheduled cut happens (or force one)."""
    topic = log.topic(TOPIC)
    cuts = fs.cuts
    seq = 0
    for _ in range(400):
        if fs.cuts != cuts:
            break
        action = rng.random()
        try:
            if action < 0.75:
                futs = []
                for _ in range(rng.randint(1, 3)):
                    part = rng.randrange(len(topic.partitions))
                    n = rng.randint(1, 12)
                    batch = [RecordIn(clock.wall_ms(), None, f"{seq}-{i}-".encode() * rng.randint(1, 20))
                             for i in range(n)]
                    seq += 1
                    futs.append((part, batch, log.append_batch(TOPIC, part, batch)))
                for part, batch, fut in futs:
                    try:
                        base = _result(log, part, fut, cursor)
                    except StoreError:
                        continue
                    p = topic.partition(part)
                    for i, rec in enumerate(batch):
                        ledger.ack(p.log_id, part, base + i, p.epoch, rec.value)
                        acked_at[(part, base + i)] = clock.wall_ms()
            elif action < 0.9:
                clock.advance(rng.choice([1, 10, 30, 80]))
                log.run_maintenance(scrub=rng.random() < 0.2)
                if fs.cuts == cuts:
                    cursor["maintained_ms"] = clock.wall_ms()
            else:
                _commit_cursor(log, rng.randrange(len(topic.partitions)), rng, cursor)
        except (OSError, LogBrokenError, LogClosedError):
            break
    if fs.cuts == cuts:
        fs.power_cut()


@pytest.mark.parametrize("seed", FSYNC_SEEDS)
def test_fsync_mode_never_loses_an_acked_record(seed: int) -> None:
    rng = random.Random(seed)
    fs = SimFileSystem(seed)
    clock = FakeClock()
    ledger = Ledger()
    acked_at: dict[tuple[int, int], int] = {}
    cursor: dict[str, int] = {}
    log = open_sim(fs, clock, maintenance_ms=10, scrub_interval_ms=0)
    log.create_topic(TOPIC, small_topic(partitions=2, retention_bytes=6000, codec=rng.choice(["none", "zstd"])))
    epochs = {p.index: p.epoch for p in log.topic(TOPIC).partitions}
    assert epochs == {0: 0, 1: 0}, "a brand-new partition starts at epoch 0"
    assert all(not r.epoch_bumped for r in log.recovery_reports())
    for _ in range(ROUNDS):
        fs.cut_after(rng.randint(1, 300))
        _run_until_cut(log, fs, clock, rng, ledger, acked_at, cursor)
        log.abandon()
        log = _open_with_cuts(fs, clock, rng)
        check_after_restart(log, TOPIC, ledger, lossless=True)
        for p in log.topic(TOPIC).partitions:
            assert p.epoch > epochs[p.index], "an unclean stop must raise the epoch"
            epochs[p.index] = p.epoch
            assert p.statistics().epoch_bumps == 1
            # retention never passes what a required cursor has not read (on_full = block)
            # once a required cursor exists it protects every partition, from 0 until it commits one
            if any(k.endswith(":floor") for k in cursor):
                assert p.log_start <= max(cursor[f"{p.index}:floor"], cursor.get(f"{p.index}:attempt", 0))
        cur = log.cursors.get("mirror")
        if cur is not None:  # a cursor file is the old one or the new one, never garbage
            assert not log.cursors.corrupt
    log.close()
    # a clean stop after all that: no bump, nothing scanned
    log = open_sim(fs, clock)
    assert all(r.clean and not r.epoch_bumped for r in log.recovery_reports())
    check_after_restart(log, TOPIC, ledger, lossless=True)
    log.close()


@pytest.mark.parametrize("seed", range(30))
def test_interval_mode_loses_at_most_the_last_interval_and_counts_it(seed: int) -> None:
    interval_ms = 50
    rng = random.Random(1000 + seed)
    fs = SimFileSystem(1000 + seed, zero_tail_rate=0.0)
    clock = FakeClock()
    ledger = Ledger()
    acked_at: dict[tuple[int, int], int] = {}
    cursor: dict[str, int] = {}
    log = open_sim(fs, clock, maintenance_ms=10, scrub_interval_ms=0)
    log.create_topic(TOPIC, small_topic(partitions=2, durability=f"interval:{interval_ms}", segment_bytes=64 * 1024))
    lost_total = 0
    for _ in range(ROUNDS):
        fs.cut_after(rng.randint(1, 200))
        _run_until_cut(log, fs, clock, rng, ledger, acked_at, cursor)
        # The writer syncs an interval topic whenever it runs and the interval has passed; with this test's clock
        # (which jumps) "the last interval before the cut" ends at the writer's last complete housekeeping round.
        cut_ms = cursor.pop("maintained_ms", clock.wall_ms())
        log.abandon()
        before = {p: _segment_sizes(fs, p) for p in (0, 1)}
        log = open_sim(fs, clock, maintenance_ms=10, scrub_interval_ms=0)
        recs = check_after_restart(log, TOPIC, ledger, lossless=False)
        for p in log.topic(TOPIC).partitions:
            present = {r.offset: r for r in recs[p.index]}
            lost = [off for (part, off), (ep, value) in ledger.acked.items()
                    if part == p.index and (off not in present or present[off].epoch != ep)]
            for off in lost:
                assert acked_at[(p.index, off)] > cut_ms - interval_ms, (
                    f"record {p.index}/{off} acked at {acked_at[(p.index, off)]} was lost by a cut at {cut_ms}: "
                    f"older than one interval ({interval_ms} ms)")
                del ledger.acked[(p.index, off)]
            lost_total += len(lost)
            after = _segment_sizes(fs, p.index)
            cut_off = sum(size - after.get(name, 0) for name, size in before[p.index].items())
            report = p.recovery
            assert report.truncated_bytes == cut_off, "recovery reports exactly the bytes it cut off"
            assert p.statistics().recovery_truncated_records == report.truncated_records
            assert p.statistics().recovery_truncated_bytes == report.truncated_bytes
            if lost:
                assert report.epoch_bumped
    log.close()
    assert lost_total >= 0
