"""The mirror's shell (TargetMirror.step) over a real log and the scripted FakeProducer, on a manual clock."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from edgestream.gateway.identity import Identity
from edgestream.gateway.mirror import metrics
from edgestream.gateway.mirror.fake import FakeCluster, Script
from edgestream.gateway.mirror.reset import ResetRequest
from edgestream.gateway.mirror.settings import parse
from edgestream.gateway.mirror.target import TargetMirror
from edgestream.store import CursorPosition, Log, RecordIn, TopicConfig

T0_MS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> int:
        return T0_MS + int(self.t * 1000)


class Rig:
    def __init__(self, tmp_path: Any, topics: dict[str, int], *, cluster: dict[str, Any] | None = None,
                 mapping: list[Any] | None = None, **target: Any) -> None:
        self.clock = Clock()
        self.log = Log.open(str(tmp_path / "data"))
        for name, parts in topics.items():
            self.log.create_topic(name, TopicConfig(partitions=parts, linger_ms=0))
            self.log.create_topic(f"{name}.dlq", TopicConfig(partitions=1, linger_ms=0))
        mirror_keys = {k: target.pop(k) for k in ("persist_interval_s", "persist_records") if k in target}
        raw = {"targets": [{"name": "c", "bootstrap": "kafka:9092", "topics": mapping or list(topics),
                            "backoff_initial_s": 0.5, "backoff_max_s": 4.0, **target}], **mirror_keys}
        self.settings = parse(raw)
        self.cluster = FakeCluster(**(cluster or {"topics": dict(topics)}))
        self.tm = TargetMirror(self.settings.targets[0], self.settings, self.log, gateway_id="gw-1",
                               producer_factory=self.cluster, monotonic=self.clock.mono, wall_ms=self.clock.wall,
                               rng=random.Random(1))

    def append(self, topic: str, partition: int, n: int, *, size: int = 20, start_ts: int = T0_MS,
               headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        base = self.log.partition(topic, partition).high_watermark
        recs = [RecordIn(start_ts + i, b"key-%d" % ((base + i) % 7),
                         (b"%s/%d/%d:" % (topic.encode(), partition, base + i)).ljust(size, b"x"), headers)
                for i in range(n)]
        self.log.append_batch(topic, partition, recs).result(10)

    def run(self, turns: int = 200, *, until: Callable[[], bool] | None = None, dt: float = 0.01) -> None:
        for _ in range(turns):
            wait = self.tm.step()
            self.clock.t += min(max(wait, dt), 1.0)
            if until is not None and until():
                return
        if until is not None:
            raise AssertionError("condition not reached")

    def caught_up(self) -> bool:
        return all(p.cursor.acked == p.partition.high_watermark for p in self.tm.parts)

    def log_values(self, topic: str, partition: int) -> list[bytes]:
        hw = self.log.partition(topic, partition).high_watermark
        return [r.value for r in self.log.read(topic, partition, 0, max_records=hw + 1, max_bytes=1 << 30)]

    def deduped(self, topic: str, partition: int) -> list[bytes]:
        """The centre's recipe: per (edge.gw, edge.log, edge.p) keep a record only above the max (ep, off) seen."""
        best: dict[tuple[str, str, int], tuple[int, int]] = {}
        out = []
        for _, value, headers in self.cluster.written.get((topic, partition), []):
            ident = Identity.from_headers(headers)
            assert ident is not None
            if ident.stream in best and ident.position <= best[ident.stream]:
                continue
            best[ident.stream] = ident.position
            out.append(value)
        return out

    def close(self) -> None:
        self.log.close()


@pytest.fixture
def rig_factory(tmp_path: Any):  # type: ignore[no-untyped-def]
    rigs: list[Rig] = []

    def make(*args: Any, **kw: Any) -> Rig:
        r = Rig(tmp_path / f"r{len(rigs)}", *args, **kw)
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.close()


def test_records_go_up_in_order_with_keys_headers_and_identity(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 2}, persist_interval_s=1.0)
    rig.tm.open()
    for p in (0, 1):
        rig.append("t", p, 500, headers=(("mqtt.topic", b"factory/line1"),))
    rig.run(until=rig.caught_up)
    for p in (0, 1):
        written = rig.cluster.written[("t", p)]
        records = rig.log.read("t", p, 0, max_records=1000, max_bytes=1 << 30)
        assert [w[1] for w in written] == [r.value for r in records]
        assert [w[0] for w in written] == [r.key for r in records]
        for (_, _, headers), r in zip(written, records, strict=True):
            log_id = rig.log.partition("t", p).log_id.hex()
            assert headers == [("mqtt.topic", b"factory/line1"),
                               *Identity("gw-1", log_id, r.epoch, p, r.offset, r.timestamp_ms).headers()]
    rig.clock.t += 1.0
    rig.run(2)
    cur = rig.log.cursors.get("mirror.c")
    assert cur is not None and cur.required
    pos = cur.get("t", 1)
    assert pos is not None and pos.offset == 500 and pos.log_id == rig.log.partition("t", 1).log_id.hex()


