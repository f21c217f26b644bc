"""Tiering sealed segments: files and manifest, schema evolution without rewriting, undecodable payloads, the
required cursor and hot retention, day split, compaction, cold retention, crash leftovers, recreated topics."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time

import pyarrow.parquet as pq
import pytest

from edgestream.edge.decoders import decode_json
from edgestream.store import Log, TopicConfig
from edgestream.store.tier import layout
from edgestream.store.tier import manifest as mf
from edgestream.store.tier.coldplan import ColdRetention
from edgestream.store.tier.manifest import DecoderSpec, TopicDecoder
from edgestream.store.tier.parquet import ParquetOptions
from edgestream.store.tier.query import QuerySession
from edgestream.store.tier.testing import all_records, append_payloads
from edgestream.store.tier.tierer import CURSOR, Tierer, TierSettings

JSON = {"t": TopicDecoder(DecoderSpec("json"), decode_json)}
DAY1 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)




def sql(log: Log, query: str) -> list[tuple[object, ...]]:
    with QuerySession(log, decoders=JSON) as s:
        return [tuple(r.values()) for r in s.fetch(query).to_pylist()]




@pytest.fixture
def clock() -> list[int]:
    return [DAY1 + 3 * layout.DAY_MS]


def open_log(path: str, clock: list[int]) -> Log:
    return Log.open(path, wall_ms=lambda: clock[0], maintenance_ms=20)


def advance_segment(log: Log, clock: list[int]) -> None:
    """Make the active segments old enough to roll at the next append (segment_ms is 1 s)."""
    clock[0] += 2000


def test_schema_evolution_and_undecodable_payloads(tmp_path: str, clock: list[int]) -> None:
    log = open_log(str(tmp_path), clock)
    log.create_topic("t", TopicConfig(partitions=1, segment_ms=1000, retention_ms=None))
    seg1 = [b'{"sensor": "a", "v": %d}' % i for i in range(50)]
    seg2 = [b'{"sensor": "b", "v": %d.5, "extra": "x"}' % i for i in range(50)]
    seg3 = [b'{"sensor": "c", "v": 1}', b"\xffgarbage", b"", b'{"sensor": "c"', b"[1, 2]"]
    for payloads in (seg1, seg2, seg3):
        append_payloads(log, "t", 0, payloads, ts0=DAY1)
        advance_segment(log, clock)
    append_payloads(log, "t", 0, [b'{"sensor": "hot", "v": 7}'], ts0=DAY1)  # rolls seg3; stays hot
    with Tierer(log, JSON, TierSettings(compact=False)) as tierer:
        assert tierer.run_once() == 3
        root = tierer.root
        first_files = {f.path: os.stat(os.path.join(root, f.path)).st_mtime_ns for f in tierer.manifest.files}
        assert len(first_files) == 3
        append_payloads(log, "t", 0, [b'{"sensor": "d", "v": "n/a"}'] * 3, ts0=DAY1 + 1)
        advance_segment(log, clock)
        append_payloads(log, "t", 0, [b'{"sensor": "e"}'], ts0=DAY1 + 1)  # seals "hot" + the three "d"
        assert tierer.run_once() == 1
        for path, mtime in first_files.items():  # history is never rewritten for a new field or a wider type
            assert os.stat(os.path.join(root, path)).st_mtime_ns == mtime
    with QuerySession(log, decoders=JSON) as s:
        types = dict(s.describe("t"))
        assert types["v"] == "VARCHAR"  # int64, double and text across files read as text
        assert types["extra"] == "VARCHAR"
        rows = s.fetch('SELECT "offset", value, decode_error, sensor, v, extra FROM t ORDER BY "offset"').to_pylist()
    assert [r["offset"] for r in rows] == list(range(110))
    by_offset = {r["offset"]: r for r in rows}
    assert by_offset[0]["v"] == "0" and by_offset[0]["extra"] is None
    assert by_offset[50]["v"] == "0.5" and by_offset[50]["extra"] == "x"
    bad = {o: by_offset[o] for o in (101, 102, 103, 104)}
    assert [b["value"] for b in bad.values()] == [b"\xffgarbage", b"", b'{"sensor": "c"', b"[1, 2]"]
    assert all(b["decode_error"] and b["sensor"] is None and b["v"] is None for b in bad.values())
    assert by_offset[106]["v"] == "n/a"
    log.close()


def test_required_cursor_keeps_untiered_segments_from_hot_retention(tmp_path: str, clock: list[int]) -> None:
    log = open_log(str(tmp_path), clock)
    log.create_topic("t", TopicConfig(partitions=1, segment_ms=1000, retention_bytes=0, retention_ms=None))
    tierer = Tierer(log, JSON, TierSettings(compact=False)).open()
    assert log.cursors.get(CURSOR).required  # type: ignore[union-attr]
    for i in range(4):
        append_payloads(log, "t", 0, [b'{"i": %d}' % i] * 20, ts0=DAY1)
        advance_segment(log, clock)
    append_payloads(log, "t", 0, [b'{"i": 9}'], ts0=DAY1)
    p = log.partition("t", 0)
    time.sleep(0.2)  # several maintenance rounds (every 20 ms) with retention_bytes = 0
    assert p.log_start == 0 and len(p.segments) == 5  # nothing tiered: nothing deleted
    assert tierer.run_once() == 4
    deadline = time.monotonic() + 10
    while p.log_start < 80 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert p.log_start == 80  # tiered segments went; the active one stays
    assert sql(log, 'SELECT count(*), count(DISTINCT "offset"), min("offset") FROM t') == [(81, 81, 0)]
    tierer.close()
    log.close()


def test_midnight_split_compaction_and_cold_retention(tmp_path: str, clock: list[int]) -> None:
    log = open_log(str(tmp_path), clock)
    log.create_topic("t", TopicConfig(partitions=2, segment_ms=1000, retention_ms=None))
    step = layout.DAY_MS // 10  # 10 records per day; segments of 5 from 0.3 days on: two span midnight
    for seg in range(4):
        for p in (0, 1):
            append_payloads(log, "t", p, [b'{"x": 1}'] * 5, ts0=DAY1 + (3 + seg * 5) * step, step_ms=step)
        advance_segment(log, clock)
    for p in (0, 1):
        append_payloads(log, "t", p, [b'{"x": 2}'], ts0=DAY1 + 3 * layout.DAY_MS)
    truth = {(r.partition, r.offset) for r in all_records(log, "t")}
    with Tierer(log, JSON, TierSettings(compact=False), wall_ms=lambda: clock[0]) as tierer:
        tierer.run_once()
        files = tierer.manifest.files_of("t", 0)
        assert [(f.path.split("/")[1], f.first_offset, f.last_offset) for f in files] == [
            ("date=2026-01-01", 0, 4), ("date=2026-01-01", 5, 6), ("date=2026-01-02", 7, 9),
            ("date=2026-01-02", 10, 14), ("date=2026-01-02", 15, 16), ("date=2026-01-03", 17, 19)]
        assert tierer.compact_days() == 4  # per partition, day 1 (2 files) and day 2 (3 files); day 3 has one
        files = tierer.manifest.files_of("t", 0)
        assert [(f.first_offset, f.last_offset, f.rows) for f in files] == [(0, 6, 7), (7, 16, 10), (17, 19, 3)]
        assert layout.parse_file_name(os.path.basename(files[0].path)) == (0, 0, 6)
        assert sorted(layout.walk_files(tierer.root)) == sorted(f.path for f in tierer.manifest.files)
        assert sorted(sql(log, 'SELECT partition, "offset" FROM t')) == sorted(truth)  # each offset still once
        tierer.settings = TierSettings(compact=False, retention=ColdRetention(retention_ms=2 * layout.DAY_MS))
        assert tierer.apply_retention() == 2  # day 1 of both partitions is older than 2 days
        got = sql(log, 'SELECT partition, "offset" FROM t')
        assert sorted(got) == sorted((p, o) for p, o in truth if o >= 7)  # and not served from the hot log either
    log.close()


def test_open_removes_what_an_interrupted_run_left(tmp_path: str, clock: list[int]) -> None:
    log = open_log(str(tmp_path), clock)
    log.create_topic("t", TopicConfig(partitions=1, segment_ms=1000, retention_ms=None))
    append_payloads(log, "t", 0, [b'{"a": 1}'] * 10, ts0=DAY1)
    advance_segment(log, clock)
    append_payloads(log, "t", 0, [b'{"a": 1}'], ts0=DAY1)
    with Tierer(log, JSON) as tierer:
        tierer.run_once()
        listed = [f.path for f in tierer.manifest.files]
    leftovers = ["t/date=2026-01-01/part-0-10.parquet", "t/date=2026-01-01/part-0-10.parquet.tmp",
                 "t/date=2026-01-09/part-0-99.parquet"]
    for rel in leftovers:
        os.makedirs(os.path.dirname(os.path.join(layout.tier_dir(str(tmp_path)), rel)), exist_ok=True)
        with open(os.path.join(layout.tier_dir(str(tmp_path)), rel), "wb") as f:
            f.write(b"PAR1 half a file")
    with Tierer(log, JSON) as tierer:
        assert layout.walk_files(tierer.root) == listed
        assert not os.path.exists(os.path.join(tierer.root, "t", "date=2026-01-09"))
    log.close()


def test_a_recreated_topic_is_not_mixed_with_the_old_one(tmp_path: str, clock: list[int]) -> None:
    log = open_log(str(tmp_path), clock)
    log.create_topic("t", TopicConfig(partitions=1, segment_ms=1000, retention_ms=None))
    append_payloads(log, "t", 0, [b"{}"] * 5, ts0=DAY1)
    advance_segment(log, clock)
    append_payloads(log, "t", 0, [b"{}"], ts0=DAY1)
    with Tierer(log, JSON) as tierer:
        tierer.run_once()
    log.delete_topic("t")
    log.create_topic("t", TopicConfig(partitions=1, segment_ms=1000, retention_ms=None))
    with Tierer(log, JSON) as tierer:
        assert tierer.run_once() == 0
        (conflict,) = tierer.statistics().conflicts
        assert "recreated" in conflict
    assert mf.load(log.fs, log.data_dir).tiered_upto("t", 0) == 5
    log.close()


def _three_segments(log: Log, clock: list[int]) -> None:
    log.create_topic("t", TopicConfig(partitions=1, segment_ms=1000, retention_ms=None))
    for seg in range(3):
        payloads = [b'{"sensor": "s%d", "v": %d.5, "seg": %d}' % (i % 7, i, seg) for i in range(1000)]
        append_payloads(log, "t", 0, payloads, ts0=DAY1 + seg, key=lambda i, v: v[12:14], batch=37)
        advance_segment(log, clock)
    append_payloads(log, "t", 0, [b"{}"], ts0=DAY1)  # seals the third


def test_the_two_thread_build_writes_the_same_files(tmp_path: str, clock: list[int]) -> None:
    """`tier run` builds the next chunk while writing this one: the files are exactly those of one thread. Both
    tier copies of one log: chunks end at frame boundaries, and group commit frames differ from run to run."""
    source = os.path.join(str(tmp_path), "log")
    log = open_log(source, clock)
    _three_segments(log, clock)
    log.close()
    contents = []
    for threads in (False, True):
        copy = os.path.join(str(tmp_path), str(threads))
        shutil.copytree(source, copy)
        log = open_log(copy, clock)
        settings = TierSettings(compact=False, threads=threads, parquet=ParquetOptions(row_group_rows=300))
        with Tierer(log, JSON, settings) as tierer:
            assert tierer.run_once() == 3
            files = {f.path: pq.read_table(os.path.join(tierer.root, f.path)) for f in tierer.manifest.files}
        assert sum(t.num_rows for t in files.values()) == 3000
        contents.append({path: (t.schema, t.to_pylist()) for path, t in files.items()})
        log.close()
    assert contents[0] == contents[1]


@pytest.mark.parametrize("threads", [False, True])
def test_a_stop_while_building_leaves_nothing_and_the_next_run_tiers_all(tmp_path: str, clock: list[int],
                                                                         threads: bool) -> None:
    log = open_log(str(tmp_path), clock)
    _three_segments(log, clock)
    calls = [0]
    tierer: Tierer

    def decode(payload: bytes) -> dict[str, object]:  # the per-record path; stops the tierer mid-segment
        calls[0] += 1
        if calls[0] == 1500:
            tierer.stopping.set()
        return decode_json(payload)

    slow = {"t": TopicDecoder(DecoderSpec("csv", ("x",)), decode)}
    settings = TierSettings(compact=False, threads=threads, parquet=ParquetOptions(row_group_rows=300))
    with Tierer(log, slow, settings) as tierer:
        assert tierer.run_once() == 1  # the first segment; the stop came in the second
        assert [f.last_offset for f in tierer.manifest.files] == [999]
        assert layout.walk_files(tierer.root) == [f.path for f in tierer.manifest.files]  # no temp file left
    with Tierer(log, JSON, TierSettings(compact=False, threads=threads)) as tierer:
        assert tierer.run_once() == 2
    assert sql(log, 'SELECT count(*), count(DISTINCT "offset") FROM t') == [(3001, 3001)]
    log.close()
