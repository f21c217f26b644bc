"""A full disk, for real: an 8 MiB tmpfs mounted for the test (root needed; the test fails if it cannot mount).

- `block`: appends wait while the writer idles (no spinning), a blocked append gives up with DiskFullError after
  `block_timeout_ms`, nothing acknowledged is lost, and once space is freed everything queued is written.
- `drop_oldest`: appends keep succeeding; the oldest segments go, even past a required cursor, and the records
  that cursor had not read are counted as dropped.
- `reject_new`: appends fail at once with DiskFullError, counted as rejected with reason "full".
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator

import psutil
import pytest

from edgestream.store import DiskFullError, Log, LogClosedError, LogConfig, RecordIn, TopicConfig
from edgestream.store.cursors import CursorPosition
from tests.fault.store_support import read_all

pytestmark = pytest.mark.fault

MiB = 1 << 20
RECORD = 1000  # incompressible bytes per record (codec none): sizes on disk are predictable


@pytest.fixture
def tmpfs() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="edgestream-tmpfs-")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", path], capture_output=True, text=True)
    if proc.returncode != 0:
        os.rmdir(path)
        pytest.fail(f"cannot mount an 8 MiB tmpfs (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)
        os.rmdir(path)


def _fill(path: str, leave: int, log: Log, name: str = "filler") -> str:
    """Write a filler file so that about `leave` bytes stay free, and have the writer read the free space now."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    filler = os.path.join(path, name)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    assert log.run_maintenance()
    return filler


def _topic(on_full: str, **kw: object) -> TopicConfig:
    base: dict[str, object] = {"codec": "none", "segment_bytes": 256 * 1024, "frame_bytes": 64 * 1024,
                               "linger_ms": 1.0, "retention_ms": None, "on_full": on_full}
    base.update(kw)
    return TopicConfig(**base)  # type: ignore[arg-type]


def _batch(i: int, n: int = 16) -> list[RecordIn]:
    return [RecordIn(1_000_000 + i, None, os.urandom(RECORD)) for _ in range(n)]


