"""Replay reproduces a range exactly (cold + hot, each offset once): to files and to another topic; an
interrupted replay resumes from its cursor; replay to a real Kafka carries the identity headers."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgestream.edge.decoders import decode_json
from edgestream.gateway.identity import Identity
from edgestream.store import Log, TopicConfig
from edgestream.store.record import Record
from edgestream.store.tier import manifest as mf
from edgestream.store.tier.errors import ReplayError
from edgestream.store.tier.manifest import DecoderSpec, TopicDecoder
from edgestream.store.tier.replay import Replayer, ReplayRange, job_name
from edgestream.store.tier.sinks import TopicSink, file_sink
from edgestream.store.tier.testing import all_records, append_payloads
from edgestream.store.tier.tierer import Tierer, TierSettings
from tests import cli

JSON = {"t": TopicDecoder(DecoderSpec("json"), decode_json)}
TS0 = int(dt.datetime(2026, 5, 1, tzinfo=dt.UTC).timestamp() * 1000)
HEADERS = (("src", b"\xff\x01bin"), ("kind", b"test"))


@pytest.fixture
def data(tmp_path: str) -> Iterator[str]:
    """A topic of 2 partitions x 600 records: 400 per partition tiered, the rest hot; some with headers/keys."""
    path = os.path.join(str(tmp_path), "data")
    clock = [TS0]
    log = Log.open(path, wall_ms=lambda: clock[0])
    log.create_topic("t", TopicConfig(partitions=2, segment_ms=1000, retention_ms=None))
    for rnd in range(3):
        for p in range(2):
            payloads = [b'{"p": %d, "i": %d}' % (p, rnd * 200 + i) for i in range(200)]
            if rnd == 1:
                payloads[5] = b"\xff\xfe not json"
            append_payloads(log, "t", p, payloads, ts0=TS0 + rnd * 200_000, step_ms=1000,
                            key=(lambda i, v: b"k%d" % (i % 3)) if p else (lambda i, v: None),
                            headers=HEADERS if rnd == 2 else ())
        clock[0] += 2000
        if rnd == 1:
            with Tierer(log, JSON, TierSettings(compact=False)) as tierer:
                assert tierer.run_once() == 2
    log.close()
    yield path


def source(path: str, rng: ReplayRange) -> list[Record]:
    log = Log.open(path, readonly=True)
    try:
        return [r for r in all_records(log, "t") if (rng.partitions is None or r.partition in rng.partitions)
                and (rng.from_offset is None or r.offset >= rng.from_offset)
                and (rng.to_offset is None or r.offset < rng.to_offset)
                and (rng.from_ms is None or r.timestamp_ms >= rng.from_ms)
                and (rng.to_ms is None or r.timestamp_ms < rng.to_ms)]
    finally:
        log.close()


def replay(path: str, rng: ReplayRange, sink: Any, log: Log | None = None, **kw: Any) -> Any:
    own = log is None
    log = log or Log.open(path, readonly=True)
    try:
        return Replayer(log, mf.load(log.fs, log.data_dir), "t", rng, sink, job=job_name("t", "x", rng), **kw).run()
    finally:
        if own:
            log.close()


RANGES = [ReplayRange(), ReplayRange(from_offset=150, to_offset=450),  # across the cold/hot boundary (400)
          ReplayRange(from_ms=TS0 + 100_000, to_ms=TS0 + 500_000, partitions=(1,))]


@pytest.mark.parametrize("rng", RANGES, ids=["all", "offsets", "time"])
def test_replay_to_parquet_reproduces_the_range(data: str, tmp_path: str, rng: ReplayRange) -> None:
    out = os.path.join(str(tmp_path), "out.parquet")
    result = replay(data, rng, file_sink(out))
    want = source(data, rng)
    got = pq.read_table(out).to_pylist()
    assert result.records == len(want) > 0
    assert [(g["partition"], g["offset"], g["epoch"], int(g["ts"].replace(tzinfo=dt.UTC).timestamp() * 1000),
             g["key"], g["value"], tuple((h["name"], h["value"]) for h in g["headers"] or [])) for g in got] == [
        (r.partition, r.offset, r.epoch, r.timestamp_ms, r.key, r.value, r.headers) for r in want]
    assert not os.path.exists(out + ".partial")


def test_replay_to_jsonl_and_csv(data: str, tmp_path: str) -> None:
    rng = ReplayRange(from_offset=190, to_offset=410)
    want = source(data, rng)
    jl = os.path.join(str(tmp_path), "out.jsonl")
    replay(data, rng, file_sink(jl))
    with open(jl) as f:
        objs = [json.loads(line) for line in f]
    assert [(o["partition"], o["offset"], o["timestamp_ms"]) for o in objs] == [
        (r.partition, r.offset, r.timestamp_ms) for r in want]
    assert [o["value"].encode() if o["value"] is not None else base64.b64decode(o["value_b64"]) for o in objs] == [
        r.value for r in want]
    assert any("value_b64" in o for o in objs)  # the undecodable payload survives byte for byte
    with_headers = [o for o in objs if o["headers"]]
    assert with_headers and with_headers[0]["headers"] == {"src_b64": base64.b64encode(b"\xff\x01bin").decode(),
                                                           "kind": "test"}
    cv = os.path.join(str(tmp_path), "out.csv")
    replay(data, rng, file_sink(cv))
    with open(cv, newline="") as f:
        table = list(csv.DictReader(f))
    assert [(int(r["partition"]), int(r["offset"])) for r in table] == [(r.partition, r.offset) for r in want]
    assert [base64.b64decode(r["value"][7:]) if r["value"].startswith("base64:") else r["value"].encode()
            for r in table] == [r.value for r in want]


def test_unknown_file_type_is_refused(tmp_path: str) -> None:
    with pytest.raises(ReplayError, match=r"\.parquet, \.jsonl or \.csv"):
        file_sink(os.path.join(str(tmp_path), "out.xlsx"))


class Interrupting:
    """A sink that stops the replay (as Ctrl-C would) after `after` writes."""

    def __init__(self, inner: TopicSink, after: int) -> None:
        self.inner = inner
        self.after = after
        self.resumable = True

    def write(self, table: pa.Table) -> None:
        if self.after == 0:
            raise KeyboardInterrupt
        self.after -= 1
        self.inner.write(table)

    def checkpoint(self) -> None:
        self.inner.checkpoint()

    def close(self, complete: bool) -> None:
        self.inner.close(complete)


def test_replay_to_a_topic_resumes_after_interruption(data: str) -> None:
    log = Log.open(data)
    log.create_topic("copy", TopicConfig(partitions=2, retention_ms=None))
    rng = ReplayRange(from_offset=100)
    with pytest.raises(KeyboardInterrupt):
        replay(data, rng, Interrupting(TopicSink(log, "copy"), after=7), log=log, rate=1000, sleep=lambda s: None,
               checkpoint_records=100)
    cursor = log.cursors.get(job_name("t", "x", rng))
    assert cursor is not None and cursor.get("t", 0) is not None  # progress was checkpointed
    result = replay(data, rng, TopicSink(log, "copy"), log=log, rate=1000, sleep=lambda s: None, checkpoint_records=100)
    assert result.resumed
    assert log.cursors.get(job_name("t", "x", rng)) is None  # done: the cursor is gone
    want = source(data, rng)
    got = all_records(log, "copy")
    # at least once: everything, in order per partition; duplicates only from after the last checkpoint
    for p in (0, 1):
        src = [(r.key, r.value, r.headers, r.timestamp_ms) for r in want if r.partition == p]
        dst = [(r.key, r.value, r.headers, r.timestamp_ms) for r in got if r.partition == p]
        assert list(dict.fromkeys(dst)) == list(dict.fromkeys(src))
    assert len(want) <= len(got) <= len(want) + 100
    log.close()


def test_cli_replay_to_file_and_topic(data: str, tmp_path: str) -> None:
    out = os.path.join(str(tmp_path), "cli.jsonl")
    r = cli.run("replay", "t", "--from-offset", "350", "--to-offset", "420", "--to", f"file:{out}", data_dir=data)
    assert r.code == 0, r.err
    want = source(data, ReplayRange(350, 420))
    assert f"replayed {len(want)} records" in r.err
    with open(out) as f:
        assert [json.loads(line)["offset"] for line in f] == [x.offset for x in want]
    r = cli.run("replay", "t", "-p", "1", "--to", "topic:t-copy", data_dir=data)
    assert r.code == 0, r.err
    log = Log.open(data, readonly=True)
    try:
        assert [x.value for x in all_records(log, "t-copy")] == [x.value for x in source(data, ReplayRange(
            partitions=(1,)))]
    finally:
        log.close()
    for dest, needle in (("s3:bucket", "kafka:<bootstrap|target>"), ("topic:t", "into itself"),
                         ("kafka:nosuchtarget", "no Kafka target named")):
        r = cli.run("replay", "t", "--to", dest, data_dir=data)
        assert r.code == 2 and needle in r.err and "Traceback" not in r.err, r.err  # a usage error


@pytest.mark.kafka
def test_cli_replay_to_kafka_carries_identity_headers(data: str, kafka: Any) -> None:
    topic = kafka.new_topic("replay", partitions=2)
    rng = ReplayRange(from_offset=380, to_offset=420)
    want = source(data, rng)
    r = cli.run("replay", "t", "--from-offset", "380", "--to-offset", "420", "--to", f"kafka:{kafka.bootstrap}",
                "--kafka-topic", topic, "--gateway-id", "gw-test", data_dir=data, timeout=120)
    assert r.code == 0, r.err
    got = kafka.consume_all(topic, expected=len(want), timeout=60)
    log = Log.open(data, readonly=True)
    log_ids = {p.index: p.log_id.hex() for p in log.topic("t").partitions}
    log.close()
    by_identity = {}
    for rec in got:
        ident = Identity.from_headers(list(rec.headers))  # type: ignore[arg-type]
        assert ident is not None and ident.gateway == "gw-test"
        by_identity[(ident.partition, ident.offset)] = (rec, ident)
    assert sorted(by_identity) == sorted((x.partition, x.offset) for x in want)
    for x in want:
        rec, ident = by_identity[(x.partition, x.offset)]
        assert (rec.partition, rec.key, rec.value, rec.timestamp_ms) == (x.partition, x.key, x.value, x.timestamp_ms)
        assert (ident.log_id, ident.epoch, ident.timestamp_ms) == (log_ids[x.partition], x.epoch, x.timestamp_ms)
        assert [h for h in rec.headers if not h[0].startswith("edge.")] == list(x.headers)  # own headers kept
