"""The mirror end to end: the real `edgestream run` (GatewayProcess) against a real Apache Kafka (harness).

Each test makes its own Kafka topic and data dir. The helpers here (gateway config with a [mirror] section, the
log's records, the centre's dedupe, the comparison) are shared with tests/fault/test_mirror_crash.py and
tests/integration/test_mirror_failover.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterable
from typing import Any

import pytest

from edgestream.gateway.identity import Identity
from edgestream.gateway.mirror import render_mirror_section
from edgestream.store import CursorPosition, Log, RecordIn, TopicConfig
from edgestream.store.tier.testing import all_records
from tests.cli import run
from tests.harness.gateway import GatewayProcess, running_gateway, simple_config
from tests.harness.kafka import KafkaCluster
from tests.harness.kafka import Record as KRecord
from tests.harness.procs import wait_until
from tests.harness.proxy import CutMode

pytestmark = [pytest.mark.kafka]

GW = "test-gw"
CUT_SECONDS = 30.0  # the issue asks for a 30 s WAN cut: do not shorten


# -- helpers ------------------------------------------------------------------------------------------------------


def mirror_config(data_dir: str, bootstrap: str, kafka_topic: str, *, partitions: int = 2, topic: str = "telemetry",
                  sources: list[dict[str, Any]] | None = None, rate: float = 500, **mirror: Any) -> dict[str, Any]:
    """A gateway config: one topic mirrored 1:1 to `kafka_topic`, a simulated source unless `sources` is given."""
    mirror_keys = {"persist_interval_s": mirror.pop("persist_interval_s", 0.5)}
    section = render_mirror_section(bootstrap, [], backoff_initial_s=0.2, backoff_max_s=2.0, **mirror_keys, **mirror)
    section["targets"][0]["topics"] = [{"topic": topic, "kafka_topic": kafka_topic}]
    if sources is None:
        sources = [{"name": "sim", "type": "simulated", "topic": topic, "key": "{sensor}", "sensors": 12,
                    "rate": rate}]
    topics = [{"name": topic, "partitions": partitions, "decoder": "raw", "linger_ms": 2}]
    return simple_config(data_dir, sources=sources, topics=topics, mirror=section)


def prefill(data_dir: str, topic: str, partitions: int, per_partition: int, *, value_size: int = 100) -> None:
    """Records straight into the log before the gateway starts: a backlog with keys and a header of its own."""
    with Log.open(data_dir) as log:
        log.create_topic(topic, TopicConfig(partitions=partitions, linger_ms=2))
        for p in range(partitions):
            for start in range(0, per_partition, 5000):
                n = min(5000, per_partition - start)
                recs = [RecordIn(1_700_000_000_000 + start + i, b"sensor-%d" % ((start + i) % 97),
                                 (b"p%d-%08d " % (p, start + i)).ljust(value_size, b"."), (("src", b"prefill"),))
                        for i in range(n)]
                log.append_batch(topic, p, recs).result(60)


def log_records(data_dir: str, topic: str) -> dict[int, list[Any]]:
    """Every record the log holds for `topic`, per partition (the gateway must be stopped)."""
    with Log.open(data_dir, readonly=True) as log:
        out: dict[int, list[Any]] = {p.index: [] for p in log.topic(topic).partitions}
        for r in all_records(log, topic):
            out[r.partition].append(r)
    return out


def dedupe(*streams: Iterable[KRecord]) -> tuple[dict[int, list[tuple[Identity, KRecord]]], int]:
    """The centre's rule, in Kafka order (several topics: read one after the other, e.g. the topic before a config
    reload, then the one after): per (edge.gw, edge.log, edge.p) keep a record only if its (edge.ep, edge.off) is
    above every one seen. Returns the kept records per edge partition and the raw duplicate count."""
    best: dict[tuple[str, str, int], tuple[int, int]] = {}
    kept: dict[int, list[tuple[Identity, KRecord]]] = {}
    dropped = 0
    for records in streams:
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            ident = Identity.from_headers([(k, v or b"") for k, v in r.headers])
            assert ident is not None, f"record without identity headers: {r}"
            if ident.stream in best and ident.position <= best[ident.stream]:
                dropped += 1
                continue
            best[ident.stream] = ident.position
            kept.setdefault(ident.partition, []).append((ident, r))
    return kept, dropped


def assert_exactly_the_log(log_recs: dict[int, list[Any]], kept: dict[int, list[tuple[Identity, KRecord]]],
                           *, kafka_partition_is_edge_partition: bool = True) -> None:
    """After dedupe, Kafka holds exactly the log's records: same offsets, epochs, keys, values, in order."""
    for p, recs in log_recs.items():
        got = kept.get(p, [])
        want = [(r.epoch, r.offset, r.key, r.value) for r in recs]
        have = [(i.epoch, i.offset, k.key, k.value) for i, k in got]
        if have != want:
            missing = sorted(set(want) - set(have))[:5]
            extra = sorted(set(have) - set(want))[:5]
            raise AssertionError(f"partition {p}: log has {len(want)}, Kafka (deduped) {len(have)}; missing "
                                 f"{[m[:2] for m in missing]}, unexpected {[e[:2] for e in extra]}")
        for i, k in got:
            assert i.gateway == GW
            if kafka_partition_is_edge_partition:
                assert k.partition == p
    assert set(kept) <= set(log_recs)


