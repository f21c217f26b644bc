"""`edgestream check [--repair]` through the installed binary."""

from __future__ import annotations

import json
import os

from edgestream.store import Log, TopicConfig
from tests.cli import assert_clean_error, run


def _fill(d: str) -> None:
    with Log.open(d) as log:
        log.create_topic("t", TopicConfig(partitions=2, segment_bytes=8192, frame_bytes=1024))
        for i in range(400):
            log.append("t", i % 2, os.urandom(60).hex().encode())
            if i % 50 == 49:  # several writes: one write of everything queued goes into one segment, however big
                log.flush()
        log.flush()


def test_intact_data_dir_is_ok(tmp_path) -> None:
    d = str(tmp_path)
    _fill(d)
    r = run("check", data_dir=d)
    assert r.code == 0, r.out
    assert "OK: 2 partitions, 400 records" in r.out
    report = json.loads(run("check", "--json", data_dir=d).out)
    assert report["ok"] is True and sum(p["records"] for p in report["partitions"]) == 400


def test_corruption_is_reported_in_plain_words_and_repaired(tmp_path) -> None:
    d = str(tmp_path)
    _fill(d)
    pdir = os.path.join(d, "topics", "t", "0")
    segs = sorted(n for n in os.listdir(pdir) if n.endswith(".log"))
    assert len(segs) >= 2
    sealed = os.path.join(pdir, segs[0])
    with open(sealed, "r+b") as f:  # flip a byte inside the first frame's body
        f.seek(64 + 60)
        b = f.read(1)
        f.seek(64 + 60)
        f.write(bytes([b[0] ^ 0x40]))
    r = run("check", data_dir=d)
    assert r.code == 1
    assert "body_crc" in r.out and "sealed segment (recovery quarantines it)" in r.out
    assert "check --repair" in r.out
    r = run("check", "--repair", data_dir=d)
    assert r.code == 0, r.out
    assert "repaired:" in r.out and "quarantined" in r.out
    assert any(n.endswith(".quarantined") for n in os.listdir(pdir)), "kept for inspection, never deleted"


def test_check_refuses_while_the_gateway_runs(tmp_path) -> None:
    d = str(tmp_path)
    _fill(d)
    with Log.open(d):
        assert_clean_error(run("check", data_dir=d), "in use by another edgestream process")
