"""Mirror benchmarks (issue: the upstream mirror): drain rate, ingest while draining, the bandwidth cap, latency.

One local single-node Apache Kafka (tests.harness.kafka, started here, not through pytest fixtures) and the real
gateway (`edgestream run`, GatewayProcess) with a data dir holding a backlog of 1,000,000 records of 100 B in 4
partitions (random capital letters, like ProducerPerformance's payload; no key).

- drain: a fresh mirror target drains the backlog; rate = records / (last - first confirmation), from /metrics.
  Baseline, same run, same broker: Kafka's own ProducerPerformance (JVM client) sending 1,000,000 x 100 B with the
  same guarantees (acks=all, idempotence, zstd, linger.ms=5).
- ingest while draining: a simulated source offering 10,000 readings/s into another topic, with the mirror draining
  the backlog vs with the mirror disabled; the ratio of accepted readings per second.
- bandwidth cap: a target capped at 2 MB/s drains for 60 s; produced (key + value + header) bytes per second over
  the window vs the cap.
- latency: simulated sensors at 1,000 readings/s; each reading's age (now - its edge timestamp, edge.ts) when a
  consumer in this process receives it from Kafka. Baseline: a bare confluent-kafka producer sending 1,000 msg/s
  straight to the broker, timed the same way. The gateway adds the fsync (durable before mirrored) and its polls.
"""

from __future__ import annotations

import os
import random
import statistics
import string
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from edgestream.gateway.mirror import render_mirror_section
from edgestream.store import Log, RecordIn, TopicConfig
from tests.bench.common import BenchContext, Row
from tests.harness.gateway import GatewayProcess
from tests.harness.kafka import KafkaCluster

CMD = "python tests/bench/run.py --only mirror"
BACKLOG = 1_000_000
PARTITIONS = 4


def _prefill(data: str, count: int) -> None:
    rng = random.Random(7)
    letters = string.ascii_uppercase.encode()
    with Log.open(data) as log:
        log.create_topic("backlog", TopicConfig(partitions=PARTITIONS, linger_ms=5))
        per = count // PARTITIONS
        for p in range(PARTITIONS):
            for start in range(0, per, 10_000):
                recs = [RecordIn(1_700_000_000_000 + start + i, None, bytes(rng.choices(letters, k=100)))
                        for i in range(min(10_000, per - start))]
                log.append_batch("backlog", p, recs).result(120)


def _config(data: str, *, sources: list[dict[str, Any]], topics: list[dict[str, Any]],
            mirror: dict[str, Any] | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "gateway": {"id": "bench", "data_dir": data, "shutdown_timeout_s": 30},
        "log": {"min_free_bytes": 1 << 20},
        "http": {"listen": "127.0.0.1:0"},
        "topics": topics,
        "sources": sources,
    }
    if mirror is not None:
        cfg["mirror"] = mirror
    return cfg


