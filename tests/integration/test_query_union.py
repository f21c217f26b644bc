"""The topic views: cold tier + hot records, each offset exactly once, equal to a brute-force scan of the log for
random ranges; read-only and locked down; usable beside a writer."""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgestream.edge.decoders import decode_json
from edgestream.edge.simulate.telemetry import fleet, stream
from edgestream.store import Log, TopicConfig
from edgestream.store.record import Record
from edgestream.store.tier.errors import QueryRefusedError
from edgestream.store.tier.manifest import DecoderSpec, TopicDecoder
from edgestream.store.tier.query import QuerySession
from edgestream.store.tier.testing import all_records, append_payloads
from edgestream.store.tier.tierer import Tierer, TierSettings

JSON = {"t": TopicDecoder(DecoderSpec("json"), decode_json)}
TS0 = int(dt.datetime(2026, 3, 1, 23, 0, tzinfo=dt.UTC).timestamp() * 1000)
STEP = 700  # ms between records of a partition: 3000 records cross midnight


class World:
    def __init__(self, log: Log, session: QuerySession, truth: list[Record]) -> None:
        self.log = log
        self.session = session
        self.truth = truth
        self.hw = {p.index: p.high_watermark for p in log.topic("t").partitions}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    path = str(tmp_path_factory.mktemp("union"))
    clock = [TS0]
    log = Log.open(path, wall_ms=lambda: clock[0])
    log.create_topic("t", TopicConfig(partitions=3, segment_ms=1000, retention_ms=None))
    samples = stream(fleet(20), TS0, 1000, malformed_rate=0.02, seed=3)
    tierer = Tierer(log, JSON, TierSettings(compact=False)).open()
    for rnd in range(6):
        for p in range(3):
            payloads = [v for _, v in itertools.islice(samples, 500)]
            if rnd >= 3:  # a new field and a wider type in later segments
                payloads = [v.replace(b'"seq":', b'"extra":true,"seq":') for v in payloads]
            append_payloads(log, "t", p, payloads, ts0=TS0 + rnd * 500 * STEP, step_ms=STEP,
                            key=lambda i, v: b"k%d" % (i % 7))
        clock[0] += 2000
        if rnd in (1, 3):
            tierer.run_once()  # rounds 0-1 and 2-3 cold; 4 sealed but hot; 5 active
    tierer.close()
    truth = all_records(log, "t")
    log.close()
    ro = Log.open(path, readonly=True)
    with QuerySession(ro, decoders=JSON) as session:
        assert session.views["t"][0] > 0 and session.views["t"][1] > 0  # both sides are really in play
        yield World(ro, session, truth)
    ro.close()


def rows(session: QuerySession, sql: str) -> list[dict[str, Any]]:
    return session.fetch(sql).to_pylist()