def mirror_status(gw: GatewayProcess) -> dict[str, Any]:
    status, body = gw.get("/v1/mirror/status")
    assert status == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


def total_lag(gw: GatewayProcess) -> int:
    return sum(t["lag_records"] for t in mirror_status(gw)["targets"])


def drain_and_stop(gw: GatewayProcess, timeout: float = 120.0) -> None:
    """Stop the sources (SIGHUP with none left), wait until the mirror has everything, stop the gateway."""
    cfg = dict(gw.sections)
    cfg["sources"] = []
    gw.write_config(cfg)
    gw.signal(signal.SIGHUP)
    wait_until(lambda: gw.metric_sum("edgestream_config_reloads_total") >= 1, timeout=30, what="reload")

    def caught_up() -> bool:
        doc = mirror_status(gw)
        return all(p["acked"] == p["high_watermark"] for t in doc["targets"] for p in t["partitions"])

    wait_until(caught_up, timeout=timeout, interval=0.2, what="mirror caught up")
    assert gw.stop() == 0, gw.log_text()[-3000:]


def compare(kafka: KafkaCluster, topic: str, data_dir: str, edge_topic: str = "telemetry") -> int:
    """Log vs deduped Kafka, exactly; returns the raw duplicate count."""
    log_recs = log_records(data_dir, edge_topic)
    total = sum(len(v) for v in log_recs.values())
    records = kafka.consume_all(topic, timeout=120)
    assert len(records) >= total
    kept, dropped = dedupe(records)
    assert_exactly_the_log(log_recs, kept)
    return dropped


# -- tests --------------------------------------------------------------------------------------------------------


def test_steady_state_200k_records_in_order_with_keys_and_headers(kafka: KafkaCluster, tmp_path: Any) -> None:
    topic = kafka.new_topic("steady", partitions=4)
    data = str(tmp_path / "data")
    prefill(data, "telemetry", 4, 50_000)
    cfg = mirror_config(data, kafka.wan_bootstrap, topic, partitions=4, sources=[])
    t0 = time.monotonic()
    with running_gateway(str(tmp_path), cfg) as gw:
        wait_until(lambda: sum(kafka.end_offsets(topic).values()) >= 200_000, timeout=180, interval=0.5,
                   what="200,000 records in Kafka")
        took = time.monotonic() - t0
        wait_until(lambda: total_lag(gw) == 0, timeout=30, what="lag 0")
        m = gw.metrics()
        assert gw.stop() == 0
    print(f"\nmirrored 200,000 records (4 partitions) in {took:.1f} s including gateway start")
    assert sum(v for k, v in m.items() if k.startswith("edgestream_mirror_acked_records_total")) == 200_000
    assert m['edgestream_mirror_producer_recreations_total{target="central"}'] == 0
    records = kafka.consume_all(topic, expected=200_000, timeout=180)
    assert len(records) == 200_000, "no duplicates in a run without failures"
    log_recs = log_records(data, "telemetry")
    kept, dropped = dedupe(records)
    assert dropped == 0
    assert_exactly_the_log(log_recs, kept)
    for (ident, r), lr in zip(kept[3], log_recs[3], strict=True):
        assert r.headers[0] == ("src", b"prefill")  # the record's own header, then the identity
        assert r.timestamp_ms == lr.timestamp_ms == ident.timestamp_ms
        assert r.key == lr.key