def _mirror(bootstrap: str, target: str, mapping: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    section = render_mirror_section(bootstrap, [], target=target, **kw)
    section["targets"][0]["topics"] = mapping
    return section


_BACKLOG_TOPIC = {"name": "backlog", "partitions": PARTITIONS, "decoder": "raw"}


def _backlog(ctx: BenchContext) -> int:
    return 200_000 if ctx.quick else BACKLOG


def _drain_once(ctx: BenchContext, kafka: KafkaCluster, data: str, n: int) -> float:
    topic = kafka.new_topic(f"drain{n}", partitions=PARTITIONS)
    cfg = _config(data, sources=[], topics=[_BACKLOG_TOPIC],
                  mirror=_mirror(kafka.bootstrap, f"drain{n}", [{"topic": "backlog", "kafka_topic": topic}]))
    gw = GatewayProcess(ctx.tempdir("gw-"), cfg).start()
    try:
        # Kafka's own end offsets are the clock: the gateway's metrics are snapshots up to a second old.
        first_t = 0.0
        first_n = 0
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            got = sum(kafka.end_offsets(topic).values())
            now = time.monotonic()
            if got and not first_t:
                first_t, first_n = now, got
            if got >= _backlog(ctx):
                return (_backlog(ctx) - first_n) / (now - first_t)
            time.sleep(0.05)
        raise TimeoutError("the backlog did not drain")
    finally:
        gw.stop()


def _perf_once(kafka: KafkaCluster, n: int, count: int) -> float:
    topic = kafka.new_topic(f"perf{n}", partitions=PARTITIONS)
    r = kafka.producer_perf(topic, count, 100, producer_props={
        "enable.idempotence": "true", "compression.type": "zstd", "linger.ms": "5", "acks": "all"})
    return r.records_per_sec


def drain_rows(ctx: BenchContext, kafka: KafkaCluster, data: str) -> list[Row]:
    ours: list[float] = []
    base: list[float] = []
    for n in range(ctx.runs):
        base.append(_perf_once(kafka, n, _backlog(ctx)))
        ours.append(_drain_once(ctx, kafka, data, n))
    value, baseline = statistics.median(ours), statistics.median(base)
    return [Row("mirror", f"Drain of a {_backlog(ctx):,}-record backlog (100 B, 4 partitions) to local Kafka", value,
                "records/s", ours, CMD, "Kafka ProducerPerformance, same records and guarantees", baseline,
                ">= 0.7x and >= 150,000 records/s", value >= 0.7 * baseline and value >= 150_000,
                notes="acks=all, idempotence, zstd on both sides; the mirror also adds 6 identity headers "
                      "(~90 B) per record")]


def _ingest_once(ctx: BenchContext, kafka: KafkaCluster, data: str, n: int, draining: bool, seconds: float) -> float:
    topic = kafka.new_topic(f"ingest{n}{'d' if draining else 'i'}", partitions=PARTITIONS)
    mirror = _mirror(kafka.bootstrap, f"ingest{n}{int(draining)}", [{"topic": "backlog", "kafka_topic": topic}],
                     enabled=draining)
    sources = [{"name": "sim", "type": "simulated", "topic": "live", "key": "{sensor}", "sensors": 50,
                "rate": 10_000, "window": 5000}]
    topics = [_BACKLOG_TOPIC, {"name": "live", "partitions": 2, "decoder": "json"}]
    gw = GatewayProcess(ctx.tempdir("gw-"), _config(data, sources=sources, topics=topics, mirror=mirror)).start()
    try:
        time.sleep(2.0)
        n0, t0 = gw.metric_sum("edgestream_records_in_total"), time.monotonic()
        a0 = gw.metric_sum("edgestream_mirror_acked_records_total")
        time.sleep(seconds)
        n1, t1 = gw.metric_sum("edgestream_records_in_total"), time.monotonic()
        if draining:
            assert gw.metric_sum("edgestream_mirror_acked_records_total") > a0, "the mirror drained meanwhile"
        return (n1 - n0) / (t1 - t0)
    finally:
        gw.stop()


def ingest_rows(ctx: BenchContext, kafka: KafkaCluster, data: str) -> list[Row]:
    seconds = 5.0 if ctx.quick else 10.0
    with_drain: list[float] = []
    without: list[float] = []
    for n in range(ctx.runs):
        without.append(_ingest_once(ctx, kafka, data, n, False, seconds))
        with_drain.append(_ingest_once(ctx, kafka, data, n, True, seconds))
    value, baseline = statistics.median(with_drain), statistics.median(without)
    return [Row("mirror", "Ingest rate while the mirror drains a backlog (10,000 readings/s offered)", value,
                "records/s", with_drain, CMD, "the same gateway with the mirror disabled", baseline, ">= 0.9x",
                value >= 0.9 * baseline)]


def cap_rows(ctx: BenchContext, kafka: KafkaCluster, data: str) -> list[Row]:
    cap = 2_000_000
    window = 8.0 if ctx.quick else 60.0  # the quick backlog lasts ~20 s at the cap
    topic = kafka.new_topic("cap", partitions=PARTITIONS)
    mirror = _mirror(kafka.bootstrap, "cap", [{"topic": "backlog", "kafka_topic": topic}],
                     bandwidth_bytes_per_s=cap)
    gw = GatewayProcess(ctx.tempdir("gw-"), _config(data, sources=[], topics=[_BACKLOG_TOPIC], mirror=mirror)).start()
    try:
        time.sleep(3.0)  # past the first burst and the producer's start
        b0, t0 = gw.metric_sum("edgestream_mirror_sent_bytes_total"), time.monotonic()
        time.sleep(window)
        b1, t1 = gw.metric_sum("edgestream_mirror_sent_bytes_total"), time.monotonic()
    finally:
        gw.stop()
    rate = (b1 - b0) / (t1 - t0)
    return [Row("mirror", f"Bandwidth cap held over a {window:.0f} s drain (cap 2,000,000 B/s)", rate, "B/s", [rate],
                CMD, "the configured cap", cap, "within 5% of the cap", abs(rate / cap - 1) <= 0.05,
                notes="bytes = key + value + headers as produced (before compression); one run of the full window")]


def _latencies(kafka: KafkaCluster, topic: str, seconds: float, stamp: str) -> list[float]:
    """Ages (ms) of records arriving at a consumer of `topic`, from the `stamp` header (ms since the epoch)."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"lat-{os.getpid()}-{topic}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5, "fetch.min.bytes": 1})
    parts = kafka.partitions(topic)
    consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
    ages: list[float] = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for msg in consumer.consume(1000, 0.001):  # consume() waits out its timeout unless the batch fills
                if msg.error():
                    continue
                now = time.time() * 1000
                h = dict(msg.headers() or [])
                if stamp in h:
                    ages.append(now - int(h[stamp]))
    finally:
        consumer.close()
    return ages


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def latency_rows(ctx: BenchContext, kafka: KafkaCluster) -> list[Row]:
    seconds = 8.0 if ctx.quick else 20.0
    topic = kafka.new_topic("latency", partitions=2)
    sources = [{"name": "sim", "type": "simulated", "topic": "live", "key": "{sensor}", "sensors": 20, "rate": 1000}]
    topics = [{"name": "live", "partitions": 2, "decoder": "json", "linger_ms": 2}]
    mirror = _mirror(kafka.bootstrap, "latency", [{"topic": "live", "kafka_topic": topic}])
    gw = GatewayProcess(ctx.tempdir("gw-"), _config(ctx.tempdir("lat-"), sources=sources, topics=topics,
                                                     mirror=mirror)).start()
    try:
        time.sleep(2.0)
        ours = _latencies(kafka, topic, seconds, "edge.ts")
    finally:
        gw.stop()
    base_topic = kafka.new_topic("latency-base", partitions=2)
    stop = threading.Event()

    def produce() -> None:
        p = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                      "compression.type": "zstd"})
        i = 0
        nxt = time.monotonic()
        while not stop.is_set():
            for _ in range(10):
                p.produce(base_topic, b"x" * 100, partition=i % 2, headers=[("ts", b"%d" % int(time.time() * 1000))])
                i += 1
            p.poll(0)
            nxt += 0.01
            time.sleep(max(0.0, nxt - time.monotonic()))
        p.flush(10)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    time.sleep(1.0)
    base = _latencies(kafka, base_topic, seconds, "ts")
    stop.set()
    t.join(15)
    rows = []
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        rows.append(Row("mirror", f"End-to-end latency {label}, reading made -> visible in Kafka, 1,000 msg/s",
                        _pct(ours, q), "ms", [_pct(ours, q)], CMD, "a bare producer straight to Kafka",
                        _pct(base, q), notes=f"{len(ours):,} readings; fsync durability, linger 2 ms (log) and "
                                             "5 ms (producer)"))
    return rows


def run(ctx: BenchContext) -> list[Row]:
    kafka = KafkaCluster(Path(ctx.tempdir("kafka-")), 1).start()
    try:
        data = os.path.join(ctx.tempdir("backlog-"), "data")
        _prefill(data, _backlog(ctx))
        rows = drain_rows(ctx, kafka, data)
        rows += ingest_rows(ctx, kafka, data)
        rows += cap_rows(ctx, kafka, data)
        rows += latency_rows(ctx, kafka)
        return rows
    finally:
        kafka.stop()