def test_every_offset_exactly_once(world: World) -> None:
    got = rows(world.session, 'SELECT partition, count(*) n, count(DISTINCT "offset") d, min("offset") lo, '
                              'max("offset") hi FROM t GROUP BY partition ORDER BY partition')
    assert got == [{"partition": p, "n": world.hw[p], "d": world.hw[p], "lo": 0, "hi": world.hw[p] - 1}
                   for p in range(3)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_ranges_equal_a_brute_force_scan(world: World, data: st.DataObject) -> None:
    parts = data.draw(st.sets(st.integers(0, 2), min_size=1))
    lo = data.draw(st.integers(0, 3100))
    hi = data.draw(st.integers(lo, 3100))
    t_lo = TS0 + data.draw(st.integers(0, 3000)) * STEP
    t_hi = t_lo + data.draw(st.integers(0, 3000)) * STEP
    use_time = data.draw(st.booleans())
    where = f'partition IN ({", ".join(map(str, sorted(parts)))}) AND "offset" >= {lo} AND "offset" < {hi}'
    if use_time:
        where += f" AND ts >= epoch_ms({t_lo}) AND ts < epoch_ms({t_hi})"
    got = rows(world.session, f'SELECT partition, "offset", epoch, epoch_ms(ts) ts, key, value, seq FROM t '
                              f'WHERE {where} ORDER BY partition, "offset"')
    want = [r for r in world.truth if r.partition in parts and lo <= r.offset < hi
            and (not use_time or t_lo <= r.timestamp_ms < t_hi)]
    assert [(g["partition"], g["offset"], g["epoch"], g["ts"], g["key"], g["value"]) for g in got] == [
        (r.partition, r.offset, r.epoch, r.timestamp_ms, r.key, r.value) for r in want]
    assert [g["seq"] for g in got] == [_field(r.value, "seq") for r in want]  # typed column from either side


def _field(value: bytes, name: str) -> Any:
    try:
        obj = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return None
    return obj.get(name) if isinstance(obj, dict) else None


def test_schema_evolution_reads_by_name(world: World) -> None:
    types = dict(world.session.describe("t"))
    assert types["extra"] == "BOOLEAN" and types["seq"] == "BIGINT" and types["payload_value"] == "DOUBLE"
    (row,) = rows(world.session, "SELECT count(*) FILTER (WHERE extra) AS with_extra, count(*) FILTER "
                                 "(WHERE extra IS NULL) AS without FROM t WHERE decode_error IS NULL")
    assert row["with_extra"] > 0 and row["without"] > 0


@pytest.mark.parametrize(("sql", "needle"), [
    ("INSERT INTO t SELECT * FROM t", "INSERT"),
    ("CREATE TABLE x AS SELECT * FROM t", "CREATE"),
    ("COPY t TO '{dir}/out.csv'", "COPY"),
    ("ATTACH '{dir}/x.db' AS x", "ATTACH"),
    ("INSTALL httpfs", "INSTALL"),
    ("SELECT * FROM read_csv('/etc/passwd')", "disabled by configuration"),
    ("SELECT * FROM read_text('/etc/passwd')", "disabled by configuration"),
    ("SELECT * FROM read_parquet('{dir}/../*/*.parquet')", "disabled by configuration"),
    ("SET enable_external_access = true", "SET"),
])
def test_forbidden_sql_is_refused(world: World, sql: str, needle: str) -> None:
    before = sorted(os.listdir(world.log.data_dir))
    with pytest.raises(QueryRefusedError, match=needle) as info:
        world.session.fetch(sql.format(dir=world.log.data_dir))
    assert "query refused" in str(info.value)
    assert sorted(os.listdir(world.log.data_dir)) == before
    assert rows(world.session, "SELECT count(*) AS n FROM t")[0]["n"] == sum(world.hw.values())  # still usable


def test_settings_are_locked(world: World) -> None:
    (row,) = rows(world.session, "SELECT current_setting('memory_limit') AS m, current_setting('threads') AS t, "
                                 "current_setting('enable_external_access') AS e")
    assert row["m"].replace(" ", "").upper().startswith(("256", "244")) and row["t"] == 2 and row["e"] is False


def test_query_beside_a_writer(tmp_path: str) -> None:
    writer = Log.open(str(tmp_path))
    writer.create_topic("t", TopicConfig(partitions=1, retention_ms=None))
    append_payloads(writer, "t", 0, [b'{"n": %d}' % i for i in range(1000)], ts0=TS0)
    reader = Log.open(str(tmp_path), readonly=True)  # the writer holds the data dir's lock
    append_payloads(writer, "t", 0, [b'{"n": 0}'] * 10, ts0=TS0)  # after the reader's snapshot
    with QuerySession(reader, decoders=JSON) as s:
        assert rows(s, "SELECT count(*) c, sum(n) s FROM t") == [{"c": 1000, "s": sum(range(1000))}]
    reader.close()
    writer.close()


def test_demo_queries_run_and_find_something(world: World) -> None:
    from edgestream.store.tier.recipes import demo_queries

    results = {title: rows(world.session, sql) for title, sql in demo_queries("t")}
    per_minute, gaps, anomalies = results.values()
    assert per_minute and all(r["min"] <= r["avg"] <= r["max"] for r in per_minute)
    assert gaps and all(r["seconds"] > r["usual_period_s"] for r in gaps)  # the simulator's dropouts
    assert anomalies and abs(anomalies[0]["z"]) >= abs(anomalies[-1]["z"])
