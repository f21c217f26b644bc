"""kill -9 against the store API: a child process appends and prints "<partition> <offset> <sha>" for every record
once it is durable; the test SIGKILLs it at random moments, many rounds, on a real file system.

After every kill: every reported record reads back at the same offset with the same bytes; offsets are contiguous;
an offset that comes back with different content carries a higher epoch (recovery raised it), so no identity
(log id, epoch, partition, offset) ever names two records.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from edgestream.store import Log
from tests.fault.store_support import Ledger, check_after_restart, digest

pytestmark = [pytest.mark.fault, pytest.mark.slow]

ROUNDS = 32

CHILD = r"""
import hashlib, os, random, sys
from edgestream.store import Log, RecordIn, TopicConfig

data, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
log = Log.open(data)
log.create_topic("t", TopicConfig(partitions=2, segment_bytes=64 * 1024, frame_bytes=8 * 1024, linger_ms=1,
                                  retention_ms=None), exist_ok=True)
out = sys.stdout
print("ready", flush=True)
n = 0
while True:
    futs = []
    for _ in range(rng.randint(1, 4)):
        part = rng.randrange(2)
        batch = [RecordIn(1_700_000_000_000 + n + i, None, b"%d-%d-" % (seed, n + i) * rng.randint(1, 40))
                 for i in range(rng.randint(1, 30))]
        n += len(batch)
        futs.append((part, batch, log.append_batch("t", part, batch)))
    for part, batch, fut in futs:
        base = fut.result()
        out.write("".join(f"{part} {base + i} {hashlib.sha256(r.value).hexdigest()[:16]}\n"
                          for i, r in enumerate(batch)))
    out.flush()
"""


def test_sigkill_at_random_moments_loses_nothing_reported(tmp_path: object) -> None:
    data = str(tmp_path)
    rng = random.Random(1234)
    ledger = Ledger()
    reported: dict[tuple[int, int], str] = {}
    epochs: dict[int, int] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for round_no in range(ROUNDS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, data, str(round_no)], stdout=subprocess.PIPE,
                                 env=env)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.25))  # a random moment in the middle of appends, rolls and syncs
        child.send_signal(signal.SIGKILL)
        out = child.stdout.read()
        child.wait(10)
        for line in out.decode().splitlines():
            parts = line.split()
            if len(parts) != 3:  # the kill may cut the last line short: it was not reported whole
                continue
            reported[(int(parts[0]), int(parts[1]))] = parts[2]

        log = Log.open(data)
        try:
            recs = check_after_restart(log, "t", ledger, lossless=False)
            for p in log.topic("t").partitions:
                by_off = {r.offset: r for r in recs[p.index]}
                for (part, off), sha in reported.items():
                    if part != p.index:
                        continue
                    assert off in by_off, f"round {round_no}: reported record {part}/{off} is gone"
                    assert digest(by_off[off].value) == sha, f"round {round_no}: record {part}/{off} changed"
                if p.index in epochs:
                    assert p.epoch == epochs[p.index] + 1, "every kill -9 raises the epoch once"
                epochs[p.index] = p.epoch
        finally:
            log.close()
    assert len(reported) > 100, "the child reported too little for this test to mean anything"
