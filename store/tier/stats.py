"""Statistics of the tier: frozen snapshots that gateway/tiering.py turns into metrics (store/ never imports
prometheus_client). Imports without pyarrow: `edgestream tier status` works everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..log import Log
    from .manifest import Manifest


@dataclass(frozen=True, slots=True)
class PartitionBacklog:
    topic: str
    partition: int
    tiered_upto: int  # next offset to tier
    high_watermark: int
    segments: int  # sealed segments waiting to be tiered
    bytes: int  # their size on disk
    records: int  # their records


@dataclass(frozen=True, slots=True)
class TierStatistics:
    segments_tiered: int
    rows_tiered: int
    bytes_written: int  # Parquet bytes written by tiering (not compaction)
    payload_bytes_read: int  # raw payload bytes of the rows tiered
    decode_errors: int  # rows tiered with an undecodable payload (raw bytes kept)
    skipped_offsets: int  # offsets gone from the hot log before they could be tiered
    retention_deleted_files: int
    retention_deleted_bytes: int
    compactions: int
    passes: int
    errors: int
    last_error: str
    last_pass_ms: int
    busy_seconds: float
    files: int
    tier_bytes: int
    topic_bytes: tuple[tuple[str, int], ...]  # cold tier size per topic
    topic_rows: tuple[tuple[str, int], ...]  # rows tiered per topic by this tierer
    backlog: tuple[PartitionBacklog, ...]
    conflicts: tuple[str, ...]


def backlog(log_: Log, manifest: Manifest, topics: list[str]) -> list[PartitionBacklog]:
    """Per partition: the sealed segments the hot log holds that the tier does not have yet."""
    out = []
    for topic in topics:
        for p in log_.topic(topic).partitions:
            upto = max(manifest.tiered_upto(topic, p.index), p.log_start)
            segs = [s for s in p.segments[:-1] if s.next_offset > upto]
            out.append(PartitionBacklog(topic, p.index, upto, p.high_watermark, len(segs),
                                        sum(s.size for s in segs), sum(s.next_offset - max(s.base_offset, upto)
                                                                       for s in segs)))
    return out
