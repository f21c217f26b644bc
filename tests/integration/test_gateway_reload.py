"""SIGHUP applies `[mirror]` and `[tier]` to the running gateway (`edgestream run`, the real process) without a
restart: against a real Apache Kafka (harness) for the mirror, with the Parquet tier for `[tier]`."""

from __future__ import annotations

import copy
import json
import signal
from typing import Any

import pytest

from tests import cli
from tests.harness.gateway import GatewayProcess, running_gateway, simple_config
from tests.harness.kafka import KafkaCluster
from tests.harness.procs import wait_until
from tests.integration.test_mirror_kafka import (
    assert_exactly_the_log,
    dedupe,
    log_records,
    mirror_config,
    mirror_status,
)


def reload(gw: GatewayProcess, cfg: dict[str, Any], *, reloads: int = 0, errors: int = 0) -> None:
    """Write `cfg`, SIGHUP, and wait until the gateway counted the reload (as applied, or as an error)."""
    gw.write_config(cfg)
    gw.signal(signal.SIGHUP)

    def counted() -> bool:
        m = gw.metrics()
        return (m["edgestream_config_reloads_total"] == reloads and
                m["edgestream_config_reload_errors_total"] == errors)

    wait_until(counted, timeout=60, what=f"reload counted ({reloads} applied, {errors} errors)")


@pytest.mark.kafka
def test_sighup_restarts_a_changed_target_starts_a_new_one_and_leaves_an_unchanged_one(kafka: KafkaCluster,
                                                                                         tmp_path: Any) -> None:
    before, after, backup = (kafka.new_topic(f"reload-{n}", partitions=2) for n in ("a", "b", "c"))
    data = str(tmp_path / "data")
    cfg = mirror_config(data, kafka.wan_bootstrap, before, rate=300)
    with running_gateway(str(tmp_path), cfg) as gw:
        wait_until(lambda: gw.metric_sum("edgestream_mirror_acked_records_total") >= 300, timeout=60,
                   what="mirroring to the first topic")
        # (a) the target's Kafka topic and cap change (a restart from its cursor) and a second target appears.
        changed = copy.deepcopy(cfg)
        central = changed["mirror"]["targets"][0]
        central["topics"][0]["kafka_topic"] = after
        central["max_in_flight_records"] = 20_000
        changed["mirror"]["targets"].append({"name": "backup", "bootstrap": kafka.wan_bootstrap,
                                             "topics": [{"topic": "telemetry", "kafka_topic": backup}]})
        reload(gw, changed, reloads=1)
        m = gw.metrics()
        assert m['edgestream_mirror_reload_restarts_total{target="central"}'] == 1
        assert m['edgestream_mirror_reload_restarts_total{target="backup"}'] == 0
        assert "mirror central restarted (topics, max_in_flight_records), backup started" in gw.log_text()
        ingested = gw.metric_sum("edgestream_records_in_total")
        wait_until(lambda: gw.metric_sum("edgestream_records_in_total") >= ingested + 300, timeout=60,
                   what="more records after the reload")
        wait_until(lambda: sum(kafka.end_offsets(after).values()) >= 300, timeout=60,
                   what="records in the new topic")
        sent = gw.metric_sum("edgestream_mirror_sent_records_total", target="central")

        # (c) the sources go (to drain), the mirror section stays as it is: no target restarts or changes.
        drained = copy.deepcopy(changed)
        drained["sources"] = []
        reload(gw, drained, reloads=2)
        m = gw.metrics()
        for target in ("central", "backup"):
            assert m[f'edgestream_mirror_reload_restarts_total{{target="{target}"}}'] == (target == "central")
            assert m[f'edgestream_mirror_reload_updates_total{{target="{target}"}}'] == 0
        assert gw.metric_sum("edgestream_mirror_sent_records_total", target="central") >= sent, \
            "the same target: its counters went on (a new one would start again from 0)"
        assert "sources restarted or removed, 0 running; mirror unchanged" in gw.log_text()
        assert [t["reloads"] for t in mirror_status(gw)["targets"]] == [{"restart": 1, "live": 0},
                                                                         {"restart": 0, "live": 0}]

        def caught_up() -> bool:
            doc = mirror_status(gw)
            return len(doc["targets"]) == 2 and all(p["acked"] == p["high_watermark"] for t in doc["targets"]
                                                    for p in t["partitions"])

        wait_until(caught_up, timeout=120, interval=0.2, what="both targets caught up")
        assert gw.stop() == 0, gw.log_text()[-3000:]
    log_recs = log_records(data, "telemetry")
    assert all(len(v) > 300 for v in log_recs.values())
    in_before, in_after = kafka.consume_all(before, timeout=60), kafka.consume_all(after, timeout=60)
    assert in_before and in_after, "records before the reload in the old topic, after it in the new one"
    kept, dropped = dedupe(in_before, in_after)
    assert_exactly_the_log(log_recs, kept)
    kept_backup, dropped_backup = dedupe(kafka.consume_all(backup, timeout=60))
    assert_exactly_the_log(log_recs, kept_backup)
    assert dropped_backup == 0
    print(f"\nreload of a mirror target: {sum(len(v) for v in log_recs.values())} records, {dropped} copies "
          "re-sent across the restart")


