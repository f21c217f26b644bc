"""The tier's pure parts: the manifest (commit semantics, torn files), cold retention and compaction plans, the
replay rate limiter and job names, and the SQL statement guard."""

from __future__ import annotations

import os

import pytest

from edgestream.store.errors import CorruptStateError
from edgestream.store.fs import OsFileSystem
from edgestream.store.tier import layout
from edgestream.store.tier import manifest as mf
from edgestream.store.tier.coldplan import ColdRetention, compaction_plan, retention_plan
from edgestream.store.tier.manifest import DecoderSpec, Manifest, TierFile

DAY = layout.DAY_MS


def tf(p: int, first: int, last: int, *, max_ts: int = 0, size: int = 100, day: str = "2026-01-01",
       topic: str = "t") -> TierFile:
    return TierFile(layout.file_relpath(topic, day, p, first), topic, p, first, last, last - first + 1, max_ts - 5,
                    max_ts, size, 0, 0)


def test_manifest_round_trip_and_commit_semantics(tmp_path: os.PathLike[str]) -> None:
    fs, d = OsFileSystem(), str(tmp_path)
    assert mf.load(fs, d) == Manifest()
    m = Manifest().with_topic("t", DecoderSpec("csv", ("a", "b"), ";"))
    m = m.with_segment("t", 0, "ab" * 16, [tf(0, 0, 9)], 10)
    m = m.with_segment("t", 0, "ab" * 16, [tf(0, 12, 19)], 20, skipped=2)
    m.save(fs, d)
    back = mf.load(fs, d)
    assert back == m
    assert back.tiered_upto("t", 0) == 20 and back.tiered_upto("t", 1) == 0
    assert back.partition("t", 0).skipped == 2  # type: ignore[union-attr]
    assert back.decoder("t") == DecoderSpec("csv", ("a", "b"), ";")
    assert [f.first_offset for f in back.files_of("t", 0)] == [0, 12]
    merged = tf(0, 0, 19)
    swapped = back.without_files({f.path for f in back.files}, add=(merged,))
    assert swapped.files == (merged,) and swapped.tiered_upto("t", 0) == 20  # compaction never moves tiered_upto


def test_torn_manifest_is_refused_not_guessed(tmp_path: os.PathLike[str]) -> None:
    fs, d = OsFileSystem(), str(tmp_path)
    Manifest().with_segment("t", 0, "x", [tf(0, 0, 9)], 10).save(fs, d)
    path = layout.manifest_path(d)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-3])
    with pytest.raises(CorruptStateError):
        mf.load(fs, d)


def test_retention_by_age_and_by_bytes_oldest_first() -> None:
    files = [tf(0, 0, 9, max_ts=1 * DAY), tf(0, 10, 19, max_ts=2 * DAY), tf(1, 0, 9, max_ts=3 * DAY),
             tf(0, 20, 29, max_ts=4 * DAY)]
    by_age = retention_plan(files, ColdRetention(retention_ms=2 * DAY), now_ms=4 * DAY)
    assert [f.max_ts for f in by_age] == [DAY]  # 2 * DAY is exactly at the limit: kept
    by_size = retention_plan(files, ColdRetention(retention_bytes=250), now_ms=0)
    assert [f.max_ts for f in by_size] == [DAY, 2 * DAY]
    assert retention_plan(files, ColdRetention(), now_ms=10**15) == []


def test_compaction_merges_small_files_of_closed_days_per_partition() -> None:
    files = [tf(0, 0, 9, day="2026-01-01"), tf(0, 10, 19, day="2026-01-01"), tf(0, 20, 29, day="2026-01-01",
                                                                                 size=10**9),
             tf(1, 0, 9, day="2026-01-01"), tf(0, 30, 39, day="2026-01-02"), tf(0, 40, 49, day="2026-01-02")]
    plans = compaction_plan(files, small_bytes=1000, max_bytes=10_000, today="2026-01-02")
    assert [[f.first_offset for f in g] for g in plans] == [[0, 10]]  # today's files and lone files stay
    capped = compaction_plan([tf(0, i * 10, i * 10 + 9) for i in range(5)], small_bytes=1000, max_bytes=250,
                             today="2027-01-01")
    assert [[f.first_offset for f in g] for g in capped] == [[0, 10], [20, 30]]


def test_token_bucket_paces_to_the_rate() -> None:
    from edgestream.store.tier.replay import TokenBucket

    now = [0.0]
    bucket = TokenBucket(100.0, lambda: now[0])
    assert bucket.wait_for(100) == 0.0  # one second's burst
    assert bucket.wait_for(50) == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.wait_for(50) == pytest.approx(0.5)


def test_replay_job_name_is_stable_per_command() -> None:
    from edgestream.store.tier.replay import ReplayRange, job_name

    a = job_name("t", "kafka:b:9092/t", ReplayRange(0, 10))
    assert a == job_name("t", "kafka:b:9092/t", ReplayRange(0, 10))
    assert a != job_name("t", "kafka:b:9092/t", ReplayRange(0, 11))
    assert a.startswith("replay-")


@pytest.mark.parametrize("sql", [
    "SELECT 1", "select * from t where x = 1", "WITH a AS (SELECT 1) SELECT * FROM a", "FROM t", "DESCRIBE t",
    "EXPLAIN SELECT 1", "EXPLAIN ANALYZE SELECT 1", "SELECT 1;",
])
def test_read_only_statements_pass(sql: str) -> None:
    from edgestream.store.tier.query import check_sql

    assert check_sql(sql) == sql


@pytest.mark.parametrize(("sql", "why"), [
    ("INSERT INTO t VALUES (1)", "INSERT"), ("CREATE TABLE x AS SELECT 1", "CREATE"), ("DROP VIEW t", "DROP"),
    ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"), ("ATTACH 'x.db'", "ATTACH"), ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"), ("SET enable_external_access = true", "SET"), ("PRAGMA version", "PRAGMA"),
    ("CALL pragma_version()", "CALL"), ("SELECT 1; DELETE FROM t", "2 statements"),
    ("EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", "CREATE"), ("UPDATE t SET a = 1", "UPDATE"), ("", "no statement"),
])
def test_everything_else_is_refused_with_the_reason(sql: str, why: str) -> None:
    from edgestream.store.tier.errors import QueryRefusedError
    from edgestream.store.tier.query import check_sql

    with pytest.raises(QueryRefusedError, match=why):
        check_sql(sql)


@pytest.mark.parametrize(("sql", "hint"), [
    ("SELECT offset, ts FROM t", True), ("SELECT max(offset) FROM t", True), ("SELECT * FROM t WHERE offset > 5", True),
    ("SELECT * FROM t LIMIT 5 OFFSET", False), ("SELECT FROM WHERE", False),
])
def test_a_bare_offset_column_gets_a_hint_to_quote_it(sql: str, hint: bool) -> None:
    from edgestream.store.tier.errors import QueryFailedError
    from edgestream.store.tier.query import check_sql

    with pytest.raises(QueryFailedError) as info:
        check_sql(sql)
    assert ('"offset"' in str(info.value)) is hint
