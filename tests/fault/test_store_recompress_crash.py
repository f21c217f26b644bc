"""Crashes during recompression (store.recompress): a simulated power cut at every mutating step of the copy and
replace protocol, and kill -9 of a child process at random moments while it appends and recompresses.

After every crash and reopen: every acknowledged record is there exactly once with its bytes, offsets are
contiguous, no `*.tmp` is left, and a later recompression finishes the job.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import IO

import pytest

from edgestream.store import Log, LogConfig, RecordIn, StoreError
from edgestream.store.simfs import SimFileSystem
from tests.fault.store_support import DATA, FakeClock, Ledger, check_after_restart, digest, open_sim, small_topic

pytestmark = pytest.mark.fault

TOPIC = "t"
CONFIG = LogConfig(min_free_bytes=0, disk_check_interval_ms=0, recompress=False)


def _pdir() -> str:
    return f"{DATA}/topics/{TOPIC}/0"


def _build(seed: int, *, clean: bool) -> tuple[dict[str, bytes], Ledger]:
    """A partition of several sealed segments of tiny frames (appends of 2-3 records), stopped cleanly or not."""
    rng = random.Random(seed)
    fs = SimFileSystem(seed)
    clock = FakeClock()
    ledger = Ledger()
    log = open_sim(fs, clock, CONFIG, scrub_interval_ms=0)
    log.create_topic(TOPIC, small_topic(segment_bytes=4096, frame_bytes=4096, codec="zstd"))
    p = log.partition(TOPIC, 0)
    n = 0
    for _ in range(90):
        batch = [RecordIn(clock.wall_ms() + i, b"k" if i == 0 else None,
                          b'{"sensor":"s-%03d","t":%d.%d,"seq":%d}' % (n % 7, 20 + n % 5, n % 10, n),
                          (("h", b"%d" % n),) if n % 5 == 0 else ())
                 for i in range(rng.randint(2, 3))]
        base = log.append_batch(TOPIC, 0, batch).result(10)
        for i, rec in enumerate(batch):
            ledger.ack(p.log_id, 0, base + i, p.epoch, rec.value)
        n += len(batch)
        clock.advance(7)
    assert len(p.segments) >= 4
    if clean:
        log.close()
    else:
        log.abandon()
    return fs.snapshot(), ledger


def _reopen_and_check(fs: SimFileSystem, ledger: Ledger, what: str) -> None:
    log = open_sim(fs, FakeClock(), CONFIG, scrub_interval_ms=0)
    try:
        assert not [n for n in fs.listdir(_pdir()) if n.endswith(".tmp")], what
        recs = check_after_restart(log, TOPIC, ledger, lossless=True)[0]
        assert len({r.offset for r in recs}) == len(recs), f"{what}: an offset twice"
        acked = sorted(off for (_, off) in ledger.acked)
        assert [r.offset for r in recs] == acked, f"{what}: records missing or extra"
        log.recompress_now()  # whatever the cut interrupted is done now
        assert all(s.header.repacked for s in log.partition(TOPIC, 0).segments[:-1]), what
        check_after_restart(log, TOPIC, ledger, lossless=True)
    finally:
        log.close()
    log = open_sim(fs, FakeClock(), CONFIG, scrub_interval_ms=0)
    try:
        check_after_restart(log, TOPIC, ledger, lossless=True)
    finally:
        log.close()


@pytest.mark.parametrize("clean", [True, False])
def test_power_cut_at_every_step_of_recompression(clean: bool) -> None:
    snap, ledger = _build(7, clean=clean)
    # How many mutating file-system calls a whole recompression pass takes, from a fresh copy.
    fs = SimFileSystem.from_snapshot(snap, 1)
    log = open_sim(fs, FakeClock(), CONFIG, scrub_interval_ms=0)
    start = fs.ops
    assert log.recompress_now() >= 3
    steps = fs.ops - start
    log.close()
    assert steps >= 20
    for cut in range(1, steps + 1):
        fs = SimFileSystem.from_snapshot(snap, cut)
        log = open_sim(fs, FakeClock(), CONFIG, scrub_interval_ms=0)
        fs.cut_after(cut)
        try:
            log.recompress_now()
        except (OSError, StoreError):
            pass
        assert fs.cuts == 1, f"cut {cut} of {steps} did not happen"
        try:
            log.abandon()
        except OSError:
            pass
        _reopen_and_check(fs, ledger, f"power cut at step {cut} of {steps} ({fs.cut_log[-1]})")


CHILD = r"""
import hashlib, sys, threading
from edgestream.store import Log, LogConfig, RecordIn, TopicConfig
from edgestream.store import recompress

