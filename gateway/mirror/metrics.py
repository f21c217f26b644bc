"""The mirror's Prometheus metrics (`edgestream_mirror_*`), from the targets' status snapshots at scrape time.

Base units, `_total` on counters (prometheus_client adds it to CounterMetricFamily names), labels target, topic,
partition and reason only. `edgestream_mirror_paused{reason}` always has a series for "authorization" and
"operator" (0 or 1), so an alert on it never waits for a first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .stats import TargetStatus

PAUSE_REASONS = ("authorization", "authentication", "operator")


def collect(statuses: Iterable[TargetStatus],
            reloads: Mapping[str, Mapping[str, int]] | None = None) -> Iterator[Metric]:
    """`reloads`: per target, the config reloads applied to it by action (`restart`, `live`; Mirror.reloads)."""
    P = ["target", "topic", "partition"]
    lag = GaugeMetricFamily("edgestream_mirror_lag_records", "Records in the log that Kafka has not confirmed.",
                            labels=P)
    lag_b = GaugeMetricFamily("edgestream_mirror_lag_bytes", "Stored (compressed) log bytes holding unconfirmed "
                              "records.", labels=P)
    lag_s = GaugeMetricFamily("edgestream_mirror_lag_seconds", "Age of the oldest record Kafka has not confirmed "
                              "(0 when caught up).", labels=P)
    oldest = GaugeMetricFamily("edgestream_mirror_oldest_unmirrored_timestamp_seconds", "Timestamp of the oldest "
                               "unconfirmed record.", labels=P)
    drain = GaugeMetricFamily("edgestream_mirror_drain_records_per_second", "Records confirmed per second "
                              "(last 30 s).", labels=P)
    eta = GaugeMetricFamily("edgestream_mirror_eta_seconds", "Time to drain the backlog at the current drain and "
                            "ingest rates (+Inf: not shrinking).", labels=P)
    acked = GaugeMetricFamily("edgestream_mirror_acked_offset", "Acked prefix: every offset below it is in "
                              "Kafka.", labels=P)
    persisted = GaugeMetricFamily("edgestream_mirror_persisted_offset", "Offset in the cursor file.", labels=P)
    blocked = GaugeMetricFamily("edgestream_mirror_partition_blocked", "1 while the partition waits for its Kafka "
                                "topic (missing, too few partitions).", labels=P)
    epoch_raise = GaugeMetricFamily("edgestream_mirror_epoch_raise_needed", "1 if a clamped cursor left offsets "
                                    "whose new records share the epoch of records already mirrored.", labels=P)
    sent = CounterMetricFamily("edgestream_mirror_sent_records", "Records handed to the producer (re-sends "
                               "included).", labels=P)
    confirmed = CounterMetricFamily("edgestream_mirror_acked_records", "Records Kafka confirmed.", labels=P)
    skipped = CounterMetricFamily("edgestream_mirror_skipped_records", "Records never mirrored: deleted before "
                                  "(drop_oldest), lost to a quarantined segment, or poison without a dead-letter "
                                  "topic.", labels=[*P, "reason"])
    clamps = CounterMetricFamily("edgestream_mirror_cursor_clamps", "Start-up corrections of a saved cursor "
                                 "(ahead_of_log, log_recreated, deleted, rewritten).", labels=[*P, "reason"])
    rewinds = CounterMetricFamily("edgestream_mirror_rewinds", "Rewinds to the persisted cursor.", labels=P)
    T = ["target"]
    paused = GaugeMetricFamily("edgestream_mirror_paused", "1 while the target does not send, by reason.",
                               labels=["target", "reason"])
    connected = GaugeMetricFamily("edgestream_mirror_connected", "1 while Kafka answers.", labels=T)
    in_flight = GaugeMetricFamily("edgestream_mirror_in_flight_records", "Records produced, not yet reported.",
                                  labels=T)
    backoff = GaugeMetricFamily("edgestream_mirror_backoff_seconds", "Time left before the next producer.",
                                labels=T)
    cap = GaugeMetricFamily("edgestream_mirror_bandwidth_limit_bytes_per_second", "Bandwidth cap (0: none).",
                            labels=T)
    sent_b = CounterMetricFamily("edgestream_mirror_sent_bytes", "Key, value and header bytes produced.", labels=T)
    errors = CounterMetricFamily("edgestream_mirror_delivery_errors", "Failed deliveries by librdkafka error.",
                                 labels=["target", "reason"])
    recreations = CounterMetricFamily("edgestream_mirror_producer_recreations", "Producers thrown away and made "
                                      "again (step 5 of the commit protocol).", labels=T)
    persists = CounterMetricFamily("edgestream_mirror_cursor_persists", "Cursor file writes.", labels=T)
    persist_fail = CounterMetricFamily("edgestream_mirror_cursor_persist_failures", "Cursor writes that failed.",
                                       labels=T)
    internal = CounterMetricFamily("edgestream_mirror_internal_errors", "Unexpected errors in the mirror thread "
                                   "(each restarts the producer).", labels=T)
    dead = CounterMetricFamily("edgestream_mirror_dead_letters", "Records Kafka refused for good, copied to the "
                               "dead-letter topic.", labels=["target", "topic"])
    restarts = CounterMetricFamily("edgestream_mirror_reload_restarts", "Config reloads that stopped the target and "
                                   "started it again from its cursor.", labels=T)
    updates = CounterMetricFamily("edgestream_mirror_reload_updates", "Config reloads applied to the running target "
                                  "in place (bandwidth cap, priorities, batch sizes, persist interval).", labels=T)
    for st in statuses:
        t = st.name
        for reason in sorted({*PAUSE_REASONS, st.paused_reason} - {""}):
            paused.add_metric([t, reason], 1.0 if st.paused_reason == reason else 0.0)
        connected.add_metric([t], 1.0 if st.connected else 0.0)
        in_flight.add_metric([t], st.in_flight)
        backoff.add_metric([t], st.backoff_remaining_s)
        cap.add_metric([t], st.bandwidth_bytes_per_s)
        sent_b.add_metric([t], st.sent_bytes)
        recreations.add_metric([t], st.producer_recreations)
        persists.add_metric([t], st.persists)
        persist_fail.add_metric([t], st.persist_failures)
        internal.add_metric([t], st.internal_errors)
        counts = (reloads or {}).get(t, {})
        restarts.add_metric([t], counts.get("restart", 0))
        updates.add_metric([t], counts.get("live", 0))
        for reason, n in st.delivery_errors:
            errors.add_metric([t, reason], n)
        topics = {p.topic for p in st.partitions}
        dl = dict(st.dead_letters)
        for topic in sorted(topics):
            dead.add_metric([t, topic], dl.get(topic, 0))
        for p in st.partitions:
            lv = [t, p.topic, str(p.partition)]
            lag.add_metric(lv, p.lag_records)
            lag_b.add_metric(lv, p.lag_bytes)
            lag_s.add_metric(lv, p.lag_seconds)
            if p.oldest_unmirrored_ms is not None:
                oldest.add_metric(lv, p.oldest_unmirrored_ms / 1000)
            drain.add_metric(lv, p.drain_records_per_s)
            eta.add_metric(lv, p.eta_seconds)
            acked.add_metric(lv, p.acked)
            persisted.add_metric(lv, p.persisted)
            blocked.add_metric(lv, 1.0 if p.blocked else 0.0)
            epoch_raise.add_metric(lv, 1.0 if p.epoch_raise_needed else 0.0)
            sent.add_metric(lv, p.sent_records)
            confirmed.add_metric(lv, p.acked_records)
            rewinds.add_metric(lv, p.rewinds)
            for reason, n in p.skipped:
                skipped.add_metric([*lv, reason], n)
            for reason, n in p.clamps:
                clamps.add_metric([*lv, reason], n)
    yield from (lag, lag_b, lag_s, oldest, drain, eta, acked, persisted, blocked, epoch_raise, sent, confirmed,
                skipped, clamps, rewinds, paused, connected, in_flight, backoff, cap, sent_b, errors, recreations,
                persists, persist_fail, internal, dead, restarts, updates)
