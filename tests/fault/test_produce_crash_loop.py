"""Crash loop through the CLI: `edgestream produce --report-offsets` is SIGKILLed at random moments.

After every kill, every record the child reported ("<partition> <offset>", printed only once durable) must read
back with the same offset and bytes; offsets stay contiguous; an offset that comes back with different content
must carry a higher epoch (recovery raised it), never the same identity.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

import pytest

from edgestream.store import Log
from tests.cli import EDGESTREAM, run

pytestmark = [pytest.mark.fault, pytest.mark.slow]

ROUNDS = 32


def _feed(proc: subprocess.Popen[bytes], lines: list[bytes], stop: threading.Event) -> None:
    try:
        assert proc.stdin is not None
        i = 0
        while not stop.is_set() and i < len(lines):
            chunk = b"".join(lines[i : i + 50])
            proc.stdin.write(chunk)
            proc.stdin.flush()
            i += 50
            time.sleep(0.002)  # a steady stream, so kills land mid-batch, mid-fsync and mid-roll
    except (BrokenPipeError, ValueError, OSError):
        pass


def test_sigkill_produce_loses_nothing_reported(tmp_path: os.PathLike[str]) -> None:
    data = str(tmp_path)
    r = run("topics", "create", "crash", "--partitions", "2", "--segment-bytes", "65536", "--linger-ms", "1",
            data_dir=data)
    assert r.code == 0, r.err
    rng = random.Random(20261127)
    reported: dict[tuple[int, int], bytes] = {}
    seen: dict[tuple[int, int], tuple[int, bytes]] = {}
    kills_with_output = 0
    for rnd in range(ROUNDS):
        lines = [f"round{rnd:02d}-line{i:06d}-{'x' * rng.randint(0, 120)}\n".encode() for i in range(8000)]
        proc = subprocess.Popen(
            [EDGESTREAM, "--data-dir", data, "produce", "crash", "--report-offsets"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        stop = threading.Event()
        feeder = threading.Thread(target=_feed, args=(proc, lines, stop), daemon=True)
        feeder.start()
        out: list[bytes] = []
        first = threading.Event()

        def read(p: subprocess.Popen[bytes] = proc, out: list[bytes] = out, first: threading.Event = first) -> None:
            assert p.stdout is not None
            while chunk := p.stdout.read1(65536):
                out.append(chunk)
                first.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if rnd % 4 == 0:
            # Kill anywhere from "still importing" through "recovering" to the first batches.
            time.sleep(rng.uniform(0.0, 0.8))
        else:
            # Kill in the stream: mid-batch, mid-fsync, mid-roll.
            first.wait(timeout=30)
            time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stop.set()
        reader.join(timeout=30)
        feeder.join(timeout=30)
        text = b"".join(out).decode()
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]  # a torn last line is unsure
        got = [tuple(map(int, ln.split())) for ln in complete.splitlines() if ln.strip()]
        # The k-th reported offset belongs to the k-th input line (produce reports in input order).
        for k, (part, off) in enumerate(got):
            reported[(part, off)] = lines[k].rstrip(b"\n")
        if got:
            kills_with_output += 1

        with Log.open(data, readonly=True) as log:
            for part in (0, 1):
                p = log.partition("crash", part)
                offset = p.log_start
                expected_next = offset
                while True:
                    recs = log.read("crash", part, offset, max_records=5000, max_bytes=1 << 24)
                    if not recs:
                        break
                    for rec in recs:
                        assert rec.offset == expected_next, f"offset gap at {part}/{rec.offset}"
                        expected_next += 1
                        key = (part, rec.offset)
                        if key in seen and seen[key][1] != rec.value:
                            assert rec.epoch > seen[key][0], (
                                f"{part}/{rec.offset} changed content without an epoch bump"
                            )
                        seen[key] = (rec.epoch, rec.value)
                    offset = recs[-1].offset + 1
            for (part, off), value in reported.items():
                recs = log.read("crash", part, off, max_records=1)
                assert recs and recs[0].offset == off, f"acknowledged record {part}/{off} is gone"
                assert recs[0].value == value, f"acknowledged record {part}/{off} has other bytes"
    assert kills_with_output >= ROUNDS // 2, "most rounds should have acknowledged something before the kill"
    assert len(reported) > 1000
    # And the data dir is intact after all that: `check` after one clean open.
    with Log.open(data):
        pass
    chk = run("check", data_dir=data)
    assert chk.code == 0, chk.out + chk.err
