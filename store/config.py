"""Typed settings of topics and of the log, validated when they are made, with errors naming key and allowed values."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from . import codec as codecs
from .errors import InvalidConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

ON_FULL = ("block", "drop_oldest", "reject_new")


@dataclass(frozen=True, slots=True)
class Durability:
    """When an append is acknowledged. `fsync`: after the fdatasync covering it (nothing acked is lost on power
    cut). `interval`: after write(), fdatasync at least every `interval_ms` (at most that much acked data lost).
    `os`: after write(), the kernel writes back (a power cut loses what the page cache held)."""

    kind: str
    interval_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> Durability:
        if text in ("fsync", "os"):
            return cls(text)
        if text.startswith("interval:"):
            try:
                ms = int(text.split(":", 1)[1])
            except ValueError:
                ms = -1
            if 1 <= ms <= 3_600_000:
                return cls("interval", ms)
        raise InvalidConfigError("durability", text, "fsync, os or interval:<ms> with 1 <= ms <= 3600000")

    def __str__(self) -> str:
        return f"interval:{self.interval_ms}" if self.kind == "interval" else self.kind

    @property
    def acks_after_sync(self) -> bool:
        return self.kind == "fsync"


class TopicConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A topic's settings (stored in `topics/<topic>/config`). Sizes in bytes, times in milliseconds.

    retention_bytes is per partition, as in Kafka; None means no limit."""

    partitions: int = 1
    codec: str = "zstd"
    compression_level: int = 1
    durability: str = "fsync"
    segment_bytes: int = 16 * MiB  # a multiple of common SD erase units (2-8 MiB); bounds crash-recovery scans
    segment_ms: int = 3_600_000  # 1 h: bounds how late a segment reaches the cold tier
    retention_bytes: int | None = None
    retention_ms: int | None = 7 * 24 * 3_600_000
    on_full: str = "block"
    max_record_bytes: int = 1 * MiB
    linger_ms: float = 5.0
    frame_bytes: int = 256 * KiB  # measured: 100 KB+ batches make an fsync every 5 ms cost nothing (limits 2b)
    index_interval_bytes: int = 4 * KiB  # Kafka's index.interval.bytes
    # Repack sealed segments of small frames into frame_bytes frames (store.recompress): at low rates a frame holds
    # 2-3 records and compresses ~1.0x. Never for codec none (nothing to gain).
    recompress: bool = True

    def __post_init__(self) -> None:
        _check_range("partitions", self.partitions, 1, 4096)
        codecs.codec_id(self.codec)
        if self.codec == "zstd":
            _check_range("compression_level", self.compression_level, 1, 19)
        Durability.parse(self.durability)
        _check_range("segment_bytes", self.segment_bytes, 4 * KiB, 1 * GiB)
        _check_range("segment_ms", self.segment_ms, 1_000, 365 * 24 * 3_600_000)
        if self.retention_bytes is not None:
            _check_range("retention_bytes", self.retention_bytes, 0, 2**62)
        if self.retention_ms is not None:
            _check_range("retention_ms", self.retention_ms, 0, 2**62)
        if self.on_full not in ON_FULL:
            raise InvalidConfigError("on_full", self.on_full, ", ".join(ON_FULL))
        _check_range("max_record_bytes", self.max_record_bytes, 1, 64 * MiB)
        if not 0 <= self.linger_ms <= 10_000:
            raise InvalidConfigError("linger_ms", self.linger_ms, "0 to 10000")
        _check_range("frame_bytes", self.frame_bytes, 1 * KiB, 64 * MiB)
        _check_range("index_interval_bytes", self.index_interval_bytes, 1, 16 * MiB)

    @property
    def durability_mode(self) -> Durability:
        return Durability.parse(self.durability)

    @property
    def codec_id(self) -> int:
        return codecs.codec_id(self.codec)

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> TopicConfig:
        return msgspec.json.decode(data, type=cls)


class LogConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Settings of the whole log (one data dir)."""

    min_free_bytes: int = 256 * MiB  # below this the topics' on_full policy applies
    max_pending_bytes: int = 64 * MiB  # appends waiting for the writer; beyond it appenders wait (backpressure)
    disk_check_interval_ms: int = 200  # statvfs is cheap but not free: check free space at most this often
    # An append waiting on a blocked topic (on_full = block, no room) fails with DiskFullError after this long, and
    # a synchronous appender waiting for room under max_pending_bytes gives up after it. None: wait for room.
    block_timeout_ms: int | None = None
    # The background recompression thread (store.recompress; topics opt out with TopicConfig.recompress): off
    # here, nothing is repacked unless `Log.recompress_now` is called. It uses at most `recompress_cpu_share` of a
    # core and looks for new sealed segments every `recompress_interval_ms`.
    recompress: bool = True
    recompress_cpu_share: float = 0.25
    recompress_interval_ms: int = 60_000

    def __post_init__(self) -> None:
        _check_range("min_free_bytes", self.min_free_bytes, 0, 2**62)
        _check_range("max_pending_bytes", self.max_pending_bytes, 64 * KiB, 4 * GiB)
        _check_range("disk_check_interval_ms", self.disk_check_interval_ms, 0, 60_000)
        if self.block_timeout_ms is not None:
            _check_range("block_timeout_ms", self.block_timeout_ms, 0, 24 * 3_600_000)
        if not 0 < self.recompress_cpu_share <= 1:
            raise InvalidConfigError("recompress_cpu_share", self.recompress_cpu_share, "more than 0, at most 1")
        _check_range("recompress_interval_ms", self.recompress_interval_ms, 1, 24 * 3_600_000)


def _check_range(key: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidConfigError(key, value, f"an integer from {low} to {high}")
