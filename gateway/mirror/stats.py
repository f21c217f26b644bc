"""Frozen snapshots of the mirror's state, for /metrics, the HTTP API and `edgestream mirror status`.

The mirror thread builds a `TargetStatus` about once a second (`build_status`); readers on the event loop take the
latest one. Lag, per partition:
- records: high watermark - acked prefix (what Kafka has not confirmed yet);
- bytes: the stored (compressed) bytes of the segments holding those records, pro rata by offsets: what the log
  holds for this target, not what the WAN will carry;
- seconds: age of the oldest record Kafka has not confirmed (0 when none).
Drain rate is acknowledged records per second over the last 30 s; ETA = lag / (drain - ingest) at those rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .core import MirrorCursor
from .flow import RateMeter, eta_s


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    topic: str
    partition: int
    kafka_topic: str
    kafka_partition: int  # -1: by key
    priority: int
    log_start: int
    high_watermark: int
    next_send: int
    acked: int
    persisted: int
    epoch: int
    lag_records: int
    lag_bytes: int
    lag_seconds: float
    oldest_unmirrored_ms: int | None
    drain_records_per_s: float
    ingest_records_per_s: float
    eta_seconds: float
    live: bool
    blocked: str  # "" or why this partition waits (its Kafka topic is missing, ...)
    in_flight: int
    sent_records: int
    acked_records: int
    dead_letters: int
    rewinds: int
    skipped: tuple[tuple[str, int], ...]
    clamps: tuple[tuple[str, int], ...]  # start-up corrections of the cursor, by reason
    epoch_raise_needed: bool


@dataclass(frozen=True, slots=True)
class TargetStatus:
    name: str
    bootstrap: str
    state: str  # starting | running | paused | backoff | stopped
    paused_reason: str
    connected: bool
    in_flight: int
    last_error: str
    last_error_age_s: float | None
    backoff_remaining_s: float
    producer_recreations: int
    persists: int
    persist_failures: int
    internal_errors: int
    sent_bytes: int
    bandwidth_bytes_per_s: int
    delivery_errors: tuple[tuple[str, int], ...]  # by reason (librdkafka error name, lower case)
    dead_letters: tuple[tuple[str, int], ...]  # by edge topic
    partitions: tuple[PartitionStatus, ...]
    updated_ms: int

    @property
    def lag_records(self) -> int:
        return sum(p.lag_records for p in self.partitions)

    @property
    def lag_seconds(self) -> float:
        return max((p.lag_seconds for p in self.partitions), default=0.0)

    @property
    def eta_seconds(self) -> float:
        return max((p.eta_seconds for p in self.partitions), default=0.0)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["lag_records"] = self.lag_records
        doc["lag_seconds"] = self.lag_seconds
        doc["eta_seconds"] = self.eta_seconds
        doc["delivery_errors"] = dict(self.delivery_errors)
        doc["dead_letters"] = dict(self.dead_letters)
        for p in doc["partitions"]:
            p["skipped"] = dict(p["skipped"])
            p["clamps"] = dict(p["clamps"])
        out: dict[str, Any] = _finite(doc)
        return out


def _finite(obj: Any) -> Any:
    """JSON has no Infinity: an ETA that never comes is null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


@dataclass
class PartitionMeters:
    """Per-partition rate meters and the cached timestamp of the oldest unconfirmed record."""

    drain: RateMeter = field(default_factory=RateMeter)
    ingest: RateMeter = field(default_factory=RateMeter)
    oldest: tuple[int, int | None] = (-1, None)  # (offset, its timestamp)


def lag_bytes(segments: Sequence[Any], acked: int, high_watermark: int) -> int:
    """Stored bytes of the records in [acked, high_watermark), pro rata by offsets within each segment."""
    if acked >= high_watermark:
        return 0
    total = 0.0
    for seg in segments:
        lo, hi = seg.base_offset, min(seg.next_offset, high_watermark)
        if hi <= acked or hi <= lo:
            continue
        share = (hi - max(lo, acked)) / (seg.next_offset - lo)
        total += seg.size * share
    return int(total)


def oldest_timestamp(meters: PartitionMeters, acked: int, high_watermark: int,
                     read_ts: Callable[[int], int | None]) -> int | None:
    """Timestamp of the record at `acked` (the oldest one Kafka has not confirmed), read once per offset."""
    if acked >= high_watermark:
        return None
    off, ts = meters.oldest
    if off != acked:
        ts = read_ts(acked)
        meters.oldest = (acked, ts)
    return ts


def partition_status(c: MirrorCursor, *, kafka_topic: str, kafka_partition: int, priority: int, log_start: int,
                     high_watermark: int, segments: Sequence[Any], meters: PartitionMeters, now: float, now_ms: int,
                     live: bool, blocked: str, clamps: dict[str, int], epoch_raise_needed: bool,
                     read_ts: Callable[[int], int | None]) -> PartitionStatus:
    meters.drain.sample(now, c.acked_records)
    meters.ingest.sample(now, high_watermark)
    lag = max(0, high_watermark - c.acked)
    oldest = oldest_timestamp(meters, c.acked, high_watermark, read_ts)
    drain, ingest = meters.drain.rate(), meters.ingest.rate()
    return PartitionStatus(
        topic=c.topic, partition=c.partition, kafka_topic=kafka_topic, kafka_partition=kafka_partition,
        priority=priority, log_start=log_start, high_watermark=high_watermark, next_send=c.next_send,
        acked=c.acked, persisted=c.persisted, epoch=c.epoch, lag_records=lag,
        lag_bytes=lag_bytes(segments, c.acked, high_watermark),
        lag_seconds=max(0.0, (now_ms - oldest) / 1000) if oldest is not None else 0.0,
        oldest_unmirrored_ms=oldest, drain_records_per_s=drain, ingest_records_per_s=ingest,
        eta_seconds=eta_s(lag, drain, ingest), live=live, blocked=blocked, in_flight=c.in_flight,
        sent_records=c.sent_records, acked_records=c.acked_records, dead_letters=c.dead_letters, rewinds=c.rewinds,
        skipped=tuple(sorted(c.skipped.items())), clamps=tuple(sorted(clamps.items())),
        epoch_raise_needed=epoch_raise_needed,
    )
