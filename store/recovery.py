"""Opening a partition directory: recovery after a clean or an unclean stop (DESIGN 4.2).

1. Delete left-over `*.tmp` files (an interrupted durable replace).
2. Read `state`. Missing or garbled: rebuild it, and treat the stop as unclean with recovery point 0.
3. Delete segments that lie wholly below `log_start` (retention was interrupted between state and unlink).
4. Check every segment header. A bad header on a sealed segment quarantines it (renamed, never deleted); on the
   last segment it can only be a segment whose creation was torn (nothing in it was ever acknowledged): deleted.
5. Sealed segments below the recovery point are trusted: their `.idx` is loaded, or rebuilt by a header-only scan.
6. After an unclean stop, every segment from the one holding the recovery point is scanned with body CRCs. At the
   first bad frame the segment is truncated there and every later segment is deleted; the bytes and the records
   that could be counted are reported.
7. After an unclean stop the epoch becomes max(state epoch, any frame's epoch) + 1, so no identity
   (log id, epoch, offset) is ever reused for different content.
8. The scanned tail is fdatasync'ed (after a kill -9 it may sit only in the page cache), and `state` is written
   with clean = false before the partition accepts appends.

Start-up work is bounded by the unflushed tail (one segment per partition), not by the amount of data.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from . import files
from .errors import CorruptSegmentError, CorruptStateError
from .fs import FileSystem
from .segment import SEGMENT_HEADER_SIZE, Segment, SegmentHeader
from .state import PartitionState


@dataclass(slots=True)
class RecoveryReport:
    """What opening a partition found and did. Every number here is also a statistic of the partition."""

    topic: str
    partition: int
    clean: bool = True
    state_rebuilt: bool = False
    epoch_bumped: bool = False
    truncated_bytes: int = 0
    truncated_records: int = 0
    truncation_reason: str = ""
    deleted_segments: int = 0
    quarantined: list[str] = field(default_factory=list)
    indexes_rebuilt: int = 0
    scanned_bytes: int = 0
    tmp_files_removed: int = 0

    @property
    def lost_anything(self) -> bool:
        return bool(self.truncated_bytes or self.quarantined)

    def describe(self) -> str:
        parts = [f"{self.topic}/{self.partition}:", "clean stop" if self.clean else "unclean stop"]
        if self.state_rebuilt:
            parts.append("state rebuilt")
        if self.truncated_bytes:
            parts.append(
                f"truncated {self.truncated_bytes} bytes ({self.truncated_records} records) "
                f"at a {self.truncation_reason} frame"
            )
        if self.deleted_segments:
            parts.append(f"deleted {self.deleted_segments} segments after the truncation")
        for q in self.quarantined:
            parts.append(f"quarantined {q}")
        if self.indexes_rebuilt:
            parts.append(f"rebuilt {self.indexes_rebuilt} indexes")
        if self.epoch_bumped:
            parts.append("epoch raised")
        return " ".join(parts)


@dataclass(slots=True)
class Recovered:
    state: PartitionState
    segments: list[Segment]
    report: RecoveryReport
    gaps: list[tuple[int, int]]  # offset ranges lost to quarantine: [start, end)


def recover(
    fs: FileSystem,
    directory: str,
    *,
    topic: str,
    partition: int,
    now_ms: int,
    use_crc32c: bool,
    index_interval_bytes: int,
) -> Recovered:
    report = RecoveryReport(topic, partition)
    names = fs.listdir(directory)
    for name in names:
        if name.endswith(".tmp"):
            fs.remove(os.path.join(directory, name))
            report.tmp_files_removed += 1
    state_path = os.path.join(directory, files.STATE)
    state: PartitionState | None
    try:
        state = PartitionState.read(fs, state_path)
    except FileNotFoundError:
        state = None
    except CorruptStateError:
        state = None
    bases = sorted(b for b in (files.parse_segment_name(n) for n in names) if b is not None)

    if state is None and not bases:
        report.clean = True  # a new partition
    elif state is None:
        report.state_rebuilt = True
        report.clean = False
    else:
        report.clean = state.clean
    log_start = state.log_start if state else (bases[0] if bases else 0)

    # 3. segments wholly below log_start: retention got as far as the state file.
    while len(bases) > 1 and bases[1] <= log_start:
        _remove_segment_files(fs, directory, bases.pop(0))
        report.deleted_segments += 1

    # 4. headers.
    segments: list[Segment] = []
    gaps: list[tuple[int, int]] = []
    for i, base in enumerate(bases):
        last = i == len(bases) - 1
        try:
            seg = Segment.open(fs, directory, base)
        except (CorruptSegmentError, OSError) as exc:
            path = os.path.join(directory, files.segment_name(base))
            if last:
                # Only a torn creation leaves a bad header on the newest segment: nothing in it was acked.
                size = fs.file_size(path)
                _remove_segment_files(fs, directory, base)
                report.truncated_bytes += size
                report.truncation_reason = report.truncation_reason or "segment_header"
                report.clean = False
            else:
                report.quarantined.append(_quarantine_path(fs, directory, base, str(exc)))
            continue
        seg.index.interval_bytes = index_interval_bytes
        segments.append(seg)
    if state is not None and segments and segments[0].header.log_id != state.log_id:
        # A segment from another partition's life: trust the segments, rebuild the state.
        state = None
        report.state_rebuilt = True
        report.clean = False

    # 5 + 6. frames.
    recovery_point = state.recovery_point if state else 0
    max_epoch = state.epoch if state else 0
    kept: list[Segment] = []
    truncated_at: int | None = None
    for i, seg in enumerate(segments):
        is_last = i == len(segments) - 1
        nxt_base = segments[i + 1].base_offset if not is_last else None
        if truncated_at is not None:
            # Everything after a truncation point goes: the offsets would no longer be contiguous.
            report.truncated_bytes += seg.size
            report.truncated_records += _count_records(seg)
            report.deleted_segments += 1
            seg.close()
            _remove_segment_files(fs, directory, seg.base_offset)
            continue
        trusted = report.clean or (nxt_base is not None and nxt_base <= recovery_point)
        if trusted and not is_last:
            if not seg.load_index():
                result = seg.scan(verify_bodies=False)
                report.indexes_rebuilt += 1
                if not result.clean or seg.size != seg.fs.file_size(seg.path):
                    report.quarantined.append(_quarantine_segment(seg, f"{result.error}"))
                    gaps.append((seg.base_offset, nxt_base if nxt_base is not None else seg.next_offset))
                    continue
                seg.write_index()
            seg.sealed = True
            _note_gap(kept, seg, gaps)
            kept.append(seg)
            max_epoch = max(max_epoch, seg.max_epoch)
            continue
        if trusted and is_last and seg.load_index():
            _note_gap(kept, seg, gaps)
            kept.append(seg)
            max_epoch = max(max_epoch, seg.max_epoch)
            continue
        # Untrusted (or the last segment without a usable index): scan with body checksums.
        file_size = seg.fs.file_size(seg.path)
        result = seg.scan(verify_bodies=True)
        report.scanned_bytes += file_size
        max_epoch = max(max_epoch, result.max_epoch)
        if not result.clean:
            dropped = file_size - result.end_position
            report.truncated_bytes += dropped
            report.truncated_records += _count_tail_records(seg, result.end_position, file_size)
            report.truncation_reason = result.error.reason if result.error else "unknown"
            seg.truncate(result.end_position, result.next_offset)
            truncated_at = result.next_offset
            report.clean = False
        elif nxt_base is not None and nxt_base != seg.next_offset:
            # The next segment does not continue this one: nothing after here can be trusted in order.
            truncated_at = seg.next_offset
            report.truncation_reason = "offset_gap"
            report.clean = False
        if not is_last or truncated_at is not None:
            seg.sync()
        _note_gap(kept, seg, gaps)
        kept.append(seg)

    log_id = state.log_id if state else (kept[0].header.log_id if kept else secrets.token_bytes(16))
    epoch = max_epoch
    if not report.clean:
        epoch = max_epoch + 1
        report.epoch_bumped = True
    if not kept:
        start = max([log_start, *bases])
        kept.append(Segment.create(fs, directory, SegmentHeader(partition, start, log_id, epoch, now_ms, use_crc32c)))
        kept[-1].index.interval_bytes = index_interval_bytes
    for seg in kept[:-1]:
        seg.sealed = True
    active = kept[-1]
    active.sync()
    log_start = max(log_start, kept[0].base_offset)
    new_state = PartitionState(log_id, epoch, log_start, max(log_start, active.base_offset), False)
    new_state.write(fs, state_path)
    return Recovered(new_state, kept, report, gaps)


def _note_gap(kept: list[Segment], seg: Segment, gaps: list[tuple[int, int]]) -> None:
    if kept and kept[-1].next_offset < seg.base_offset:
        gaps.append((kept[-1].next_offset, seg.base_offset))


def _count_records(seg: Segment) -> int:
    """Records in a segment that is about to be deleted (header-only scan; torn frames are not counted)."""
    try:
        return seg.scan(verify_bodies=False).records
    except OSError:
        return 0


def _count_tail_records(seg: Segment, start: int, end: int) -> int:
    """Records whose frame headers are still readable in the bytes recovery cuts off."""
    from .frame import FRAME_HEADER_SIZE, FrameError, parse_header

    count = 0
    pos = start
    handle = seg.handle()
    while pos + FRAME_HEADER_SIZE <= end:
        try:
            h = parse_header(handle.pread(FRAME_HEADER_SIZE, pos), seg.checksum)
        except FrameError:
            break
        count += h.record_count
        pos += h.frame_len
    return count


def _remove_segment_files(fs: FileSystem, directory: str, base: int) -> None:
    for name in (files.segment_name(base), files.index_name(base)):
        try:
            fs.remove(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    fs.sync_dir(directory)


def _quarantine_path(fs: FileSystem, directory: str, base: int, reason: str) -> str:
    path = os.path.join(directory, files.segment_name(base))
    target = path + files.QUARANTINE_SUFFIX
    fs.replace(path, target)
    try:
        fs.remove(os.path.join(directory, files.index_name(base)))
    except FileNotFoundError:
        pass
    fs.sync_dir(directory)
    return f"{target} ({reason})"


def _quarantine_segment(seg: Segment, reason: str) -> str:
    return f"{seg.quarantine()} ({reason})"


__all__ = ["SEGMENT_HEADER_SIZE", "Recovered", "RecoveryReport", "recover"]
