"""The Log's front door: the data dir lock, read-only opens, AsyncLog, reads by offset and time, several
partitions, retention by size and time under an injected clock, required cursors, and the writer's answers to a
full disk (mid-write ENOSPC), a failed fsync and a close while blocked."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from edgestream.store import (
    AsyncLog,
    DataDirLockedError,
    DiskFullError,
    Log,
    LogBrokenError,
    LogClosedError,
    LogConfig,
    RecordIn,
    StoreError,
    TopicConfig,
)
from edgestream.store.cursors import CursorPosition
from edgestream.store.simfs import SimFileSystem
from tests.fault.store_support import FakeClock, open_sim, read_all, small_topic


def _tree(path: str) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for root, _, names in os.walk(path):
        for n in names:
            p = os.path.join(root, n)
            st = os.stat(p)
            with open(p, "rb") as f:
                out[p] = (st.st_size, st.st_mtime_ns, f.read())
    return out


def test_second_open_is_refused_with_the_holder_pid_and_a_killed_holder_releases_the_lock(tmp_path: object) -> None:
    data = str(tmp_path)
    code = ("import sys, time; from edgestream.store import Log; log = Log.open(sys.argv[1]); "
            "print('ready', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code, data], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        with pytest.raises(DataDirLockedError) as info:
            Log.open(data)
        assert f"pid {child.pid}" in str(info.value) and info.value.holder == f"pid {child.pid}"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        log = Log.open(data)  # the kernel released the lock with the process
        with pytest.raises(DataDirLockedError):
            Log.open(data)
        log.close()
        Log.open(data).close()
    finally:
        child.kill()
        child.wait()


def test_readonly_open_sees_acked_data_and_changes_nothing(tmp_path: object) -> None:
    data = str(tmp_path)
    log = Log.open(data)
    log.create_topic("t", TopicConfig(partitions=2, segment_bytes=4096, linger_ms=0))
    for i in range(200):
        log.append("t", i % 2, b"record %d" % i, timestamp_ms=1000 + i).result(5)
    before = _tree(data)
    ro = Log.open(data, readonly=True)
    assert [r.value for r in ro.read("t", 1, 0, max_records=1000)] == [b"record %d" % i for i in range(1, 200, 2)]
    assert ro.offset_for_time("t", 0, 1100) == 50
    with pytest.raises(StoreError):
        ro.append("t", 0, b"no")
    log.append("t", 0, b"later", timestamp_ms=5000).result(5)
    assert ro.wait_for("t", 0, 100, timeout=5), "a read-only log follows what the writer adds"
    assert ro.read("t", 0, 100)[0].value == b"later"
    ro.close()
    after = _tree(data)
    changed = [p for p in after if p in before and before[p] != after[p] and "/0/" in p]
    assert set(before) <= set(after) and all(p.endswith(("state", ".log")) for p in changed)
    assert after[os.path.join(data, ".lock")] == before[os.path.join(data, ".lock")]
    log.close()


def test_several_partitions_keep_their_own_offsets_and_order() -> None:
    fs, clock = SimFileSystem(3), FakeClock()
    log = open_sim(fs, clock)
    log.create_topic("t", small_topic(partitions=4))
    sent: dict[int, list[bytes]] = {p: [] for p in range(4)}
    for i in range(120):
        key = b"sensor-%d" % (i % 9)
        part = log.partition_for("t", key)
        assert part == log.partition_for("t", key) and 0 <= part < 4
        off = log.append("t", part, b"v%d" % i, key=key).result(5)
        assert off == len(sent[part])
        sent[part].append(b"v%d" % i)
    for part in range(4):
        assert [r.value for r in read_all(log, "t", part)] == sent[part]
    stats = log.statistics()
    assert sum(p.records for p in stats.topics[0].partitions) == 120
    log.close()


def test_offset_for_time_with_timestamps_that_go_back() -> None:
    log = open_sim(SimFileSystem(4), FakeClock())
    log.create_topic("t", small_topic())
    stamps = [100, 200, 150, 300, 250, 400, 1000, 900]
    for ts in stamps:
        log.append("t", 0, b"x" * 300, timestamp_ms=ts).result(5)
    for target, want in [(0, 0), (100, 0), (101, 1), (201, 3), (301, 5), (950, 6), (1001, 8)]:
        assert log.offset_for_time("t", 0, target) == want
    log.close()


async def test_async_log_append_wait_for_and_backpressure() -> None:
    fs, clock = SimFileSystem(5), FakeClock()
    log = open_sim(fs, clock, LogConfig(min_free_bytes=1 << 20, disk_check_interval_ms=0,
                                        max_pending_bytes=64 * 1024))
    alog = AsyncLog(log)
    log.create_topic("t", small_topic(frame_bytes=64 * 1024, segment_bytes=1 << 20))
    waiter = asyncio.create_task(alog.wait_for("t", 0, 0, timeout=10))
    assert await alog.append("t", 0, b"first") == 0
    assert await waiter
    assert not await alog.wait_for("t", 0, 5, timeout=0.05)

    fs.capacity = fs.used + 512 * 1024  # under min_free_bytes: the topic blocks, nothing drains
    assert log.run_maintenance()
    tasks = [asyncio.create_task(alog.append_batch("t", 0, [RecordIn(1, None, b"%d" % i + b"." * 4000)]))
             for i in range(40)]
    deadline = time.monotonic() + 10
    while log.statistics().writer.waiting_appenders == 0:
        assert time.monotonic() < deadline, "appenders never waited for room"
        await asyncio.sleep(0.01)
    st = log.statistics().writer
    # bounded: max_pending_bytes plus what the writer had in hand when it put a blocked round back
    assert st.pending_bytes <= 2 * 64 * 1024, "memory stays bounded: appenders wait instead of queueing"
    assert not any(t.done() for t in tasks)
    fs.capacity = None  # room again; the writer notices at its next free-space reading
    assert log.run_maintenance()
    offsets = await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert sorted(offsets) == list(range(1, 41))
    got = await alog.read("t", 0, 1, max_records=100)
    assert sorted(r.value[:2].rstrip(b".") for r in got) == sorted(b"%d" % i for i in range(40))
    await alog.close()


def test_retention_by_bytes_and_by_time_with_an_injected_clock() -> None:
    fs, clock = SimFileSystem(6), FakeClock()
    log = open_sim(fs, clock, maintenance_ms=3_600_000)
    log.create_topic("b", small_topic(codec="none", retention_bytes=8192))
    log.create_topic("m", small_topic(codec="none", retention_ms=60_000))
    for i in range(100):
        log.append("b", 0, b"%05d" % i * 40).result(5)
        log.append("m", 0, b"%05d" % i * 40, timestamp_ms=clock.wall_ms()).result(5)
    b, m = log.partition("b", 0), log.partition("m", 0)
    assert log.run_maintenance()
    assert b.log_start > 0 and b.size_bytes() - b.segments[0].size <= 8192, "kept no more than needed"
    assert b.statistics().retention_deleted_records == b.log_start
    assert m.log_start == 0, "nothing is older than retention_ms yet"
    clock.advance(60_001)
    assert log.run_maintenance()
    assert m.log_start == m.segments[-1].base_offset and len(m.segments) == 1, "every sealed segment expired"
    assert [r.value for r in read_all(log, "m", 0)] == [b"%05d" % i * 40 for i in range(m.log_start, 100)]
    log.close()


@pytest.mark.parametrize("on_full", ["block", "drop_oldest"])
def test_a_required_cursor_holds_retention_back_unless_drop_oldest(on_full: str) -> None:
    fs, clock = SimFileSystem(7), FakeClock()
    log = open_sim(fs, clock, maintenance_ms=3_600_000)
    log.create_topic("t", small_topic(codec="none", retention_bytes=8192, on_full=on_full))
    log.cursors.commit("mirror", {("t", 0): CursorPosition(0)}, required=True)
    p = log.partition("t", 0)
    assert log.writer is not None
    offsets = []
    for i in range(200):  # ~40 KiB, one append at a time, against a cap of 8 + 4 KiB
        fut = log.append("t", 0, b"%05d" % i * 40)
        if on_full == "block":
            deadline = time.monotonic() + 10
            while not fut.done() and not p.blocked:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            if p.blocked:
                assert p.log_start == 0, "the unread segments stay"
                assert not fut.done()
                log.cursors.commit("mirror", {("t", 0): CursorPosition(10**9)})  # the mirror read everything
                assert log.run_maintenance()
        offsets.append(fut.result(10))
    assert offsets == list(range(200))
    assert p.log_start > 0
    if on_full == "block":
        assert p.statistics().blocked is False and not dict(p.statistics().dropped)
        assert p.counters.blocked_cycles > 0
    else:
        assert dict(p.statistics().dropped)["drop_oldest"] == p.log_start
    log.close()


@pytest.mark.parametrize("on_full", ["reject_new", "block"])
def test_enospc_in_the_middle_of_a_write_leaves_no_partial_frame(on_full: str) -> None:
    fs, clock = SimFileSystem(8), FakeClock()
    # the writer reads the free space rarely: the disk fills up behind its back
    log = open_sim(fs, clock, LogConfig(min_free_bytes=0, disk_check_interval_ms=60_000), maintenance_ms=3_600_000)
    log.create_topic("t", small_topic(codec="none", on_full=on_full, segment_bytes=1 << 20, frame_bytes=64 * 1024))
    log.append("t", 0, b"a" * 100).result(5)
    p = log.partition("t", 0)
    size = p.active.size
    fs.capacity = fs.used + 500  # the next 2 KB frame gets 500 bytes written, then ENOSPC
    fut = log.append("t", 0, b"b" * 2000)
    if on_full == "reject_new":
        with pytest.raises(DiskFullError):
            fut.result(5)
    else:
        deadline = time.monotonic() + 10
        while not p.blocked:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert fs.file_size(p.active.path) == size == p.active.size, "the partial frame was cut off"
    assert not p.statistics().broken
    fs.capacity = None
    if on_full == "block":
        assert log.run_maintenance()
        assert fut.result(10) == 1
    else:
        assert log.append("t", 0, b"c" * 2000).result(5) == 1
    assert [len(r.value) for r in read_all(log, "t", 0)] == [100, 2000]
    log.close()


def test_a_failed_fsync_breaks_the_partition_and_nothing_is_acked_after_it() -> None:
    fs, clock = SimFileSystem(9), FakeClock()
    log = open_sim(fs, clock)
    log.create_topic("t", small_topic(partitions=2))
    log.append("t", 0, b"ok").result(5)
    fs.fail_next_sync(lambda path: path.endswith(".log") and "/t/0/" in path)
    with pytest.raises(LogBrokenError):
        log.append("t", 0, b"lost?").result(5)
    p = log.partition("t", 0)
    assert p.high_watermark == 1 and p.statistics().broken
    with pytest.raises(LogBrokenError):  # never retried: after a failed fsync the page cache cannot be trusted
        log.append("t", 0, b"more").result(5)
    assert log.append("t", 1, b"other partition").result(5) == 0
    log.close()
    log = open_sim(fs, clock)  # a restart recovers from whatever reached the disk
    assert read_all(log, "t", 0)[0].value == b"ok"
    assert log.append("t", 0, b"again").result(5) >= 1
    log.close()


def test_flush_with_a_blocked_partition_returns_false_and_close_fails_the_waiting_appends() -> None:
    fs, clock = SimFileSystem(10), FakeClock()
    log = open_sim(fs, clock, LogConfig(min_free_bytes=1 << 20, disk_check_interval_ms=0))
    log.create_topic("t", small_topic())
    fs.capacity = fs.used + 1000
    fut = log.append("t", 0, b"waits")
    t0 = time.monotonic()
    assert log.flush(timeout=5) is False and time.monotonic() - t0 < 4
    assert not fut.done()
    log.close()
    with pytest.raises(LogClosedError):
        fut.result(5)
    assert dict(log.partition("t", 0).statistics().rejected) == {"closing": 1}