def tier_running(data: str) -> bool:
    r = cli.run("tier", "status", "--json", data_dir=data)
    assert r.code == 0, r.err
    running: bool = json.loads(r.out)["tierer"]["running"]
    return running


def test_sighup_starts_keeps_and_stops_the_tierer(tmp_path: Any) -> None:
    data = str(tmp_path / "data")
    cfg = simple_config(data, topics=[{"name": "telemetry", "partitions": 2, "decoder": "json", "segment_ms": 1000,
                                       "linger_ms": 2}])
    with running_gateway(str(tmp_path), cfg) as gw:
        wait_until(lambda: gw.metric_sum("edgestream_records_in_total") >= 100, timeout=30, what="ingesting")
        assert not tier_running(data)
        # The routes of what a reload may add exist from the start (aiohttp's are fixed once it serves).
        for path, code in (("/v1/tier/status", "no_tier"), ("/v1/mirror/status", "no_mirror")):
            status, body = gw.get(path)
            assert status == 404 and json.loads(body)["error"] == code, (path, status, body)
        # (b) [tier] added: tiering starts.
        tiered = copy.deepcopy(cfg)
        tiered["tier"] = {"enabled": True, "interval_s": 0.3}
        reload(gw, tiered, reloads=1)
        wait_until(lambda: gw.metric_sum("edgestream_tier_segments_total") >= 2, timeout=30,
                   what="segments tiered after the reload")
        assert tier_running(data)
        status, body = gw.get("/v1/tier/status")
        assert status == 200 and json.loads(body)["enabled"] is True, body
        status, body = gw.get("/v1/status")
        assert status == 200 and json.loads(body)["tier"]["segments_tiered"] >= 2
        # A section that loads but cannot start: refused, counted, the running tierer goes on as it was.
        bad = copy.deepcopy(tiered)
        bad["tier"]["cpu_share"] = 5.0
        reload(gw, bad, reloads=1, errors=1)
        assert "[tier] not applied (the running tierer keeps its settings)" in gw.log_text()
        assert "cpu_share" in gw.log_text()
        passes = gw.metric_sum("edgestream_tier_passes_total")
        wait_until(lambda: gw.metric_sum("edgestream_tier_passes_total") > passes, timeout=30,
                   what="the tierer still running")
        assert tier_running(data)
        # [tier] removed: tiering stops and the tier lock is free again.
        reload(gw, cfg, reloads=2, errors=1)
        assert not tier_running(data)
        assert "edgestream_tier_passes_total" not in gw.metrics()
        status, body = gw.get("/v1/status")
        assert status == 200 and json.loads(body)["tier"] is None
        assert "tier stopped" in gw.log_text()
        assert gw.stop() == 0, gw.log_text()[-3000:]