def test_wan_cut_30s_loses_nothing_keeps_order_and_shows_lag(kafka: KafkaCluster, tmp_path: Any) -> None:
    topic = kafka.new_topic("wan", partitions=2)
    data = str(tmp_path / "data")
    cfg = mirror_config(data, kafka.wan_bootstrap, topic, rate=400)
    with running_gateway(str(tmp_path), cfg) as gw:
        wait_until(lambda: gw.metric_sum("edgestream_mirror_acked_records_total") >= 1000, timeout=60,
                   what="mirroring started")
        kafka.wan.cut(CutMode.RESET)
        cut_at = time.monotonic()
        seen_lag_s = seen_lag_r = 0.0
        ingested_at_cut = gw.metric_sum("edgestream_records_in_total")
        while time.monotonic() - cut_at < CUT_SECONDS:  # the cut lasts 30 s: watch the lag while it does
            seen_lag_r = max(seen_lag_r, gw.metric_sum("edgestream_mirror_lag_records"))
            lag_s = [v for k, v in gw.metrics().items() if k.startswith("edgestream_mirror_lag_seconds{")]
            seen_lag_s = max(seen_lag_s, *lag_s)
            time.sleep(1.0)
        ingested = gw.metric_sum("edgestream_records_in_total") - ingested_at_cut
        assert ingested >= 400 * CUT_SECONDS * 0.5, "ingestion goes on while Kafka is away"
        assert seen_lag_s >= CUT_SECONDS * 0.6, f"lag in seconds visible on /metrics: {seen_lag_s}"
        assert seen_lag_r >= ingested * 0.6, f"lag in records visible on /metrics: {seen_lag_r} of {ingested}"
        assert mirror_status(gw)["targets"][0]["lag_records"] > 0
        kafka.wan.restore()
        wait_until(lambda: max(v for k, v in gw.metrics().items()
                               if k.startswith("edgestream_mirror_lag_seconds{")) < 5, timeout=120,
                   what="the backlog drained after the WAN came back")
        drain_and_stop(gw)
    assert kafka.wan.statistics().bytes_upstream > 0, "the gateway's traffic went through the WAN proxy"
    dropped = compare(kafka, topic, data)
    print(f"\nWAN cut {CUT_SECONDS:.0f} s: raw duplicates in Kafka {dropped}")


def test_a_record_too_large_for_the_topic_goes_to_the_dead_letter_topic(kafka: KafkaCluster, tmp_path: Any) -> None:
    topic = kafka.new_topic("dlq", partitions=1, config={"max.message.bytes": "16384"})
    data = str(tmp_path / "data")
    with Log.open(data) as log:
        log.create_topic("telemetry", TopicConfig(partitions=1, linger_ms=2))
        small = [RecordIn(1_700_000_000_000 + i, b"k", b"small-%05d" % i) for i in range(1000)]
        log.append_batch("telemetry", 0, small).result(30)
        log.append("telemetry", 0, os.urandom(60_000), key=b"big").result(30)  # offset 1000; incompressible
        more = [RecordIn(1_700_000_100_000 + i, b"k", b"small-%05d" % (1000 + i)) for i in range(1000)]
        log.append_batch("telemetry", 0, more).result(30)
    cfg = mirror_config(data, kafka.wan_bootstrap, topic, partitions=1, sources=[],
                        properties={"batch.size": "8192"})
    with running_gateway(str(tmp_path), cfg) as gw:
        wait_until(lambda: total_lag(gw) == 0, timeout=120, interval=0.3, what="everything mirrored or dead-lettered")
        m = gw.metrics()
        assert m['edgestream_mirror_dead_letters_total{target="central",topic="telemetry"}'] == 1
        assert gw.stop() == 0
    assert "copied to telemetry.dlq" in gw.log_text()
    with Log.open(data, readonly=True) as log:
        dlq = log.read("telemetry.dlq", 0, 0)
    assert len(dlq) == 1 and len(dlq[0].value) == 60_000 and dlq[0].key == b"big"
    h = dict(dlq[0].headers)
    assert h["edge.mirror.error"] == b"MSG_SIZE_TOO_LARGE", h
    assert h["edge.src.off"] == b"1000" and h["edge.src.topic"] == b"telemetry"
    kept, _ = dedupe(kafka.consume_all(topic, timeout=60))
    assert [k.value for _, k in kept[0]] == [b"small-%05d" % i for i in range(2000)], "the rest keep flowing"


