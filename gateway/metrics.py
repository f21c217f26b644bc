"""Prometheus metrics, read at scrape time from the `statistics()` of store/, edge/ and gateway objects.

Nothing on the hot paths touches prometheus_client: the log, the sources, the router and the mirror keep plain
counters and hand out frozen snapshots; this collector turns a scrape into metric families. Names follow the
Prometheus conventions: `edgestream_` prefix, base units (seconds, bytes), `_total` on counters; labels have
bounded cardinality (topic, partition, source, reason), never an MQTT topic or a key.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .version import version

if TYPE_CHECKING:
    from .service import Gateway

# Fields of source statistics that only ever grow: exported as counters (`edgestream_source_<field>_total`).
COUNTER_FIELDS = {
    "received", "acked", "rejected", "reconnects", "frames", "bytes", "bytes_in", "errors", "dead_letters",
    "generated", "malformed", "replies", "publishes", "connections_total", "polls", "timeouts", "crc_errors",
    "auth_failures", "subscriber_drops", "acks_sent", "redelivered", "messages", "framing_errors",
}


def _labels_for_reason(value: Any) -> Iterable[tuple[str, float]] | None:
    """(reason, count) pairs from a dict or a tuple of pairs; None if `value` is not such a mapping."""
    if isinstance(value, dict):
        return [(str(k), float(v)) for k, v in value.items() if isinstance(v, int | float)]
    if isinstance(value, tuple) and all(isinstance(x, tuple) and len(x) == 2 for x in value):
        return [(str(k), float(v)) for k, v in value if isinstance(v, int | float)]
    return None


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def collect(self) -> Iterator[Metric]:
        yield from self._gateway()
        yield from self._log()
        yield from self._router()
        yield from self._sources()
        mirror = getattr(self.gw, "mirror", None)
        if mirror is not None and hasattr(mirror, "collect_metrics"):
            yield from mirror.collect_metrics()
        tier = getattr(self.gw, "tierer", None)
        if tier is not None and hasattr(tier, "collect_metrics"):
            yield from tier.collect_metrics()

    def _gateway(self) -> Iterator[Metric]:
        info = InfoMetricFamily("edgestream_build", "Version of the running edgestream.")
        info.add_metric([], {"version": version(), "python": platform.python_version(), "machine": platform.machine(),
                             "gateway": self.gw.gateway_id})
        yield info
        yield GaugeMetricFamily("edgestream_start_time_seconds", "When this gateway process started (Unix time).",
                                value=self.gw.started_at)
        yield GaugeMetricFamily("edgestream_ready", "1 once recovery is done and sources run.",
                                value=1.0 if self.gw.ready else 0.0)
        yield CounterMetricFamily("edgestream_config_reloads_total", "Successful SIGHUP reloads.",
                                  value=self.gw.reloads)
        yield CounterMetricFamily("edgestream_config_reload_errors_total", "Reloads refused (bad config).",
                                  value=self.gw.reload_errors)
        tier = GaugeMetricFamily("edgestream_tier_available", "1 if the Parquet tier extra (pyarrow, duckdb) "
                                 "is installed.", value=1.0 if self.gw.tier_available else 0.0)
        yield tier

    def _log(self) -> Iterator[Metric]:
        log = self.gw.log
        if log is None:
            return
        st = log.statistics()
        yield GaugeMetricFamily("edgestream_disk_free_bytes", "Free bytes on the data dir's file system.",
                                value=st.disk_free_bytes)
        yield GaugeMetricFamily("edgestream_disk_min_free_bytes", "Free space below which on_full applies.",
                                value=log.config.min_free_bytes)
        yield GaugeMetricFamily("edgestream_log_pending_bytes", "Appends queued for the writer.",
                                value=st.writer.pending_bytes)
        p_labels = ["topic", "partition"]
        end = GaugeMetricFamily("edgestream_log_end_offset", "Next offset to be assigned (high watermark).",
                                labels=p_labels)
        start = GaugeMetricFamily("edgestream_log_start_offset", "First offset still kept.", labels=p_labels)
        size = GaugeMetricFamily("edgestream_log_size_bytes", "Bytes of segments on disk.", labels=p_labels)
        segs = GaugeMetricFamily("edgestream_log_segments", "Segments on disk.", labels=p_labels)
        epoch = GaugeMetricFamily("edgestream_log_epoch", "Partition epoch (raised after unclean stops).",
                                  labels=p_labels)
        blocked = GaugeMetricFamily("edgestream_log_blocked", "1 while appends wait for room (on_full=block).",
                                    labels=p_labels)
        broken = GaugeMetricFamily("edgestream_log_broken", "1 after an I/O error stopped writes; restart.",
                                   labels=p_labels)
        oldest = GaugeMetricFamily("edgestream_log_oldest_timestamp_seconds", "Timestamp of the oldest record kept.",
                                   labels=p_labels)
        t_labels = ["topic"]
        appended = CounterMetricFamily("edgestream_log_appended_records", "Records appended.", labels=t_labels)
        appended_b = CounterMetricFamily("edgestream_log_appended_bytes", "Key and value bytes appended.",
                                         labels=t_labels)
        stored_b = CounterMetricFamily("edgestream_log_written_bytes", "Bytes written to segments (compressed).",
                                       labels=t_labels)
        fsyncs = CounterMetricFamily("edgestream_log_fsyncs", "fdatasync calls.", labels=t_labels)
        synced = CounterMetricFamily("edgestream_log_synced_records", "Records covered by fdatasync calls "
                                     "(divide by fsyncs for records per fsync).", labels=t_labels)
        rolls = CounterMetricFamily("edgestream_log_segment_rolls", "Segments sealed.", labels=t_labels)
        ret = CounterMetricFamily("edgestream_log_retention_deleted_records", "Records deleted by retention.",
                                  labels=t_labels)
        dropped = CounterMetricFamily("edgestream_dropped_records", "Records lost on purpose: dropped before a "
                                      "required reader (mirror, tier) had them, or refused at append.",
                                      labels=["topic", "reason"])
        bumps = CounterMetricFamily("edgestream_recovery_epoch_bumps", "Epoch raises (unclean stops).",
                                    labels=t_labels)
        trunc_r = CounterMetricFamily("edgestream_recovery_truncated_records", "Records cut off by recovery "
                                      "(torn or corrupt tails).", labels=t_labels)
        trunc_b = CounterMetricFamily("edgestream_recovery_truncated_bytes", "Bytes cut off by recovery.",
                                      labels=t_labels)
        quar = CounterMetricFamily("edgestream_quarantined_segments", "Corrupt sealed segments set aside.",
                                   labels=t_labels)
        hist = HistogramMetricFamily("edgestream_fsync_duration_seconds", "fdatasync latency.", labels=t_labels)
        for t in st.topics:
            agg_counts: list[int] = []
            agg_sum = 0.0
            drops: dict[str, int] = {}
            for p in t.partitions:
                lv = [t.topic, str(p.partition)]
                end.add_metric(lv, p.high_watermark)
                start.add_metric(lv, p.log_start)
                size.add_metric(lv, p.size_bytes)
                segs.add_metric(lv, p.segments)
                epoch.add_metric(lv, p.epoch)
                blocked.add_metric(lv, 1.0 if p.blocked else 0.0)
                broken.add_metric(lv, 1.0 if p.broken else 0.0)
                if p.oldest_timestamp_ms is not None:
                    oldest.add_metric(lv, p.oldest_timestamp_ms / 1000)
                h = p.fsync_seconds
                agg_counts = [a + b for a, b in zip(agg_counts, h.counts, strict=True)] if agg_counts else \
                    list(h.counts)
                agg_sum += h.sum
                for reason, n in (*p.dropped, *p.rejected):
                    drops[reason] = drops.get(reason, 0) + n
            ps = t.partitions
            appended.add_metric([t.topic], sum(p.appended_records for p in ps))
            appended_b.add_metric([t.topic], sum(p.appended_bytes for p in ps))
            stored_b.add_metric([t.topic], sum(p.stored_bytes for p in ps))
            fsyncs.add_metric([t.topic], sum(p.fsyncs for p in ps))
            synced.add_metric([t.topic], sum(p.synced_records for p in ps))
            rolls.add_metric([t.topic], sum(p.rolls for p in ps))
            ret.add_metric([t.topic], sum(p.retention_deleted_records for p in ps))
            bumps.add_metric([t.topic], sum(p.epoch_bumps for p in ps))
            trunc_r.add_metric([t.topic], sum(p.recovery_truncated_records for p in ps))
            trunc_b.add_metric([t.topic], sum(p.recovery_truncated_bytes for p in ps))
            quar.add_metric([t.topic], sum(p.quarantined_segments for p in ps))
            for reason in ("drop_oldest", "full", "no_room"):
                drops.setdefault(reason, 0)
            for reason, n in sorted(drops.items()):
                dropped.add_metric([t.topic, reason], n)
            if ps:
                bounds = ps[0].fsync_seconds.buckets
                cum = 0
                buckets = []
                for b, c in zip((*[str(x) for x in bounds], "+Inf"), agg_counts, strict=True):
                    cum += c
                    buckets.append((b, cum))
                hist.add_metric([t.topic], buckets, agg_sum)
        yield from (end, start, size, segs, epoch, blocked, broken, oldest, appended, appended_b, stored_b, fsyncs,
                    synced, rolls, ret, dropped, bumps, trunc_r, trunc_b, quar, hist)

    def _router(self) -> Iterator[Metric]:
        router = self.gw.router
        if router is None:
            return
        st = router.statistics()
        rin = CounterMetricFamily("edgestream_records_in", "Records from sources acknowledged by the log.",
                                  labels=["source", "topic"])
        bin_ = CounterMetricFamily("edgestream_bytes_in", "Payload bytes from sources acknowledged by the log.",
                                   labels=["source", "topic"])
        for s, t, n in st.records_in:
            rin.add_metric([s, t], n)
        for s, t, n in st.bytes_in:
            bin_.add_metric([s, t], n)
        for name, spec in self.gw.source_specs().items():  # a series per source from the start: no gaps in rate()
            if not any(s == name for s, _, _ in st.records_in):
                rin.add_metric([name, spec.topic], 0)
                bin_.add_metric([name, spec.topic], 0)
        dec = CounterMetricFamily("edgestream_decode_errors", "Payloads stored raw that the topic's decoder "
                                  "could not decode.", labels=["topic", "reason"])
        for t, r, n in st.decode_errors:
            dec.add_metric([t, r], n)
        dl = CounterMetricFamily("edgestream_dead_letters", "Frames and records sent to a dead-letter topic.",
                                 labels=["topic", "reason"])
        for t, r, n in st.dead_letters:
            dl.add_metric([t, r], n)
        rej = CounterMetricFamily("edgestream_source_rejected_records", "Readings the log refused (counted, "
                                  "acknowledged to the sender).", labels=["source", "reason"])
        for s, r, n in st.rejected:
            rej.add_metric([s, r], n)
        miss = CounterMetricFamily("edgestream_key_template_misses", "Readings that lacked a field the route's "
                                   "key template names (stored without a key).", labels=["source"])
        for s, n in st.key_template_misses:
            miss.add_metric([s], n)
        yield from (rin, bin_, dec, dl, rej, miss)
        yield GaugeMetricFamily("edgestream_records_in_flight", "Readings handed to the log, not yet acknowledged.",
                                value=st.in_flight)

    def _sources(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        up = GaugeMetricFamily("edgestream_source_up", "1 while the source's task runs.", labels=["source", "type"])
        for name, (typ, source, running) in self.gw.source_table().items():
            up.add_metric([name, typ], 1.0 if running else 0.0)
            try:
                stats = source.statistics()
            except Exception:
                continue
            if not dataclasses.is_dataclass(stats):
                continue
            for f in dataclasses.fields(stats):
                value = getattr(stats, f.name)
                pairs = _labels_for_reason(value)
                if pairs is not None:
                    mname = f"edgestream_source_{f.name}_total"
                    fam = families.get(mname)
                    if fam is None:
                        fam = families[mname] = CounterMetricFamily(mname[: -len("_total")],
                                                                    f"Source statistic {f.name}, by reason.",
                                                                    labels=["source", "type", "reason"])
                    for reason, n in pairs:
                        fam.add_metric([name, typ, reason], n)  # type: ignore[attr-defined]
                    continue
                if isinstance(value, bool):
                    value = 1.0 if value else 0.0
                elif not isinstance(value, int | float):
                    continue
                if f.name in COUNTER_FIELDS:
                    mname = f"edgestream_source_{f.name}"
                    fam = families.get(mname + "_total")
                    if fam is None:
                        fam = families[mname + "_total"] = CounterMetricFamily(
                            mname, f"Source statistic {f.name}.", labels=["source", "type"])
                else:
                    mname = f"edgestream_source_{f.name}"
                    fam = families.get(mname)
                    if fam is None:
                        fam = families[mname] = GaugeMetricFamily(mname, f"Source statistic {f.name}.",
                                                                  labels=["source", "type"])
                fam.add_metric([name, typ], float(value))  # type: ignore[attr-defined]
        yield up
        yield from families.values()


def make_registry(gateway: Gateway) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
    PlatformCollector(registry=reg)
    reg.register(GatewayCollector(gateway))
    return reg


def rss_bytes() -> int:
    """Resident set size of this process (for `status` and logs), from /proc without psutil."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
