"""Writes the three Grafana dashboards (dashboards/*.json) from the builders in dashboards/grafana.py.

    python dashboards/build.py           # rewrite the JSON files
    python dashboards/build.py --check   # exit 1 if a JSON file differs from what this script makes

The JSON files are what operators import (Grafana: Dashboards > New > Import, or file provisioning); this script
is how they are edited. Both are committed; a test fails when they drift apart. Every metric name used here is
listed in docs/metrics.md, and every query is run against a real Prometheus in tests/integration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from grafana import (  # noqa: E402
    PAUSED_MAP,
    RATE,
    READY_MAP,
    SEL,
    UP_MAP,
    _query_var,
    by_gateway,
    dashboard,
    heatmap,
    row,
    stat,
    state_timeline,
    table,
    target,
    timeseries,
    variables,
)

HEADROOM = f"(edgestream_disk_free_bytes{{{SEL}}} - edgestream_disk_min_free_bytes{{{SEL}}})"
# Hours until free space reaches min_free_bytes at the fill rate of the last hour; capped at 30 days (also when
# the disk is emptying, where the division would be negative or infinite).
HOURS_LEFT = (f"clamp_max(clamp_min({HEADROOM} / clamp_min(-deriv(edgestream_disk_free_bytes{{{SEL}}}[1h]), 1e-9), 0)"
              " / 3600, 720)")


def fleet() -> dict:
    sel = SEL
    panels = [
        table("Gateways", [
            target(by_gateway("sum", f"rate(edgestream_log_appended_records_total{{{sel}}}[{RATE}])"), ref="A",
                   instant=True, fmt="table"),
            target(by_gateway("max", f"edgestream_mirror_lag_seconds{{{sel}}}"), ref="B", instant=True, fmt="table"),
            target(by_gateway("min", HEADROOM), ref="C", instant=True, fmt="table"),
            target(by_gateway("min", HOURS_LEFT), ref="D", instant=True, fmt="table"),
            target(by_gateway("sum", f"increase(edgestream_dropped_records_total{{{sel}}}[$__range])"), ref="E",
                   instant=True, fmt="table"),
            target(by_gateway("sum", f"increase(edgestream_dead_letters_total{{{sel}}}[$__range])"), ref="F",
                   instant=True, fmt="table"),
            target(by_gateway("max", f"changes(edgestream_start_time_seconds{{{sel}}}[$__range])"), ref="G",
                   instant=True, fmt="table"),
            target(by_gateway("min", f"edgestream_ready{{{sel}}}"), ref="H", instant=True, fmt="table"),
        ], "One row per gateway: what enters the log, how far the mirror is behind, room left on the flash, "
           "records lost on purpose (drops) or set aside (dead letters), and restarts in the selected range.",
            renames={"gateway": "Gateway", "Value #A": "Ingest", "Value #B": "Mirror lag", "Value #C": "Disk headroom",
                     "Value #D": "Full in", "Value #E": "Dropped", "Value #F": "Dead letters",
                     "Value #G": "Restarts", "Value #H": "Ready"},
            units={"Ingest": "suffix: rec/s", "Mirror lag": "s", "Disk headroom": "bytes", "Full in": "h",
                   "Dropped": "short", "Dead letters": "short", "Restarts": "short", "Ready": "bool_yes_no"}),
        row("Trends"),
        timeseries("Ingest rate", [target(by_gateway("sum", f"rate(edgestream_log_appended_records_total{{{sel}}}"
                                                            f"[{RATE}])"), "{{gateway}}")],
                   "suffix: rec/s", "Records appended to each gateway's log per second (sources and HTTP)."),
        timeseries("Mirror lag", [target(by_gateway("max", f"edgestream_mirror_lag_seconds{{{sel}}}"), "{{gateway}}")],
                   "s", "Age of the oldest record not yet acknowledged by Kafka, worst partition per gateway.",
                   thresholds=((None, "green"), (900, "red")), threshold_style="line"),
        timeseries("Disk headroom", [target(by_gateway("min", HEADROOM), "{{gateway}}")], "bytes",
                   "Free space above min_free_bytes: at 0 each topic's on_full policy starts (block, drop_oldest, "
                   "reject_new)."),
        timeseries("Disk full in (at the last hour's fill rate)",
                   [target(by_gateway("min", HOURS_LEFT), "{{gateway}}")],
                   "h", "Hours until the headroom is gone if the disk keeps filling as in the last hour (capped at "
                   "720 h). The EdgestreamDiskFillingUp alert fires under 6 h.",
                   thresholds=((None, "red"), (6, "orange"), (24, "green")), threshold_style="line"),
        timeseries("Dropped and dead-lettered records", [
            target(by_gateway("sum", f"increase(edgestream_dropped_records_total{{{sel}}}[{RATE}])"),
                   "{{gateway}} dropped", "A"),
            target(by_gateway("sum", f"increase(edgestream_dead_letters_total{{{sel}}}[{RATE}])"),
                   "{{gateway}} dead letters", "B"),
        ], "short", "Records dropped by a full-disk policy or refused at append, and frames sent to dead-letter "
                    "topics. Anything above 0 deserves a look (runbook: EdgestreamRecordsDropped).", bars=True),
        timeseries("Restarts", [target(by_gateway("max", f"changes(edgestream_start_time_seconds{{{sel}}}[1h])"),
                                       "{{gateway}}")],
                   "short", "Process starts in the last hour (crashes, watchdog kills, upgrades). Three or more fire "
                   "EdgestreamRestartingRepeatedly.", thresholds=((None, "green"), (3, "red")),
                   threshold_style="line"),
    ]
    return dashboard("edgestream-fleet", "edgestream / Fleet overview",
                     "Every edgestream gateway at a glance: ingest, mirror lag, disk headroom, drops, restarts.",
                     panels, variables(multi_gateway=True))


def gateway() -> dict:
    sel = SEL
    tsel = f'{SEL}, topic=~"$topic"'
    topic_var = _query_var("topic", "Topic", f"label_values(edgestream_log_end_offset{{{sel}}}, topic)", multi=True,
                           include_all=True)
    panels = [
        stat("Ready", f"min(edgestream_ready{{{sel}}})", "none", "1 once recovery is done and sources run.",
             mappings=READY_MAP, thresholds=((None, "red"), (1, "green")), color_mode="background"),
        stat("Uptime", f"time() - max(edgestream_start_time_seconds{{{sel}}})", "dtdurations",
             "Since the gateway process started."),
        stat("Ingest", f"sum(rate(edgestream_log_appended_records_total{{{sel}}}[{RATE}]))", "suffix: rec/s",
             "Records appended per second, all topics.", graph=True),
        stat("Disk headroom", f"min({HEADROOM})", "bytes", "Free space above min_free_bytes.",
             thresholds=((None, "red"), (1 << 30, "green"))),
        stat("Disk full in", f"min({HOURS_LEFT})", "h", "At the last hour's fill rate (capped at 720 h).",
             thresholds=((None, "red"), (6, "orange"), (24, "green"))),
        stat("Mirror lag", f"max(edgestream_mirror_lag_seconds{{{sel}}})", "s", "Worst partition, all targets.",
             thresholds=((None, "green"), (900, "red"))),
        stat("Dropped (range)", f"sum(increase(edgestream_dropped_records_total{{{sel}}}[$__range]))", "short",
             "Records dropped or refused in the selected range.", thresholds=((None, "green"), (1, "red")),
             decimals=0),
        stat("Memory", f"max(process_resident_memory_bytes{{{sel}}})", "bytes", "Resident set size."),
        row("Sources"),
        timeseries("Records in by source", [target(f"sum by (source) (rate(edgestream_records_in_total{{{sel}}}"
                                                   f"[{RATE}]))", "{{source}}")],
                   "suffix: rec/s", "Readings from each source acknowledged by the log.", stack=True),
        timeseries("Bytes in by source", [target(f"sum by (source) (rate(edgestream_bytes_in_total{{{sel}}}[{RATE}]))",
                                                 "{{source}}")],
                   "Bps", "Payload bytes from each source acknowledged by the log.", stack=True),
        state_timeline("Source state", [target(f"max by (source) (edgestream_source_up{{{sel}}})", "{{source}}")],
                       "Whether each source's task runs (a crashed source is restarted with backoff).", UP_MAP,
                       thresholds=((None, "red"), (1, "green"))),
        timeseries("Source restarts", [target(f"sum by (source) (increase(edgestream_source_restarts_total{{{sel}}}"
                                              f"[{RATE}]))", "{{source}}")],
                   "short", "Crashed sources restarted by the gateway.", bars=True, w=12, h=6),
        timeseries("Decode errors, dead letters, rejections", [
            target(f"sum by (topic, reason) (increase(edgestream_decode_errors_total{{{sel}}}[{RATE}]))",
                   "decode {{topic}} {{reason}}", "A"),
            target(f"sum by (topic, reason) (increase(edgestream_dead_letters_total{{{sel}}}[{RATE}]))",
                   "dead letter {{topic}} {{reason}}", "B"),
            target(f"sum by (source, reason) (increase(edgestream_source_rejected_records_total{{{sel}}}[{RATE}]))",
                   "rejected {{source}} {{reason}}", "C"),
        ], "short", "Payloads stored raw that the decoder refused, frames sent to the dead-letter topic, and "
                    "readings the log refused (counted and acknowledged).", bars=True, w=24),
        row("Log"),
        timeseries("Appended records by topic", [target(f"sum by (topic) (rate(edgestream_log_appended_records_total"
                                                        f"{{{tsel}}}[{RATE}]))", "{{topic}}")],
                   "suffix: rec/s", "Records appended per topic.", stack=True),
        timeseries("Disk writes by topic", [
            target(f"sum by (topic) (rate(edgestream_log_written_bytes_total{{{tsel}}}[{RATE}]))", "{{topic}}", "A"),
        ], "Bps", "Bytes written to segments (framed and compressed): what the flash sees.", stack=True),
        timeseries("Log size by topic", [target(f"sum by (topic) (edgestream_log_size_bytes{{{tsel}}})", "{{topic}}")],
                   "bytes", "Segments on disk per topic; retention keeps it bounded.", stack=True),
        timeseries("Compression and batching", [
            target(f"sum(rate(edgestream_log_appended_bytes_total{{{sel}}}[{RATE}])) / "
                   f"sum(rate(edgestream_log_written_bytes_total{{{sel}}}[{RATE}]))", "compression ratio", "A"),
            target(f"sum(rate(edgestream_log_synced_records_total{{{sel}}}[{RATE}])) / "
                   f"sum(rate(edgestream_log_fsyncs_total{{{sel}}}[{RATE}]))", "records per fsync", "B"),
        ], "short", "Appended bytes per written byte (zstd), and records covered by one fdatasync (group commit)."),
        heatmap("fsync latency", f"sum by (le) (increase(edgestream_fsync_duration_seconds_bucket{{{sel}}}[{RATE}]))",
                "fdatasync latency distribution: an SD card that wears out shows a rising, widening band."),
        timeseries("fsync latency quantiles", [
            target(f"histogram_quantile(0.5, sum by (le) (rate(edgestream_fsync_duration_seconds_bucket{{{sel}}}"
                   f"[{RATE}])))", "p50", "A"),
            target(f"histogram_quantile(0.99, sum by (le) (rate(edgestream_fsync_duration_seconds_bucket{{{sel}}}"
                   f"[{RATE}])))", "p99", "B"),
        ], "s", "Median and 99th percentile fdatasync latency."),
        timeseries("Disk space", [
            target(f"max(edgestream_disk_free_bytes{{{sel}}})", "free", "A"),
            target(f"max(edgestream_disk_min_free_bytes{{{sel}}})", "min_free_bytes", "B"),
            target(f"max(edgestream_disk_size_bytes{{{sel}}})", "size", "C"),
        ], "bytes", "Free space of the data dir's file system against min_free_bytes."),
        timeseries("Writer queue and backpressure", [
            target(f"max(edgestream_log_pending_bytes{{{sel}}})", "pending bytes", "A"),
            target(f"max(edgestream_log_waiting_appenders{{{sel}}})", "waiting appenders", "B"),
            target(f"sum(edgestream_log_blocked{{{sel}}})", "blocked partitions", "C"),
            target(f"sum(edgestream_log_broken{{{sel}}})", "broken partitions", "D"),
        ], "short", "Appends queued for the group-commit writer; appenders held back (max_pending_bytes); "
                    "partitions blocked on a full disk or broken by an I/O error."),
        timeseries("Oldest record age by topic", [target(f"time() - min by (topic) "
                                                         f"(edgestream_log_oldest_timestamp_seconds{{{tsel}}})",
                                                         "{{topic}}")],
                   "s", "How far back each topic reaches (retention_ms bounds it)."),
        timeseries("Retention and drops", [
            target(f"sum by (topic) (increase(edgestream_log_retention_deleted_records_total{{{tsel}}}[{RATE}]))",
                   "retention {{topic}}", "A"),
            target(f"sum by (topic, reason) (increase(edgestream_dropped_records_total{{{tsel}}}[{RATE}]))",
                   "dropped {{topic}} {{reason}}", "B"),
        ], "short", "Records deleted by retention after every required reader had them, and records dropped "
                    "before (drop_oldest) or refused (full, no_room).", bars=True),
        row("Recovery and integrity"),
        timeseries("Partition epochs", [target(f"edgestream_log_epoch{{{tsel}}}", "{{topic}}/{{partition}}")],
                   "short", "Raised by each unclean stop; the mirror stamps it on every record (edge.ep)."),
        timeseries("Recovery", [
            target(f"sum(edgestream_recovery_truncated_records_total{{{sel}}})", "truncated records", "A"),
            target(f"sum(edgestream_recovery_epoch_bumps_total{{{sel}}})", "epoch bumps", "B"),
            target(f"sum(edgestream_quarantined_segments_total{{{sel}}})", "quarantined segments", "C"),
            target(f"max(edgestream_recovery_unclean_partitions{{{sel}}})", "unclean partitions", "D"),
        ], "short", "What the last start found: torn tails cut off, epochs raised, corrupt segments set aside."),
        row("Mirror"),
        timeseries("Mirror lag by partition", [target(f"max by (target, topic, partition) "
                                                      f"(edgestream_mirror_lag_seconds{{{sel}}})",
                                                      "{{target}} {{topic}}/{{partition}}")],
                   "s", "Age of the oldest unacknowledged record per partition.",
                   thresholds=((None, "green"), (900, "red")), threshold_style="line"),
        timeseries("Mirror throughput", [target(f"sum by (target, topic) (rate(edgestream_mirror_acked_records_total"
                                                f"{{{sel}}}[{RATE}]))", "{{target}} {{topic}}")],
                   "suffix: rec/s", "Records acknowledged by Kafka per second."),
        timeseries("Mirror delivery errors", [target(f"sum by (target, reason) "
                                                     f"(increase(edgestream_mirror_delivery_errors_total{{{sel}}}"
                                                     f"[{RATE}]))", "{{target}} {{reason}}")],
                   "short", "Delivery reports with an error, by librdkafka error name.", bars=True),
        state_timeline("Mirror paused", [target(f"max by (target, reason) (edgestream_mirror_paused{{{sel}}})",
                                                "{{target}} {{reason}}")],
                       "A target stops feeding while paused (authorization error, operator, ...).", PAUSED_MAP,
                       thresholds=((None, "green"), (1, "orange"))),
        row("Tier"),
        timeseries("Tier backlog", [target(f"sum by (topic) (edgestream_tier_backlog_segments{{{sel}}})", "{{topic}}")],
                   "short", "Sealed segments waiting to become Parquet.", w=8),
        timeseries("Rows tiered", [target(f"sum by (topic) (rate(edgestream_tier_rows_total{{{sel}}}[{RATE}]))",
                                          "{{topic}}")], "suffix: rows/s", "Rows written to Parquet.", w=8),
        timeseries("Cold tier size", [target(f"sum by (topic) (edgestream_tier_bytes{{{sel}}})", "{{topic}}")],
                   "bytes", "Parquet bytes on disk per topic.", w=8),
        row("Process"),
        timeseries("Memory", [
            target(f"max(process_resident_memory_bytes{{{sel}}})", "RSS", "A"),
        ], "bytes", "Resident set size of the gateway process.", w=8),
        timeseries("CPU", [target(f"sum(rate(process_cpu_seconds_total{{{sel}}}[{RATE}]))", "CPU")],
                   "percentunit", "CPU seconds per second (1.0 = one core).", w=8),
        timeseries("Event loop lag", [
            target(f"max(edgestream_event_loop_lag_seconds{{{sel}}})", "lag", "A"),
            target(f"max(edgestream_watchdog_interval_seconds{{{sel}}})", "watchdog ping interval", "B"),
        ], "s", "How late the event loop wakes the status task. systemd restarts the service when a stall outlasts "
                "WatchdogSec (twice the ping interval).", w=8),
        timeseries("HTTP requests", [target(f"sum by (route, code) (rate(edgestream_http_requests_total{{{sel}}}"
                                            f"[{RATE}]))", "{{route}} {{code}}")],
                   "reqps", "API requests by route pattern and status code (Prometheus' scrapes included).", w=24),
    ]
    return dashboard("edgestream-gateway", "edgestream / Gateway",
                     "One gateway in depth: sources, the log (fsync latency, sizes, backpressure), recovery, mirror, "
                     "tier and the process.", panels, variables(multi_gateway=False, extra=[topic_var]))


def mirror() -> dict:
    sel = f'{SEL}, target=~"$target"'
    target_var = _query_var("target", "Target", f"label_values(edgestream_mirror_lag_records{{{SEL}}}, target)",
                            multi=True, include_all=True)
    panels = [
        stat("Lag (records)", f"sum(edgestream_mirror_lag_records{{{sel}}})", "short",
             "Durable records not yet acknowledged by Kafka.", w=4),
        stat("Lag (bytes)", f"sum(edgestream_mirror_lag_bytes{{{sel}}})", "bytes", "Their key and value bytes.", w=4),
        stat("Lag (age)", f"max(edgestream_mirror_lag_seconds{{{sel}}})", "s", "Oldest unacknowledged record.",
             thresholds=((None, "green"), (900, "red")), w=4),
        stat("ETA", f"max(edgestream_mirror_eta_seconds{{{sel}}})", "s", "Time to drain the backlog at the current "
             "drain rate (worst partition).", w=4),
        stat("Drain rate", f"sum(rate(edgestream_mirror_sent_bytes_total{{{sel}}}[{RATE}]))", "Bps",
             "Bytes produced to Kafka per second (what the bandwidth cap limits).", graph=True, w=4),
        stat("Bandwidth cap", f"sum(edgestream_mirror_bandwidth_limit_bytes_per_second{{{sel}}})", "Bps",
             "Token bucket limit (0: no cap).", w=4),
        timeseries("Lag by partition (age)", [target(f"max by (target, topic, partition) "
                                                     f"(edgestream_mirror_lag_seconds{{{sel}}})",
                                                     "{{target}} {{topic}}/{{partition}}")],
                   "s", "Age of the oldest unacknowledged record per partition.",
                   thresholds=((None, "green"), (900, "red")), threshold_style="line"),
        timeseries("Backlog by topic (records)", [target(f"sum by (target, topic) "
                                                         f"(edgestream_mirror_lag_records{{{sel}}})",
                                                         "{{target}} {{topic}}")],
                   "short", "Durable records waiting for Kafka, per topic: after a WAN outage it rises, then drains "
                   "in priority order.", stack=True),
        timeseries("Backlog by topic (bytes)", [target(f"sum by (target, topic) (edgestream_mirror_lag_bytes{{{sel}}})",
                                                       "{{target}} {{topic}}")],
                   "bytes", "The same backlog in bytes.", stack=True),
        timeseries("ETA by partition", [target(f"max by (target, topic, partition) "
                                               f"(edgestream_mirror_eta_seconds{{{sel}}})",
                                               "{{target}} {{topic}}/{{partition}}")],
                   "s", "Time to drain each partition's backlog at its current drain rate."),
        timeseries("Drain rate against the bandwidth cap", [
            target(f"sum by (target) (rate(edgestream_mirror_sent_bytes_total{{{sel}}}[{RATE}]))", "{{target}} sent",
                   "A"),
            target(f"max by (target) (edgestream_mirror_bandwidth_limit_bytes_per_second{{{sel}}})",
                   "{{target}} cap", "B"),
        ], "Bps", "Bytes produced per second against the configured cap: a drain rate flat at the cap means "
                  "the cap, not Kafka, sets the ETA.", w=24),
        timeseries("In against out", [
            target(f"sum(rate(edgestream_log_appended_records_total{{{SEL}}}[{RATE}]))", "appended to the log", "A"),
            target(f"sum(rate(edgestream_mirror_acked_records_total{{{sel}}}[{RATE}]))", "acknowledged by Kafka", "B"),
        ], "suffix: rec/s", "While out stays above in, the backlog shrinks."),
        timeseries("Sent by topic", [
            target(f"sum by (target, topic) (rate(edgestream_mirror_sent_records_total{{{sel}}}[{RATE}]))",
                   "{{target}} {{topic}} sent", "A"),
            target(f"sum by (target, topic) (rate(edgestream_mirror_rewinds_total{{{sel}}}[{RATE}]))",
                   "{{target}} {{topic}} rewinds", "B"),
        ], "suffix: rec/s", "Records handed to the producer per topic (re-sends after a rewind included; priority "
                            "decides the order after an outage)."),
        timeseries("Delivery errors by reason", [target(f"sum by (target, reason) "
                                                      f"(increase(edgestream_mirror_delivery_errors_total{{{sel}}}"
                                                      f"[{RATE}]))", "{{target}} {{reason}}")],
                   "short", "Failed delivery reports by librdkafka error name; each rewinds to the persisted cursor.",
                   bars=True),
        timeseries("Producer recreations", [target(f"sum by (target) (increase("
                                                   f"edgestream_mirror_producer_recreations_total{{{sel}}}[{RATE}]))",
                                                   "{{target}}")],
                   "short", "Producers purged and rebuilt after a non-retriable error.", bars=True),
        state_timeline("Paused", [target(f"max by (target, reason) (edgestream_mirror_paused{{{sel}}})",
                                         "{{target}} {{reason}}")],
                       "A paused target sends nothing until resumed.", PAUSED_MAP,
                       thresholds=((None, "green"), (1, "orange")), w=24),
    ]
    return dashboard("edgestream-mirror", "edgestream / Mirror and backlog",
                     "The upstream mirror of one gateway: lag, backlog, ETA and drain rate against the bandwidth cap.",
                     panels, variables(multi_gateway=False, extra=[target_var]), time_from="now-3h")


def all_dashboards() -> dict[str, dict]:
    return {"fleet.json": fleet(), "gateway.json": gateway(), "mirror.json": mirror()}


def render(d: dict) -> str:
    return json.dumps(d, indent=2) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, d in all_dashboards().items():
        path = HERE / name
        text = render(d)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python dashboards/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
