"""Tiering is exactly-once across kill -9: a child tiers a data dir and is SIGKILLed at random points, either
at one of the tierer's steps (after the temp files, after the rename, after the manifest, after the cursor, inside
compaction) or after a random delay (mid-write of a Parquet file, mid-fsync); then it runs again. After every
round the union view (cold tier + hot log) must hold every offset of every partition exactly once, the manifest's
files must not overlap, and the tier cursor must never be ahead of the manifest. TIER_KILL_SEED=<n> replays a
failing run."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from edgestream.edge.decoders import decode_json
from edgestream.store import Log, TopicConfig
from edgestream.store.tier import layout
from edgestream.store.tier import manifest as mf
from edgestream.store.tier.manifest import DecoderSpec, TopicDecoder
from edgestream.store.tier.query import QuerySession
from edgestream.store.tier.testing import append_payloads

pytestmark = [pytest.mark.fault, pytest.mark.slow]

ROUNDS = 12
SEGMENTS = 60
TS0 = int(dt.datetime(2026, 2, 1, 23, tzinfo=dt.UTC).timestamp() * 1000)
CHILD = textwrap.dedent("""
    import os, signal, sys
    from edgestream.edge.decoders import decode_json
    from edgestream.store import Log
    from edgestream.store.tier.manifest import DecoderSpec, TopicDecoder
    from edgestream.store.tier.tierer import Tierer, TierSettings

    data, (name, _, nth) = sys.argv[1], sys.argv[2].partition(":")
    steps = [0]

    def hook(step):
        if name in ("*", step):
            steps[0] += 1
            if steps[0] == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)

    log = Log.open(data)
    settings = TierSettings(cpu_share=1.0, compact_small_bytes=1 << 30)
    tierer = Tierer(log, {"t": TopicDecoder(DecoderSpec("json"), decode_json)}, settings, hook=hook).open()
    print("ready", flush=True)
    tierer.run_once()
    tierer.close()
    log.close()
    print("done", steps[0], flush=True)
""")


def make_data(path: str) -> dict[int, int]:
    clock = [TS0]
    log = Log.open(path, wall_ms=lambda: clock[0])
    log.create_topic("t", TopicConfig(partitions=3, segment_ms=1000, retention_ms=None))
    for seg in range(SEGMENTS):  # 100 records each, crossing midnight (day split, compaction)
        for p in range(3):
            payloads = [b'{"p": %d, "seg": %d, "i": %d}' % (p, seg, i) for i in range(100)]
            append_payloads(log, "t", p, payloads, ts0=TS0 + seg * 100_000, step_ms=1000)
        clock[0] += 2000
    hw = {p.index: p.high_watermark for p in log.topic("t").partitions}
    log.close()
    return hw


def check(path: str, hw: dict[int, int]) -> dict[str, Any]:
    log = Log.open(path, readonly=True)
    try:
        m = mf.load(log.fs, path)
        for p in range(3):
            files = m.files_of("t", p)
            for a, b in itertools.pairwise(files):  # timestamps rise with offsets here: day files are disjoint
                assert a.last_offset < b.first_offset or b.last_offset < a.first_offset, (a, b)
            cur = log.cursors.get("tier")
            pos = cur.get("t", p) if cur is not None else None
            assert pos is None or pos.offset <= m.tiered_upto("t", p), "the cursor ran ahead of the manifest"
        with QuerySession(log, decoders={"t": TopicDecoder(DecoderSpec("json"), decode_json)}) as s:
            rows = s.fetch('SELECT partition, count(*) AS n, count(DISTINCT "offset") AS d, min("offset") AS lo, '
                           'max("offset") AS hi, sum(i) AS s FROM t GROUP BY partition ORDER BY partition').to_pylist()
            assert rows == [{"partition": p, "n": hw[p], "d": hw[p], "lo": 0, "hi": hw[p] - 1,
                             "s": SEGMENTS * sum(range(100))} for p in range(3)], rows
        return {"files": len(m.files), "tiered": sum(m.tiered_upto("t", p) for p in range(3))}
    finally:
        log.close()


def test_kill9_at_random_points_of_tiering(tmp_path: Any) -> None:
    seed = int(os.environ.get("TIER_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    data = str(tmp_path / "data")
    hw = make_data(data)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    killed = 0
    progress = []
    for rnd in range(ROUNDS):
        # Even rounds: at the n-th step of tiering; odd ones: after a random delay; the last two inside compaction
        # (it runs once a pass has tiered everything).
        by_step = rnd % 2 == 0 or rnd >= ROUNDS - 2
        kill_at = f"*:{rng.randint(1, 12)}" if rnd % 2 == 0 else "-:0"
        if rnd >= ROUNDS - 2:
            kill_at = ["compaction_written:1", "compaction_manifest_saved:2"][rnd - (ROUNDS - 2)]
        proc = subprocess.Popen([sys.executable, str(script), data, kill_at], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not by_step and first.startswith(b"ready"):
            time.sleep(rng.uniform(0.0, 0.1))
            proc.send_signal(signal.SIGKILL)
        code = proc.wait(60)
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert code in (0, -signal.SIGKILL), f"seed {seed} round {rnd}: child failed ({code}):\n{err}"
        killed += code == -signal.SIGKILL
        progress.append(check(data, hw))
    assert killed >= ROUNDS // 2, f"seed {seed}: only {killed} rounds were killed mid-tiering: {progress}"
    # The last run completes; what the kills left behind is gone and everything is tiered once.
    done = subprocess.run([sys.executable, str(script), data, "-:0"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    final = check(data, hw)
    assert final["tiered"] == sum(hw[p] - _active(data, p) for p in range(3)), f"seed {seed}: {final}"
    m = mf.load(Log.open(data, readonly=True).fs, data)
    assert sorted(layout.walk_files(layout.tier_dir(data))) == sorted(f.path for f in m.files)
    assert any(len(layout.parse_file_name(os.path.basename(f.path)) or ()) == 3 and
               (layout.parse_file_name(os.path.basename(f.path)) or (0, 0, None))[2] is not None for f in m.files), \
        "compaction ran in the rounds too"
    assert progress[-1]["tiered"] <= final["tiered"]
    print(f"seed {seed}: {killed} of {ROUNDS} rounds killed; progress {progress}")


def _active(path: str, partition: int) -> int:
    """Records in the partition's active segment (never tiered)."""
    log = Log.open(path, readonly=True)
    try:
        seg = log.partition("t", partition).segments[-1]
        return seg.next_offset - seg.base_offset
    finally:
        log.close()