def test_a_cursor_ahead_of_the_recovered_log_is_clamped_and_nothing_is_skipped(kafka: KafkaCluster,
                                                                               tmp_path: Any) -> None:
    topic = kafka.new_topic("clamp", partitions=1)
    data = str(tmp_path / "data")
    prefill(data, "telemetry", 1, 1000)
    with Log.open(data) as log:  # as if the log lost offsets 1000..1499 the mirror had already sent
        p = log.partition("telemetry", 0)
        log.cursors.commit("mirror.central", {("telemetry", 0): CursorPosition(1500, p.log_id.hex(), p.epoch)},
                           required=True)
    sources = [{"name": "sim", "type": "simulated", "topic": "telemetry", "partition": "fixed:0", "key": "{sensor}",
                "sensors": 5, "rate": 400}]
    cfg = mirror_config(data, kafka.wan_bootstrap, topic, partitions=1, sources=sources)
    with running_gateway(str(tmp_path), cfg) as gw:
        wait_until(lambda: sum(kafka.end_offsets(topic).values()) >= 700, timeout=60,
                   what="new records past the old cursor in Kafka")
        m = gw.metrics()
        key = 'edgestream_mirror_cursor_clamps_total{partition="0",reason="ahead_of_log",target="central",' \
              'topic="telemetry"}'
        assert m[key] == 1
        part = mirror_status(gw)["targets"][0]["partitions"][0]
        assert part["clamps"] == {"ahead_of_log": 1}
        r = run("mirror", "status", "--api", f"http://127.0.0.1:{gw.port}")
        assert r.code == 0 and "ahead_of_log" in r.out, r.out + r.err
        assert gw.metric_sum("edgestream_recovery_epoch_bumps_total", topic="telemetry") == 1
        assert m['edgestream_mirror_epoch_raise_needed{partition="0",target="central",topic="telemetry"}'] == 0
        drain_and_stop(gw)
    assert "above the recovered log end (1000)" in gw.log_text() and "clamped to 1000" in gw.log_text()
    assert "epoch raised to 1" in gw.log_text()
    # (the raise rolled the segment: the prefill's 2023 timestamps are then past retention and may be gone)
    new = [r for r in log_records(data, "telemetry")[0] if r.offset >= 1000]
    assert new and all(r.epoch == 1 for r in new), "the reused offsets carry the raised epoch: a new identity"
    kept, _ = dedupe(kafka.consume_all(topic, timeout=60))
    offsets = [i.offset for i, _ in kept[0]]
    assert offsets[0] == 1000, "mirroring resumes at the log end"
    assert offsets == list(range(1000, 1000 + len(offsets))) and offsets[-1] >= 1600, \
        "offsets 1000..1499 (below the old cursor) are mirrored, not skipped"
    assert_exactly_the_log({0: new}, kept)


