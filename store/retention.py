"""Which sealed segments retention may delete. Pure: the partition passes what it knows and carries out the answer.

Rules (DESIGN 4.3): whole sealed segments, oldest first; by `retention_bytes` (per partition) and by
`retention_ms` against the segment's largest timestamp. A segment that a required cursor (a mirror, the tierer)
has not passed yet is protected, unless the topic's `on_full` is `drop_oldest` and room is needed (`force`);
then it goes too and its unread records are reported as dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    base_offset: int
    next_offset: int
    size: int
    max_ts: int


@dataclass(frozen=True, slots=True)
class Deletion:
    base_offset: int
    next_offset: int
    size: int
    reason: str  # "retention_bytes", "retention_ms", "drop_oldest"
    unread_records: int  # records no required cursor had passed: counted as dropped


def plan(
    sealed: Sequence[SegmentInfo],
    *,
    total_bytes: int,
    retention_bytes: int | None,
    retention_ms: int | None,
    now_ms: int,
    protect_from: int | None,
    free_bytes_needed: int = 0,
) -> list[Deletion]:
    """Segments to delete, oldest first. `sealed` is in offset order and excludes the active segment.

    `protect_from`: the lowest offset a required cursor still has to read (None: nothing is protected).
    `free_bytes_needed` > 0 means drop_oldest must make that much room even from protected segments.
    """
    out: list[Deletion] = []
    remaining = total_bytes
    freed = 0
    for seg in sealed:
        reason = None
        if retention_bytes is not None and remaining > retention_bytes:
            reason = "retention_bytes"
        elif retention_ms is not None and seg.max_ts < now_ms - retention_ms:
            reason = "retention_ms"
        protected = protect_from is not None and protect_from < seg.next_offset
        if reason is not None and not protected:
            out.append(Deletion(seg.base_offset, seg.next_offset, seg.size, reason, 0))
        elif freed < free_bytes_needed:
            unread = 0
            if protected and protect_from is not None:
                unread = seg.next_offset - max(seg.base_offset, protect_from)
            out.append(Deletion(seg.base_offset, seg.next_offset, seg.size, "drop_oldest", unread))
        else:
            break  # oldest first: stop at the first segment that stays
        remaining -= seg.size
        freed += seg.size
    return out