def _wait(cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _writer_cpu_seconds(log: Log) -> float:
    assert log.writer is not None
    tid = log.writer._thread.native_id
    for t in psutil.Process().threads():
        if t.id == tid:
            return float(t.user_time + t.system_time)
    raise AssertionError("writer thread not found")


def test_block_backpressures_without_spinning_and_resumes_when_space_is_freed(tmpfs: str) -> None:
    data = os.path.join(tmpfs, "data")
    log = Log.open(data, LogConfig(min_free_bytes=1 * MiB, disk_check_interval_ms=20, block_timeout_ms=None))
    log.create_topic("t", _topic("block"))
    filler = _fill(tmpfs, leave=3 * MiB, log=log)
    acked: dict[int, bytes] = {}
    pending: list[tuple[concurrent.futures.Future[int], list[RecordIn]]] = []
    p = log.partition("t", 0)
    for i in range(400):  # ~6 MiB offered into ~2 MiB of room
        batch = _batch(i)
        pending.append((log.append_batch("t", 0, batch), batch))
        if p.blocked:
            break
    _wait(lambda: p.blocked)
    for fut, batch in pending:
        if fut.done():
            base = fut.result()
            acked.update({base + k: r.value for k, r in enumerate(batch)})
    queued = [(f, b) for f, b in pending if not f.done()]
    assert queued, "some appends must be waiting"
    assert log.statistics().topics[0].partitions[0].blocked

    # the writer idles while blocked: it retries every disk_check_interval_ms, it does not spin
    cpu0, t0 = _writer_cpu_seconds(log), time.monotonic()
    time.sleep(1.0)  # a measurement window, not waiting for time to pass: nothing in the store depends on it
    cpu = _writer_cpu_seconds(log) - cpu0
    assert cpu < 0.25 * (time.monotonic() - t0), f"blocked writer used {cpu:.2f} s of CPU in 1 s"
    assert log.flush(timeout=1.0) is False, "flush reports the blocked partition instead of hanging"

    os.remove(filler)  # room again: everything queued is written, in order
    for fut, batch in queued:
        base = fut.result(timeout=30)
        acked.update({base + k: r.value for k, r in enumerate(batch)})
    assert not p.blocked
    recs = read_all(log, "t", 0)
    assert [r.offset for r in recs] == list(range(len(recs)))
    assert {r.offset: r.value for r in recs} == acked
    log.close()


def test_block_timeout_fails_a_blocked_append_with_disk_full_and_close_fails_the_rest(tmpfs: str) -> None:
    data = os.path.join(tmpfs, "data")
    log = Log.open(data, LogConfig(min_free_bytes=1 * MiB, disk_check_interval_ms=20, block_timeout_ms=300))
    log.create_topic("t", _topic("block"))
    _fill(tmpfs, leave=1 * MiB + 64 * 1024, log=log)
    p = log.partition("t", 0)
    futs = [log.append_batch("t", 0, _batch(i)) for i in range(20)]
    _wait(lambda: p.blocked)
    failed = 0
    for fut in futs:
        try:
            fut.result(timeout=10)
        except DiskFullError as exc:
            assert exc.retriable and exc.policy == "block" and "no room" in str(exc)
            failed += 1
    assert failed > 0
    assert dict(p.statistics().rejected)["block_timeout"] == 16 * failed
    log.close()

    # close while appends wait on a blocked topic: they fail with LogClosedError, nothing hangs
    log = Log.open(data, LogConfig(min_free_bytes=1 * MiB, disk_check_interval_ms=20))
    _fill(tmpfs, leave=1 * MiB + 8 * 1024, log=log, name="filler2")
    p = log.partition("t", 0)
    futs = [log.append_batch("t", 0, _batch(i)) for i in range(3)]
    _wait(lambda: p.blocked)
    log.close(timeout=10)
    for fut in futs:
        with pytest.raises(LogClosedError):
            fut.result(timeout=5)


def test_drop_oldest_keeps_accepting_and_counts_what_a_required_cursor_had_not_read(tmpfs: str) -> None:
    data = os.path.join(tmpfs, "data")
    log = Log.open(data, LogConfig(min_free_bytes=1 * MiB, disk_check_interval_ms=0))
    log.create_topic("t", _topic("drop_oldest"))
    log.cursors.commit("mirror", {("t", 0): CursorPosition(0)}, required=True)  # protects everything
    _fill(tmpfs, leave=3 * MiB, log=log)
    last: dict[int, bytes] = {}
    for i in range(400):  # ~6 MiB through ~2 MiB of room
        batch = _batch(i)
        base = log.append_batch("t", 0, batch).result(timeout=30)
        last = {base + k: r.value for k, r in enumerate(batch)}
    st = log.partition("t", 0).statistics()
    dropped = dict(st.dropped).get("drop_oldest", 0)
    assert st.log_start > 0 and dropped == st.log_start, "every record deleted unread is counted as dropped"
    recs = read_all(log, "t", 0)
    assert [r.offset for r in recs] == list(range(st.log_start, st.high_watermark))
    assert {r.offset: r.value for r in recs if r.offset in last} == last
    log.close()


def test_reject_new_fails_appends_and_counts_them(tmpfs: str) -> None:
    data = os.path.join(tmpfs, "data")
    log = Log.open(data, LogConfig(min_free_bytes=1 * MiB, disk_check_interval_ms=0))
    log.create_topic("t", _topic("reject_new"))
    before = log.append_batch("t", 0, _batch(0)).result(timeout=10)
    _fill(tmpfs, leave=1 * MiB + 8 * 1024, log=log)
    with pytest.raises(DiskFullError) as info:
        log.append_batch("t", 0, _batch(1)).result(timeout=10)
    assert info.value.policy == "reject_new"
    st = log.partition("t", 0).statistics()
    assert dict(st.rejected) == {"full": 16}
    assert [r.offset for r in read_all(log, "t", 0)] == list(range(before, before + 16))
    log.close()