def test_the_cursor_is_never_persisted_ahead_of_the_acks(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1}, persist_interval_s=0.05)
    rig.tm.open()
    rig.append("t", 0, 100)
    rig.run(until=rig.caught_up)
    rig.run(20)
    rig.cluster.set_reachable(False)  # a WAN cut: sent, never confirmed
    rig.append("t", 0, 100)
    rig.run(50)
    c = rig.tm.parts[0].cursor
    assert (c.acked, c.next_send, c.persisted) == (100, 200, 100)
    assert rig.log.cursors.get("mirror.c").get("t", 0).offset == 100  # type: ignore[union-attr]
    assert rig.tm.status().partitions[0].lag_records == 100


def test_a_failed_delivery_rewinds_recreates_the_producer_and_loses_nothing(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 2}, persist_interval_s=0.2, batch_records=50)
    # Record 300 of partition 1 reaches Kafka but its acknowledgement is lost ("possibly persisted").
    rig.cluster.settings["script"] = [Script(fail=lambda t, p, v: v.startswith(b"t/1/300:"), error="_TRANSPORT",
                                             persisted=True)]
    rig.tm.open()
    for p in (0, 1):
        rig.append("t", p, 600)
    rig.run(2000, until=rig.caught_up)
    st = rig.tm.status()
    assert st.producer_recreations == 1
    errors = dict(st.delivery_errors)
    assert errors["transport"] == 1 and set(errors) <= {"transport", "fatal"}  # the rest of the queue: _FATAL
    assert rig.tm.parts[1].cursor.rewinds == 1
    for p in (0, 1):
        assert rig.deduped("t", p) == rig.log_values("t", p)
    raw = sum(len(v) for v in rig.cluster.written.values())
    assert raw > 1200, "a rewind re-sends from the persisted cursor: duplicates, never gaps"
    assert rig.cluster.values("t", 1).count(rig.log_values("t", 1)[300]) == 2


def test_backoff_grows_with_jitter_on_the_injected_clock(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1})
    rig.cluster.settings["script"] = [Script(fail=lambda t, p, v: True, error="_TRANSPORT", times=4)]
    rig.tm.open()
    rig.append("t", 0, 10)
    delays: list[float] = []
    for _ in range(5000):
        rig.tm.step()
        if rig.tm.producer is None and rig.tm.backoff_until > rig.clock.t and len(delays) < rig.tm.producers_made:
            delays.append(rig.tm.backoff_until - rig.clock.t)
        rig.clock.t += 0.01
        if rig.caught_up():
            break
    assert len(delays) == 4
    caps = [0.5, 1.0, 2.0, 4.0]
    assert all(cap / 2 - 0.02 <= d <= cap for d, cap in zip(delays, caps, strict=True)), delays
    rig.run(until=rig.caught_up)
    assert rig.tm.backoff.attempts == 0, "a successful delivery resets the backoff"


def test_out_of_order_reports_are_handled(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1}, cluster={"topics": {"t": 1}, "reorder": True})
    rig.tm.open()
    rig.append("t", 0, 1000)
    rig.run(until=rig.caught_up)
    assert rig.cluster.values("t", 0) == rig.log_values("t", 0)
    assert rig.tm.parts[0].cursor.duplicate_reports == 0


def test_poison_record_is_isolated_then_dead_lettered_and_the_rest_flow(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 2}, cluster={"topics": {"t": 2}, "max_message_bytes": 1000}, batch_records=100)
    # Kafka refuses whole batches: neighbours of the big record fail with the same error once.
    rig.cluster.settings["script"] = [
        Script(fail=lambda t, p, v, o=o: p == 0 and v.startswith(b"t/0/%d:" % o), error="MSG_SIZE_TOO_LARGE")
        for o in (247, 248, 249)]
    rig.tm.open()
    rig.append("t", 0, 250)
    rig.append("t", 0, 1, size=5000)  # offset 250: too large for the broker
    rig.append("t", 0, 249)
    rig.append("t", 1, 500)
    rig.run(3000, until=rig.caught_up)
    expected = [v for v in rig.log_values("t", 0) if len(v) < 5000]
    assert rig.deduped("t", 0) == expected
    assert rig.deduped("t", 1) == rig.log_values("t", 1)
    dlq = rig.log.read("t.dlq", 0, 0)
    assert len(dlq) == 1, "only the record that fails alone is dead-lettered, not its batch neighbours"
    h = dict(dlq[0].headers)
    assert h["edge.mirror.error"] == b"MSG_SIZE_TOO_LARGE" and h["edge.src.off"] == b"250"
    assert h["edge.src.topic"] == b"t" and h["edge.mirror.target"] == b"c"
    assert len(dlq[0].value) == 5000
    st = rig.tm.status()
    assert dict(st.dead_letters) == {"t": 1} and st.partitions[0].dead_letters == 1