data, seed = sys.argv[1], int(sys.argv[2])
out = sys.stdout
lock = threading.Lock()

def say(text):
    with lock:
        out.write(text)
        out.flush()

# Markers on stderr for the parent: "copy" when a copy starts (the parent kills a random moment later: a copy takes
# ~20 ms); in even rounds "mid" half-way through the first copy's frames, which then waits to be killed there.
write_copy = recompress.write_copy
def marked(seg, p, tmp, pace):
    sys.stderr.write(f"copy {seg.base_offset}\n")
    sys.stderr.flush()
    calls = [0]
    def paced():
        calls[0] += 1
        if seed % 2 == 0 and calls[0] == 150:
            sys.stderr.write("mid\n")
            sys.stderr.flush()
            threading.Event().wait(30)
        pace()
    return write_copy(seg, p, tmp, paced)
recompress.write_copy = marked

log = Log.open(data, LogConfig(recompress=False, min_free_bytes=0))
# durability "os": an append is acked after write(), which a kill -9 cannot undo, so appends are fast and sealed
# segments of tiny frames keep coming for the recompression thread.
log.create_topic("t", TopicConfig(segment_bytes=64 * 1024, frame_bytes=64 * 1024, linger_ms=0, retention_ms=None,
                                  durability="os", index_interval_bytes=1024), exist_ok=True)

def recompress_forever():
    while True:
        log.recompress_now()

threading.Thread(target=recompress_forever, daemon=True).start()
n = 0
while True:
    batch = [RecordIn(1_700_000_000_000 + n + i, None, b'{"sensor":"s-%d","v":%d,"seed":%d}' % (i, n + i, seed))
             for i in range(2 + n % 2)]
    base = log.append_batch("t", 0, batch).result()
    n += len(batch)
    say("".join(f"{base + i} {hashlib.sha256(r.value).hexdigest()[:16]}\n" for i, r in enumerate(batch)))
"""

ROUNDS = 10


def _drain(stream: IO[bytes], lines: list[bytes]) -> None:
    lines.extend(stream.read().splitlines())


def test_sigkill_while_recompressing_loses_nothing_reported(tmp_path: object) -> None:
    data = str(tmp_path)
    rng = random.Random(99)
    reported: dict[int, str] = {}
    ledger = Ledger()
    recompressed = 0
    temp_left = 0  # rounds killed with a copy (or an index) half made
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for round_no in range(ROUNDS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, data, str(round_no)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env)
        assert child.stdout is not None and child.stderr is not None
        lines: list[bytes] = []
        drain = threading.Thread(target=_drain, args=(child.stdout, lines))
        drain.start()  # acks flow freely: the marker below is seen when it is written
        watchdog = threading.Timer(60, child.kill)  # a child that never gets there fails the test, never hangs it
        watchdog.start()
        marker = child.stderr.readline()
        assert marker.startswith(b"copy"), f"the child died before it started a copy: {marker!r}"
        if round_no % 2 == 0:
            while marker != b"mid\n":  # half-way through writing a copy (one of >= 150 frames): killed there
                marker = child.stderr.readline()
                assert marker, "the child died before it was half-way through a copy"
        else:
            time.sleep(rng.uniform(0.0, 0.04))  # a random moment of the copy, the swap or the next copy
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        watchdog.cancel()
        drain.join(10)
        child.stderr.close()
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and len(parts[1]) == 16:  # a line the kill cut short was not reported whole
                reported[int(parts[0])] = parts[1].decode()

        pdir = os.path.join(data, "topics", "t", "0")
        temp_left += any(n.endswith(".tmp") for n in os.listdir(pdir))
        log = Log.open(data, LogConfig(recompress=False, min_free_bytes=0))
        try:
            assert not [n for n in os.listdir(pdir) if n.endswith(".tmp")], f"round {round_no}: a temp file left"
            recs = check_after_restart(log, "t", ledger, lossless=False)[0]
            by_off = {r.offset: r for r in recs}
            assert len(by_off) == len(recs)
            for off, sha in reported.items():
                assert off in by_off, f"round {round_no}: reported record {off} is gone"
                assert digest(by_off[off].value) == sha, f"round {round_no}: record {off} changed"
            recompressed = sum(1 for s in log.partition("t", 0).segments if s.header.repacked)
        finally:
            log.close()
    assert len(reported) > 1000, "the child reported too little for this test to mean anything"
    assert recompressed > 0, "no recompression ever finished: the kills did not hit the protocol"
    assert temp_left >= ROUNDS // 2, "the kills half-way through a copy must leave its temp file"