def test_cli_status_pause_resume_and_reset(kafka: KafkaCluster, tmp_path: Any) -> None:
    topic = kafka.new_topic("cli", partitions=2)
    data = str(tmp_path / "data")
    prefill(data, "telemetry", 2, 300)
    cfg = mirror_config(data, kafka.wan_bootstrap, topic, sources=[])
    gw = GatewayProcess(str(tmp_path), cfg).start()
    try:
        api = ["--api", f"http://127.0.0.1:{gw.port}"]
        wait_until(lambda: total_lag(gw) == 0, timeout=60, what="caught up")
        r = run("mirror", "status", *api)
        assert r.code == 0 and "telemetry/0" in r.out and "TOPIC/P" in r.out and "running" in r.out, r.out + r.err
        doc = json.loads(run("mirror", "status", "--json", *api).out)
        assert doc["targets"][0]["partitions"][1]["acked"] == 300
        r = run("mirror", "pause", *api)
        assert r.code == 0 and "paused mirror target central" in r.out
        assert gw.metric_sum("edgestream_mirror_paused", reason="operator") == 1
        r = run("mirror", "reset", "--topic", "telemetry", "--partition", "1", "--to-offset", "100", *api)
        assert r.code == 0 and "telemetry/1 cursor 300 -> 100 (re-sends)" in r.out, r.out + r.err
        r = run("mirror", "reset", "--topic", "telemetry", "--to-offset", "999", *api)
        assert r.code == 1 and "outside telemetry/0" in r.err and "Traceback" not in r.err
        r = run("mirror", "resume", "--target", "central", *api)
        assert r.code == 0 and "resumed mirror target central (was paused: operator)" in r.out
        wait_until(lambda: sum(kafka.end_offsets(topic).values()) >= 800, timeout=60, what="re-sent after reset")
        r = run("mirror", "pause", "--target", "nope", *api)
        assert r.code == 1 and "no mirror target 'nope'" in r.err
        r = run("mirror", "reset", "--data-dir", data, "--topic", "telemetry", "--to-offset", "0")
        assert r.code == 1 and "gateway is running" in r.err
        assert gw.stop() == 0
    finally:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.kill()
    r = run("mirror", "reset", "--data-dir", data, "--topic", "telemetry", "--partition", "0", "--to-offset", "7")
    assert r.code == 0 and "mirror target central: telemetry/0 cursor 300 -> 7 (re-sends)" in r.out, r.out + r.err
    with Log.open(data, readonly=True) as log:
        cur = log.cursors.get("mirror.central")
        assert cur is not None and cur.get("telemetry", 0).offset == 7  # type: ignore[union-attr]
    for cmd in ("status", "pause", "resume", "reset"):
        h = run("mirror", cmd, "--help")
        assert h.code == 0 and "Example" in h.out


def _murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2 (the Java client's default partitioner for keyed records)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i: 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    off = length & ~3
    if tail >= 3:
        h ^= data[off + 2] << 16
    if tail >= 2:
        h ^= data[off + 1] << 8
    if tail >= 1:
        h ^= data[off]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def test_partitioning_by_key_uses_kafkas_default_partitioner(kafka: KafkaCluster, tmp_path: Any) -> None:
    topic = kafka.new_topic("bykey", partitions=3)
    data = str(tmp_path / "data")
    prefill(data, "telemetry", 2, 600)
    cfg = mirror_config(data, kafka.wan_bootstrap, topic, sources=[])
    cfg["mirror"]["targets"][0]["topics"][0]["partitioning"] = "key"
    with running_gateway(str(tmp_path), cfg) as gw:
        wait_until(lambda: total_lag(gw) == 0, timeout=60, what="mirrored")
        assert gw.stop() == 0
    records = kafka.consume_all(topic, expected=1200, timeout=60)
    assert len(records) == 1200
    seen: dict[tuple[int, int], KRecord] = {}
    for r in records:
        ident = Identity.from_headers([(k, v or b"") for k, v in r.headers])
        assert ident is not None and r.key is not None
        assert r.partition == (_murmur2(r.key) & 0x7FFFFFFF) % 3, "the partition a JVM producer would pick"
        seen[(ident.partition, ident.offset)] = r
    log_recs = log_records(data, "telemetry")
    assert {k: v.value for k, v in seen.items()} == {(p, r.offset): r.value for p, recs in log_recs.items()
                                                    for r in recs}
    for p in (0, 1):  # per key, order is kept: Kafka offsets grow with edge offsets
        by_key: dict[bytes, list[tuple[int, int]]] = {}
        for r in log_recs[p]:
            k = seen[(p, r.offset)]
            by_key.setdefault(r.key, []).append((r.offset, k.offset))
        for pairs in by_key.values():
            assert [ko for _, ko in pairs] == sorted(ko for _, ko in pairs)
