"""Statistics of the log, its topics and partitions: frozen snapshots, read by gateway/metrics.py.

store/ never imports prometheus_client; these dataclasses are the whole interface.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

# Upper bounds (seconds) of the fsync latency histogram: 100 us (NVMe, page cache) to 2.5 s (a struggling SD card).
FSYNC_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    buckets: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket (not cumulative); one more than buckets: the +Inf bucket
    sum: float
    count: int


class FsyncHistogram:
    __slots__ = ("_counts", "_lock", "_sum")

    def __init__(self) -> None:
        self._counts = [0] * (len(FSYNC_BUCKETS) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        i = 0
        for i, bound in enumerate(FSYNC_BUCKETS):  # noqa: B007 - 14 buckets: a loop beats bisect's call overhead
            if seconds <= bound:
                break
        else:
            i = len(FSYNC_BUCKETS)
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            return HistogramSnapshot(FSYNC_BUCKETS, tuple(self._counts), self._sum, sum(self._counts))


@dataclass(frozen=True, slots=True)
class PartitionStatistics:
    topic: str
    partition: int
    log_start: int
    high_watermark: int
    end_offset: int
    durable_offset: int
    epoch: int
    segments: int
    size_bytes: int
    appended_records: int
    appended_bytes: int
    stored_bytes: int
    frames: int
    fsyncs: int
    synced_records: int
    fsync_seconds: HistogramSnapshot
    rolls: int
    retention_deleted_segments: int
    retention_deleted_records: int
    dropped: tuple[tuple[str, int], ...]  # (reason, records) deleted before a required cursor read them
    rejected: tuple[tuple[str, int], ...]  # (reason, records) refused at append
    epoch_bumps: int
    recovery_truncated_bytes: int
    recovery_truncated_records: int
    quarantined_segments: int
    scrubbed_segments: int
    gap_records: int
    blocked: bool
    broken: bool
    oldest_timestamp_ms: int | None
    # store.recompress: sealed segments replaced by a repacked copy, their sizes before and after, failures
    recompressed_segments: int = 0
    recompress_bytes_before: int = 0
    recompress_bytes_after: int = 0
    recompress_failures: int = 0

    @property
    def records(self) -> int:
        return self.high_watermark - self.log_start - self.gap_records


@dataclass(frozen=True, slots=True)
class TopicStatistics:
    topic: str
    partitions: tuple[PartitionStatistics, ...]

    @property
    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.partitions)

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    cycles: int
    pending_records: int
    pending_bytes: int
    commits: int  # commit cycles that wrote something
    records_per_commit_sum: int
    waiting_appenders: int


@dataclass(frozen=True, slots=True)
class RecompressStatistics:
    """The log's background recompression (store.recompress), all partitions together."""

    passes: int
    segments: int  # replaced by a repacked copy
    bytes_before: int
    bytes_after: int
    skipped: int  # copies dropped: too little saving, or the segment went away (retention, quarantine) meanwhile
    failures: int
    cpu_seconds: float  # CPU time of the recompression thread spent on segments
    raw_bytes: int  # raw (uncompressed) body bytes those seconds went through


@dataclass(frozen=True, slots=True)
class LogStatistics:
    data_dir: str
    topics: tuple[TopicStatistics, ...]
    writer: WriterStatistics
    disk_free_bytes: int
    disk_low: bool
    crc: str  # "crc32c" or "crc32"
    readonly: bool
    recompress: RecompressStatistics | None = None  # None: a read-only log