def test_a_record_the_client_refuses_is_dead_lettered_without_a_restart(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1}, cluster={"topics": {"t": 1}, "client_max_bytes": 2000})
    rig.tm.open()
    rig.append("t", 0, 10)
    rig.append("t", 0, 1, size=3000)
    rig.append("t", 0, 10)
    rig.run(until=rig.caught_up)
    assert len(rig.cluster.values("t", 0)) == 20
    assert rig.tm.status().producer_recreations == 0
    assert len(rig.log.read("t.dlq", 0, 0)) == 1


def test_authorization_failure_pauses_the_target_until_fixed(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1}, cluster={"topics": {"t": 1}, "forbidden": {"t"}}, auth_retry_s=60)
    rig.tm.open()
    rig.append("t", 0, 50)
    rig.run(20)
    st = rig.tm.status()
    assert (st.state, st.paused_reason) == ("paused", "authorization")
    text = exposition(rig.tm)
    assert 'edgestream_mirror_paused{reason="authorization",target="c"} 1.0' in text
    rig.append("t", 0, 50)  # ingestion goes on while paused
    rig.cluster.settings["forbidden"].clear()  # the ACL is fixed centrally
    rig.run(200, until=rig.caught_up)  # the slow probe (auth_retry_s) picks it up
    assert rig.clock.t >= 160 and rig.tm.status().state == "running"
    assert rig.cluster.values("t", 0) == rig.log_values("t", 0)


def test_authorization_failure_on_delivery_pauses_too(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1}, auth_retry_s=0)
    rig.tm.open()
    rig.append("t", 0, 20)
    rig.run(until=rig.caught_up)
    rig.cluster.settings.setdefault("forbidden", set())
    rig.cluster.current.forbidden.add("t")
    rig.append("t", 0, 20)
    rig.run(50)
    assert rig.tm.paused == "authorization" and rig.tm.probe_at is None, "auth_retry_s = 0: only resume"
    rig.cluster.current.forbidden.clear()
    rig.tm.resume()
    rig.run(until=rig.caught_up)
    assert rig.deduped("t", 0) == rig.log_values("t", 0)


def test_a_missing_kafka_topic_holds_only_that_topic(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"a": 1, "b": 1}, cluster={"topics": {"a": 1}}, topic_recheck_s=30)
    rig.tm.open()
    rig.append("a", 0, 30)
    rig.append("b", 0, 30)
    rig.run(50)
    assert len(rig.cluster.values("a", 0)) == 30
    blocked = {p.topic: p.blocked for p in rig.tm.status().partitions}
    assert blocked["a"] == "" and "does not exist" in blocked["b"]
    rig.cluster.settings["topics"]["b"] = 1  # created centrally
    rig.run(500, until=rig.caught_up)
    assert rig.cluster.values("b", 0) == rig.log_values("b", 0)


def test_too_few_kafka_partitions_for_the_ordered_mapping(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 3}, cluster={"topics": {"t": 2}})
    rig.tm.open()
    for p in range(3):
        rig.append("t", p, 5)
    rig.run(30)
    st = rig.tm.status()
    assert [bool(p.blocked) for p in st.partitions] == [False, False, True]
    assert "needs at least 3" in st.partitions[2].blocked


