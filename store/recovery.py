"""Opening a partition directory: recovery after a clean or an unclean stop (DESIGN 4.2).

1. Delete left-over `*.tmp` files (an interrupted durable replace) and orphan `.idx` files.
2. Read `state`. Missing or garbled: rebuild it from the segments, and treat the stop as unclean with recovery
   point 0 (every segment is checked).
3. Delete segments that lie wholly below `log_start`: retention writes the state first and unlinks second, so a
   crash in between leaves these behind. They are retention's, not losses.
4. Check every segment header. A torn header on the newest segment, with nothing after it, is a roll or a creation
   that the power cut interrupted (no frame was ever written behind an unsynced header): the file is removed. Any
   other bad header is damage: the segment is quarantined (renamed, never deleted).
5. Sealed segments (every one but the last) are complete on disk before their successor is created, because a roll
   fdatasyncs the old segment first. So damage in a sealed segment is bit rot, never a torn write: it is
   quarantined and the offsets it held become a gap that readers skip; later segments stay. Sealed segments below
   the recovery point (or all of them after a clean stop) are trusted: their `.idx` is loaded, or rebuilt by a
   header-only scan. The others are scanned with body checksums.
6. The last (active) segment is always scanned with body checksums (it is at most `segment_bytes`: bounded work,
   and bit rot in it is caught even after a clean stop). At the first bad frame it is truncated there: a torn tail
   is the end of the log, and what is cut off is reported (bytes, and the records whose frame headers were still
   readable).
7. After an unclean stop the epoch becomes max(state epoch, every header's and frame's epoch) + 1, so an offset
   that recovery had to give out again never carries the same identity (log id, epoch, offset) twice. A brand-new
   partition starts at epoch 0 and counts no bump.
8. The active segment is fdatasync'ed (after a kill -9 its tail may sit only in the page cache) and `state` is
   written with clean = false before the partition accepts appends.

Start-up work is bounded by the unflushed tail (the active segment, plus sealed ones above the recovery point,
normally none), not by the amount of data.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from itertools import pairwise

from . import files
from .durable import TMP_SUFFIX
from .errors import CorruptSegmentError, CorruptStateError
from .frame import FRAME_HEADER_SIZE, FrameError, parse_header
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
    deleted_segments: int = 0  # below log_start: an interrupted retention finished
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
            parts.append(f"finished deleting {self.deleted_segments} segments below the log start")
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
    bases = sorted(b for b in (files.parse_segment_name(n) for n in names) if b is not None)
    for name in names:  # 1.
        orphan_index = name.endswith(files.INDEX_SUFFIX) and _base_of_index(name) not in bases
        if name.endswith(TMP_SUFFIX) or orphan_index:
            fs.remove(os.path.join(directory, name))
            report.tmp_files_removed += 1

    state_path = os.path.join(directory, files.STATE)
    state: PartitionState | None  # 2.
    try:
        state = PartitionState.read(fs, state_path)
    except (FileNotFoundError, CorruptStateError):
        state = None
    report.clean = state.clean if state is not None else False
    report.state_rebuilt = state is None and bool(bases)
    log_start = state.log_start if state is not None else (bases[0] if bases else 0)

    while len(bases) > 1 and bases[1] <= log_start:  # 3.
        _remove_segment_files(fs, directory, bases.pop(0))
        report.deleted_segments += 1

    opened: list[Segment] = []  # 4.
    lost_bases: list[int] = []  # bases of quarantined or removed segments: their offsets were handed out
    max_epoch = state.epoch if state is not None else 0
    for i, base in enumerate(bases):
        try:
            seg = Segment.open(fs, directory, base)
        except (CorruptSegmentError, OSError) as exc:
            path = os.path.join(directory, files.segment_name(base))
            size = fs.file_size(path)
            if i == len(bases) - 1 and size <= SEGMENT_HEADER_SIZE:
                # create() syncs the header before any frame is written: no offset was handed out in here.
                _remove_segment_files(fs, directory, base)
                report.truncated_bytes += size
                report.truncation_reason = report.truncation_reason or "segment_header"
                continue
            report.quarantined.append(_quarantine(fs, directory, base, str(exc)))
            if i == len(bases) - 1:
                report.truncated_bytes += size
                report.truncation_reason = "segment_header"
            lost_bases.append(base)
            continue
        seg.index.interval_bytes = index_interval_bytes
        max_epoch = max(max_epoch, seg.header.epoch)
        opened.append(seg)
    if state is not None and opened and opened[0].header.log_id != state.log_id:
        # Segments from another life of this directory: trust what the segments say.
        report.state_rebuilt = True
        log_id_source: bytes | None = opened[0].header.log_id
    else:
        log_id_source = state.log_id if state is not None else (opened[0].header.log_id if opened else None)
    clean = report.clean and not report.state_rebuilt and not report.quarantined
    recovery_point = state.recovery_point if state is not None and not report.state_rebuilt else 0

    kept: list[Segment] = []  # 5. + 6.
    for i, seg in enumerate(opened):
        last = i == len(opened) - 1
        if kept and seg.base_offset < kept[-1].next_offset:
            # Overlapping offsets cannot come from a crash (a roll starts the next segment where the last ended).
            report.quarantined.append(_quarantine_segment(seg, f"overlaps offsets up to {kept[-1].next_offset}"))
            if last:
                report.truncated_bytes += seg.size
                report.truncation_reason = "offset_overlap"
            continue
        if not last:
            nxt_base = opened[i + 1].base_offset
            seg.sealed = True  # read through a read-only handle
            problem = _check_sealed(seg, report, trusted=clean or nxt_base <= recovery_point)
            if problem is not None:
                report.quarantined.append(_quarantine_segment(seg, problem))
                lost_bases.append(seg.base_offset)
                continue
        else:
            file_size = fs.file_size(seg.path)
            result = seg.scan(verify_bodies=True)
            report.scanned_bytes += file_size
            if result.error is not None:
                report.truncated_bytes += file_size - result.end_position
                report.truncated_records += _count_tail_records(seg, result.end_position, file_size)
                report.truncation_reason = result.error.reason
                seg.truncate(result.end_position, result.next_offset)
        max_epoch = max(max_epoch, seg.max_epoch)
        kept.append(seg)

    brand_new = state is None and not kept and not lost_bases
    lost = bool(report.truncated_bytes or report.quarantined)
    report.clean = brand_new or (clean and not lost)
    epoch = max_epoch
    if not report.clean:  # 7.
        epoch += 1
        report.epoch_bumped = True
    log_id = log_id_source or secrets.token_bytes(16)
    if not kept:
        # Nothing readable is left: start after every offset that may have been handed out.
        start = max([log_start, recovery_point, *lost_bases])
        kept.append(Segment.create(fs, directory, SegmentHeader(partition, start, log_id, epoch, now_ms, use_crc32c)))
        kept[-1].index.interval_bytes = index_interval_bytes
    for seg in kept[:-1]:
        seg.sealed = True
    active = kept[-1]
    active.sealed = False
    active.sync()  # 8.
    log_start = max(log_start, kept[0].base_offset)
    gaps = [(a.next_offset, b.base_offset) for a, b in pairwise(kept)
            if a.next_offset < b.base_offset and b.base_offset > log_start]
    new_state = PartitionState(log_id, epoch, log_start, max(log_start, active.base_offset), False)
    new_state.write(fs, state_path)
    return Recovered(new_state, kept, report, gaps)


def _check_sealed(seg: Segment, report: RecoveryReport, *, trusted: bool) -> str | None:
    """Learn a sealed segment's frames. None if it is whole; else what is wrong (the caller quarantines it)."""
    file_size = seg.fs.file_size(seg.path)
    if trusted and seg.load_index():
        return None
    result = seg.scan(verify_bodies=not trusted)
    if not trusted:
        report.scanned_bytes += file_size
    if result.error is not None:
        return f"frame at byte {result.end_position}: {result.error}"
    if trusted:
        report.indexes_rebuilt += 1
    seg.write_index()
    return None


def _count_tail_records(seg: Segment, start: int, end: int) -> int:
    """Records whose frame headers are still readable in the bytes recovery cuts off (a torn frame's header
    usually survives: it is written first)."""
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


def _base_of_index(name: str) -> int | None:
    return files.parse_segment_name(name[: -len(files.INDEX_SUFFIX)] + files.LOG_SUFFIX)


def _remove_segment_files(fs: FileSystem, directory: str, base: int) -> None:
    for name in (files.segment_name(base), files.index_name(base)):
        try:
            fs.remove(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    fs.sync_dir(directory)


def _quarantine(fs: FileSystem, directory: str, base: int, reason: str) -> str:
    path = os.path.join(directory, files.segment_name(base))
    target = files.quarantine_path(fs, path)
    fs.replace(path, target)
    try:
        fs.remove(os.path.join(directory, files.index_name(base)))
    except FileNotFoundError:
        pass
    fs.sync_dir(directory)
    return f"{target} ({reason})"


def _quarantine_segment(seg: Segment, reason: str) -> str:
    return f"{seg.quarantine()} ({reason})"


__all__ = ["Recovered", "RecoveryReport", "recover"]
