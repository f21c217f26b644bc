"""Prometheus metrics, read at scrape time from the `statistics()` of store/, edge/ and gateway objects.

Nothing on the hot paths touches prometheus_client: the log, the sources, the router and the mirror keep plain
counters and hand out frozen snapshots; this collector turns a scrape into metric families. Names follow the
Prometheus conventions: `edgestream_` prefix, base units (seconds, bytes), `_total` on counters (the client adds
it to counter families); labels have bounded cardinality (topic, partition, source, type, reason, route, code),
never an MQTT topic, a key or a path. docs/metrics.md lists every family; a test keeps the two in step.

Extensions (the mirror, the tier) add their own families through `collect_metrics()`.

Size: a scrape of 16 topics x 4 partitions stays under 100 KB and 20 ms (tests/bench/bench_ops.py); that is why
fsync latency is one histogram per gateway (it is the disk's property, not the topic's) and the per-partition
families are the five an operator needs to locate a problem (offsets, size, segments, epoch).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .metrics_sources import source_families
from .version import version

if TYPE_CHECKING:
    from .service import Gateway

# Reasons a record can be dropped or refused by the log (store.partition, store.writer). Every topic exports all
# of them from the start, at 0: `increase()` cannot see the first increment of a series that did not exist.
DROP_REASONS = ("drop_oldest", "full", "no_room", "closing")


class HttpStatistics(Protocol):
    """What the HTTP API counts (gateway.api.ApiCounters)."""

    def request_counts(self) -> list[tuple[str, str, str, int]]: ...  # (route, method, code, count)

    def produced(self) -> list[tuple[str, int, int]]: ...  # (topic, records, bytes)


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway, http: HttpStatistics | None = None) -> None:
        self.gw = gateway
        self.http = http

    def collect(self) -> Iterator[Metric]:
        yield from self._gateway()
        yield from self._log()
        yield from self._router()
        yield from source_families(self.gw.source_table(), self.gw.source_restarts())
        yield from self._http()
        for ext in (getattr(self.gw, "mirror", None), getattr(self.gw, "tierer", None)):
            if ext is not None and hasattr(ext, "collect_metrics"):
                yield from ext.collect_metrics()

    # -- the process and its identity -------------------------------------------------------------------------------

    def _gateway(self) -> Iterator[Metric]:
        gw = self.gw
        build = InfoMetricFamily("edgestream_build", "Version of the running edgestream (value 1).")
        build.add_metric([], {"version": version(), "python": platform.python_version(),
                              "machine": platform.machine()})
        yield build
        ident = InfoMetricFamily("edgestream_gateway", "This gateway's id ([gateway] id, the edge.gw header); "
                                 "join on `instance` to label other series with it (value 1).")
        ident.add_metric([], {"gateway": gw.gateway_id})
        yield ident
        yield GaugeMetricFamily("edgestream_start_time_seconds", "When this gateway process started (Unix time).",
                                value=gw.started_at)
        yield GaugeMetricFamily("edgestream_ready", "1 once recovery is done and sources run; 0 while starting "
                                "or stopping.", value=1.0 if gw.ready else 0.0)
        yield CounterMetricFamily("edgestream_config_reloads_total", "Successful SIGHUP reloads.", value=gw.reloads)
        yield CounterMetricFamily("edgestream_config_reload_errors_total",
                                  "Reloads refused (bad config) or not fully applied (a mirror target or the tierer "
                                  "could not start).",
                                  value=gw.reload_errors)
        yield GaugeMetricFamily("edgestream_tier_available", "1 if the Parquet tier extra (pyarrow, duckdb) is "
                                "installed.", value=1.0 if gw.tier_available else 0.0)
        notifier = gw.notifier
        yield CounterMetricFamily("edgestream_watchdog_pings_total", "WATCHDOG=1 messages sent to systemd.",
                                  value=getattr(notifier, "watchdog_pings", 0))
        yield CounterMetricFamily("edgestream_sd_notify_errors_total", "sd_notify messages systemd did not take.",
                                  value=getattr(notifier, "errors", 0))
        heartbeat = getattr(gw, "heartbeat", None)
        if heartbeat is not None:
            hb = heartbeat.statistics()
            yield GaugeMetricFamily("edgestream_watchdog_interval_seconds", "Seconds between WATCHDOG=1 pings "
                                    "(half of WatchdogSec); 0 when systemd's watchdog is off.",
                                    value=hb.watchdog_interval_seconds)
            yield GaugeMetricFamily("edgestream_event_loop_lag_seconds", "How late the event loop woke the "
                                    "status task at its last beat (time spent blocked elsewhere).",
                                    value=hb.last_lag_seconds)
            yield GaugeMetricFamily("edgestream_event_loop_lag_max_seconds", "The worst event loop lag since "
                                    "start.", value=hb.max_lag_seconds)

    # -- the log --------------------------------------------------------------------------------------------------

    def _log(self) -> Iterator[Metric]:
        log = self.gw.log
        if log is None:
            return
        st = log.statistics()
        yield GaugeMetricFamily("edgestream_disk_free_bytes", "Free bytes on the data dir's file system "
                                "(for unprivileged users).", value=st.disk_free_bytes)
        yield GaugeMetricFamily("edgestream_disk_size_bytes", "Size of the data dir's file system.",
                                value=_disk_size(log.data_dir))
        yield GaugeMetricFamily("edgestream_disk_min_free_bytes", "Free space below which each topic's on_full "
                                "policy applies ([log] min_free_bytes).", value=log.config.min_free_bytes)
        yield GaugeMetricFamily("edgestream_disk_low", "1 while free space is below min_free_bytes.",
                                value=1.0 if st.disk_low else 0.0)
        w = st.writer
        yield GaugeMetricFamily("edgestream_log_pending_bytes", "Appended bytes queued for the writer.",
                                value=w.pending_bytes)
        yield GaugeMetricFamily("edgestream_log_pending_records", "Appended records queued for the writer.",
                                value=w.pending_records)
        yield GaugeMetricFamily("edgestream_log_waiting_appenders", "Appenders waiting for room "
                                "(max_pending_bytes reached: backpressure).", value=w.waiting_appenders)
        yield CounterMetricFamily("edgestream_log_commits_total", "Group-commit rounds that wrote something.",
                                  value=w.commits)
        yield CounterMetricFamily("edgestream_log_committed_records_total", "Records acknowledged by group-commit "
                                  "rounds (divide by commits for records per round).", value=w.records_per_commit_sum)
        unclean = sum(1 for r in log.recovery_reports() if not r.clean)
        yield GaugeMetricFamily("edgestream_recovery_unclean_partitions", "Partitions whose previous stop was not "
                                "clean (found at this start).", value=unclean)

        pl = ["topic", "partition"]
        end = _gauge("edgestream_log_end_offset", "Next offset to be assigned (high watermark).", pl)
        start = _gauge("edgestream_log_start_offset", "First offset still kept (retention moves it).", pl)
        size = _gauge("edgestream_log_size_bytes", "Bytes of segments on disk.", pl)
        segs = _gauge("edgestream_log_segments", "Segments on disk.", pl)
        epoch = _gauge("edgestream_log_epoch", "Partition epoch (raised after an unclean stop).", pl)
        tl = ["topic"]
        records = _gauge("edgestream_log_records", "Records kept (end - start - quarantined gaps).", tl)
        blocked = _gauge("edgestream_log_blocked", "Partitions whose appends wait for room (on_full=block).", tl)
        broken = _gauge("edgestream_log_broken", "Partitions that stopped writing after an I/O error; restart.", tl)
        oldest = _gauge("edgestream_log_oldest_timestamp_seconds", "Timestamp of the oldest record kept.", tl)
        counters = {
            "appended_records": _counter("edgestream_log_appended_records", "Records appended.", tl),
            "appended_bytes": _counter("edgestream_log_appended_bytes", "Key and value bytes appended.", tl),
            "stored_bytes": _counter("edgestream_log_written_bytes", "Bytes written to segments (framed, "
                                     "compressed).", tl),
            "frames": _counter("edgestream_log_frames", "Frames written (one per batch of records).", tl),
            "fsyncs": _counter("edgestream_log_fsyncs", "fdatasync calls.", tl),
            "synced_records": _counter("edgestream_log_synced_records", "Records covered by fdatasync calls "
                                       "(divide by fsyncs for records per fsync).", tl),
            "rolls": _counter("edgestream_log_segment_rolls", "Segments sealed.", tl),
            "retention_deleted_records": _counter("edgestream_log_retention_deleted_records", "Records deleted by "
                                                  "retention (after every required reader had them).", tl),
            "retention_deleted_segments": _counter("edgestream_log_retention_deleted_segments", "Segments deleted "
                                                   "by retention.", tl),
            "epoch_bumps": _counter("edgestream_recovery_epoch_bumps", "Epoch raises (unclean stops, rewinds).", tl),
            "recovery_truncated_records": _counter("edgestream_recovery_truncated_records", "Records cut off by "
                                                   "recovery (torn or corrupt tails).", tl),
            "recovery_truncated_bytes": _counter("edgestream_recovery_truncated_bytes", "Bytes cut off by recovery.",
                                                 tl),
            "quarantined_segments": _counter("edgestream_quarantined_segments", "Corrupt sealed segments set aside "
                                             "(renamed, never deleted).", tl),
            "scrubbed_segments": _counter("edgestream_scrubbed_segments", "Sealed segments re-checked by the "
                                          "background scrub.", tl),
            "recompressed_segments": _counter("edgestream_log_recompressed_segments", "Sealed segments of small "
                                              "frames rewritten in large ones (same records).", tl),
            "recompress_bytes_before": _counter("edgestream_log_recompress_bytes_before", "Bytes of those segments "
                                                "before.", tl),
            "recompress_bytes_after": _counter("edgestream_log_recompress_bytes_after", "Bytes of those segments "
                                               "after.", tl),
            "recompress_failures": _counter("edgestream_log_recompress_failures", "Recompressions that failed (the "
                                            "segment stays as it was).", tl),
        }
        dropped = _counter("edgestream_dropped_records", "Records lost on purpose: deleted before a required "
                           "reader (mirror, tier) had them (drop_oldest), or refused at append (full, no_room, "
                           "closing).", ["topic", "reason"])
        hist_counts: list[int] = []
        hist_sum = 0.0
        bounds: tuple[float, ...] = ()
        for t in st.topics:
            drops = dict.fromkeys(DROP_REASONS, 0)
            sums = dict.fromkeys(counters, 0)
            for p in t.partitions:
                lv = [t.topic, str(p.partition)]
                end.add_metric(lv, p.high_watermark)
                start.add_metric(lv, p.log_start)
                size.add_metric(lv, p.size_bytes)
                segs.add_metric(lv, p.segments)
                epoch.add_metric(lv, p.epoch)
                for field in sums:
                    sums[field] += getattr(p, field)
                for reason, n in (*p.dropped, *p.rejected):
                    drops[reason] = drops.get(reason, 0) + n
                h = p.fsync_seconds
                bounds = h.buckets
                hist_counts = [a + b for a, b in zip(hist_counts, h.counts, strict=True)] if hist_counts \
                    else list(h.counts)
                hist_sum += h.sum
            ps = t.partitions
            records.add_metric([t.topic], t.records)
            blocked.add_metric([t.topic], sum(1 for p in ps if p.blocked))
            broken.add_metric([t.topic], sum(1 for p in ps if p.broken))
            stamps = [p.oldest_timestamp_ms for p in ps if p.oldest_timestamp_ms is not None]
            if stamps:
                oldest.add_metric([t.topic], min(stamps) / 1000)
            for field, fam in counters.items():
                fam.add_metric([t.topic], sums[field])
            for reason, n in sorted(drops.items()):
                dropped.add_metric([t.topic, reason], n)
        hist = HistogramMetricFamily("edgestream_fsync_duration_seconds", "fdatasync latency, all partitions "
                                     "(a property of the flash and its file system).")
        if bounds:
            cum = 0
            buckets = []
            for b, c in zip((*(_le(x) for x in bounds), "+Inf"), hist_counts, strict=True):
                cum += c
                buckets.append((b, cum))
            hist.add_metric([], buckets, hist_sum)
            yield hist
        yield from (end, start, size, segs, epoch, records, blocked, broken, oldest, *counters.values(), dropped)

    # -- routing ----------------------------------------------------------------------------------------------------

    def _router(self) -> Iterator[Metric]:
        router = self.gw.router
        if router is None:
            return
        st = router.statistics()
        rin = _counter("edgestream_records_in", "Records from sources acknowledged by the log.", ["source", "topic"])
        bin_ = _counter("edgestream_bytes_in", "Payload bytes from sources acknowledged by the log.",
                        ["source", "topic"])
        seen = set()
        for s, t, n in st.records_in:
            rin.add_metric([s, t], n)
            seen.add(s)
        for s, t, n in st.bytes_in:
            bin_.add_metric([s, t], n)
        specs = self.gw.source_specs()
        for name, spec in specs.items():  # a series per source from the start: no gaps in rate()
            if name not in seen:
                rin.add_metric([name, spec.topic], 0)
                bin_.add_metric([name, spec.topic], 0)
        dec = _counter("edgestream_decode_errors", "Payloads stored raw that the topic's decoder could not decode.",
                       ["topic", "reason"])
        for t, r, n in st.decode_errors:
            dec.add_metric([t, r], n)
        dl = _counter("edgestream_dead_letters", "Frames and records sent to a dead-letter topic.", ["topic", "reason"])
        dl_seen = set()
        for t, r, n in st.dead_letters:
            dl.add_metric([t, r], n)
            dl_seen.add(t)
        for topic in sorted({spec.topic for spec in specs.values()} - dl_seen):
            dl.add_metric([topic, "too_large"], 0)  # the one reason every topic can have: a series from the start
        rej = _counter("edgestream_source_rejected_records", "Readings the log refused (counted, acknowledged to "
                       "the sender).", ["source", "reason"])
        rejected = {(s, r): n for s, r, n in st.rejected}
        for name in specs:  # the router's two reasons, from the start (see DROP_REASONS)
            for reason in ("full", "too_large"):
                rejected.setdefault((name, reason), 0)
        for (s, r), n in sorted(rejected.items()):
            rej.add_metric([s, r], n)
        miss = _counter("edgestream_key_template_misses", "Readings that lacked a field the route's key template "
                        "names (stored without a key).", ["source"])
        for s, n in st.key_template_misses:
            miss.add_metric([s], n)
        yield from (rin, bin_, dec, dl, rej, miss)
        yield GaugeMetricFamily("edgestream_records_in_flight", "Readings handed to the log, not yet acknowledged.",
                                value=st.in_flight)

    # -- the HTTP API -----------------------------------------------------------------------------------------------

    def _http(self) -> Iterator[Metric]:
        if self.http is None:
            return
        req = _counter("edgestream_http_requests", "HTTP API requests by route pattern, method and status code.",
                       ["route", "method", "code"])
        for route, method, code, n in self.http.request_counts():
            req.add_metric([route, method, code], n)
        recs = _counter("edgestream_http_produced_records", "Records appended through POST "
                        "/v1/topics/{topic}/records.", ["topic"])
        nbytes = _counter("edgestream_http_produced_bytes", "Value bytes appended through the HTTP API.", ["topic"])
        for topic, n, b in self.http.produced():
            recs.add_metric([topic], n)
            nbytes.add_metric([topic], b)
        yield from (req, recs, nbytes)


def _le(bound: float) -> str:
    # Prometheus' own text format for bucket bounds: 0.0001, 0.5, 1.0, 2.5.
    return repr(float(bound))


def _disk_size(path: str) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_blocks * st.f_frsize


def make_registry(gateway: Gateway, http: HttpStatistics | None = None) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
    PlatformCollector(registry=reg)  # python_info
    GCCollector(registry=reg)
    reg.register(GatewayCollector(gateway, http))
    return reg


def rss_bytes() -> int:
    """Resident set size of this process (for `status` and logs), from /proc without psutil."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