def test_bandwidth_cap_with_live_share_and_priorities(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"bulk": 1, "alarms": 1, "live": 1}, bandwidth_bytes_per_s=20_000, burst_bytes=2_000,
                      live_share=0.25, batch_records=20,
                      mapping=[{"topic": "bulk"}, {"topic": "alarms", "priority": 10}, {"topic": "live"}])
    rig.tm.open()
    rig.append("bulk", 0, 3000, size=100)  # a backlog of ~570 KB with headers: ~30 s at the cap
    rig.append("alarms", 0, 600, size=100)  # a smaller one with a higher priority
    bulk, alarms, live = (p.cursor for p in rig.tm.parts)
    start = rig.clock.t
    bulk_when_alarms_done = None
    live_lag_while_backfilling = []
    for _ in range(25):
        rig.append("live", 0, 5, start_ts=rig.clock.wall(), size=100)  # fresh readings, 5 a second
        t_end = rig.clock.t + 1.0
        while rig.clock.t < t_end:
            rig.run(1)
        if bulk_when_alarms_done is None and alarms.acked == 600:
            bulk_when_alarms_done = bulk.acked
        if bulk.acked < 3000:
            live_lag_while_backfilling.append(rig.log.partition("live", 0).high_watermark - live.acked)
    elapsed = rig.clock.t - start
    assert bulk_when_alarms_done is not None and bulk_when_alarms_done < 600, \
        "alarms (priority 10) drain before bulk gets much of the bandwidth"
    assert len(live_lag_while_backfilling) >= 20, "the backlog is still draining during the check"
    assert max(live_lag_while_backfilling) <= 5, "live readings stay within a second while the backlog drains"
    rate = rig.tm.sent_bytes / elapsed
    assert 20_000 * 0.9 <= rate <= 20_000 * 1.05 + 2_000 / elapsed, f"{rate:.0f} B/s against a 20000 B/s cap"
    st = rig.tm.status()
    assert st.partitions[0].lag_records > 0 and st.partitions[0].eta_seconds > 0


def test_a_cursor_ahead_of_the_log_is_clamped_and_nothing_is_skipped(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1})
    rig.append("t", 0, 100)
    p = rig.log.partition("t", 0)
    rig.log.cursors.commit("mirror.c", {("t", 0): CursorPosition(150, p.log_id.hex(), p.epoch)}, required=True)
    rig.tm.open()
    part = rig.tm.parts[0]
    assert part.cursor.acked == 100 and part.clamps == {"ahead_of_log": 1}
    # The epoch was raised before any offset is reused (DESIGN 6, step 6), so nothing is left to raise.
    assert not part.epoch_raise_needed and p.epoch == 1 and part.cursor.epoch == 1
    saved = rig.log.cursors.get("mirror.c").get("t", 0)  # type: ignore[union-attr]
    assert (saved.offset, saved.epoch) == (100, 1)
    rig.append("t", 0, 80)  # new records take offsets 100..179, some of them "mirrored" per the old cursor
    assert {r.epoch for r in rig.log.read("t", 0, 100, max_records=200)} == {1}, "a new identity for reused offsets"
    rig.run(until=rig.caught_up)
    assert rig.cluster.values("t", 0) == rig.log_values("t", 0)[100:]
    text = exposition(rig.tm)
    assert 'edgestream_mirror_cursor_clamps_total{partition="0",reason="ahead_of_log",target="c",topic="t"} 1.0' \
        in text
    assert 'edgestream_mirror_epoch_raise_needed{partition="0",target="c",topic="t"} 0.0' in text


def test_a_cursor_of_a_recreated_partition_starts_at_its_log_start(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1})
    rig.append("t", 0, 40)
    rig.log.cursors.commit("mirror.c", {("t", 0): CursorPosition(30, "ff" * 16, 0)}, required=True)
    rig.tm.open()
    assert rig.tm.parts[0].cursor.acked == 0 and rig.tm.parts[0].clamps == {"log_recreated": 1}


def test_reset_moves_the_cursor_durably_and_resends(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1})
    rig.tm.open()
    rig.append("t", 0, 100)
    rig.run(until=rig.caught_up)
    changes = rig.tm.reset(ResetRequest("t", 0, to_offset=60))
    assert changes == [{"target": "c", "topic": "t", "partition": 0, "from": 100, "to": 60}]
    assert rig.log.cursors.get("mirror.c").get("t", 0).offset == 60  # type: ignore[union-attr]
    rig.run(until=rig.caught_up)
    assert len(rig.cluster.values("t", 0)) == 140


def test_no_report_for_the_delivery_timeout_restarts_the_producer(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1}, delivery_timeout_s=30)
    rig.tm.open()
    rig.cluster.set_reachable(False)
    rig.append("t", 0, 10)
    rig.run(20)
    assert rig.tm.in_flight == 10
    rig.clock.t += 31
    rig.run(1)
    assert rig.tm.producer is None and "no delivery report" in rig.tm.last_error
    rig.cluster.set_reachable(True)
    rig.run(500, until=rig.caught_up)
    assert rig.tm.status().producer_recreations == 1


def test_the_thread_stops_with_the_acked_prefix_persisted(tmp_path: Any) -> None:
    log = Log.open(str(tmp_path / "data"))
    try:
        log.create_topic("t", TopicConfig(partitions=2, linger_ms=0))
        settings = parse({"targets": [{"name": "c", "bootstrap": "k:1", "topics": ["t"]}],
                          "persist_interval_s": 3600})
        cluster = FakeCluster(topics={"t": 2})
        tm = TargetMirror(settings.targets[0], settings, log, gateway_id="gw", producer_factory=cluster)
        tm.open()
        tm.start()
        for p in (0, 1):
            log.append_batch("t", p, [RecordIn(1, None, b"v%d" % i) for i in range(300)]).result(10)
        deadline = time.monotonic() + 30
        while sum(len(v) for v in cluster.written.values()) < 600 and time.monotonic() < deadline:
            time.sleep(0.01)
        tm.request_stop(5.0)
        assert tm.join(30)
        cur = log.cursors.get("mirror.c")
        assert cur is not None and [cur.get("t", p).offset for p in (0, 1)] == [300, 300]  # type: ignore[union-attr]
        assert tm.status().state == "stopped" and cluster.current.closed
    finally:
        log.close()


class _One(Collector):
    def __init__(self, tm: TargetMirror) -> None:
        self.tm = tm

    def collect(self):  # type: ignore[no-untyped-def]
        return metrics.collect([self.tm.status()])


def exposition(tm: TargetMirror) -> str:
    reg = CollectorRegistry()
    reg.register(_One(tm))
    return generate_latest(reg).decode()


def test_metric_names_units_and_labels(rig_factory) -> None:  # type: ignore[no-untyped-def]
    rig = rig_factory({"t": 1})
    rig.tm.open()
    rig.append("t", 0, 10)
    rig.run(until=rig.caught_up)
    text = exposition(rig.tm)
    allowed = {"target", "topic", "partition", "reason"}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name = line.split("{")[0].split(" ")[0]
        assert name.startswith("edgestream_mirror_"), name
        if "{" in line:
            labels = {kv.split("=")[0] for kv in line[line.index("{") + 1: line.index("}")].split(",")}
            assert labels <= allowed, line
    assert "# TYPE edgestream_mirror_producer_recreations_total counter" in text
    assert 'edgestream_mirror_lag_records{partition="0",target="c",topic="t"} 0.0' in text
    assert 'edgestream_mirror_paused{reason="operator",target="c"} 0.0' in text


def test_records_deleted_under_the_mirror_are_skipped_and_counted(tmp_path: Any) -> None:
    """drop_oldest may delete what the mirror has not read yet: it goes on at the new log start and counts the
    loss (the deletion itself is the store's; here a non-required cursor lets plain retention do it)."""
    log = Log.open(str(tmp_path / "data"), maintenance_ms=20)
    try:
        log.create_topic("t", TopicConfig(partitions=1, linger_ms=0, segment_bytes=4096, retention_bytes=8192))
        settings = parse({"targets": [{"name": "c", "bootstrap": "k:1", "topics": ["t"]}]})
        cluster = FakeCluster(topics={"t": 1})
        tm = TargetMirror(settings.targets[0], settings, log, gateway_id="gw", producer_factory=cluster)
        tm.open()
        log.cursors.commit("mirror.c", {}, required=False)  # stands in for on_full = drop_oldest
        for i in range(40):
            log.append("t", 0, b"record-%03d" % i + b"." * 300).result(10)
        deadline = time.monotonic() + 30
        while log.partition("t", 0).log_start == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        start = log.partition("t", 0).log_start
        assert start > 0, "retention deleted the oldest segments"
        for _ in range(20):
            tm.step()
        c = tm.parts[0].cursor
        assert c.skipped == {"deleted": start} and c.acked == 40
        assert cluster.values("t", 0) == [b"record-%03d" % i + b"." * 300 for i in range(start, 40)]
        assert dict(tm.status().partitions[0].skipped) == {"deleted": start}
    finally:
        log.close()


def test_status_json_has_no_infinity(rig_factory) -> None:  # type: ignore[no-untyped-def]
    import json

    rig = rig_factory({"t": 1})
    rig.tm.open()
    rig.cluster.set_reachable(False)
    rig.append("t", 0, 10)
    rig.run(5)
    rig.clock.t += 2
    rig.append("t", 0, 10)
    rig.run(5)
    st = rig.tm.status()
    assert st.partitions[0].eta_seconds == float("inf")  # ingesting, nothing draining
    doc = st.to_json()
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text)["partitions"][0]["eta_seconds"] is None
    from edgestream.gateway.mirror.view import HEADERS, lag_lines, rows

    assert len(rows({"targets": [doc]})[0]) == len(HEADERS)
    assert "ETA never" in lag_lines({"targets": [doc]})[0]
