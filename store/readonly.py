"""Read-only partitions: inspect a data dir that another process (a running gateway) holds, changing nothing.

Segments are opened as they are: sealed ones through their `.idx` or a header-only scan, the last one by a
checked scan that stops at the first frame that is not (yet) valid: a torn or half-written tail is simply the end.
`refresh()` picks up what the writer added since (new frames, new segments) for `consume --follow`.

The writer may replace a sealed segment by a repacked copy (store.recompress): same records, other positions. A
`Segment` object keeps to the file it was opened on: its open handle still reads the old inode, and a lazy open
that finds the copy raises SegmentReplacedError. `refresh()`, and a read that met that error, reopen such segments
(size changed: a copy is always smaller) with their new index, so the positions of one file are never used in the
other.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import TypeVar

from . import files
from .config import LogConfig, TopicConfig
from .errors import CorruptSegmentError, CorruptStateError
from .fs import FileSystem
from .partition import Partition
from .recovery import RecoveryReport
from .segment import Segment, SegmentReplacedError
from .state import PartitionState

_T = TypeVar("_T")
_OPEN_TRIES = 3  # a segment replaced while it was being opened is opened again (it is replaced at most once)


class ReadonlyPartition(Partition):
    def refresh(self) -> None:
        """Scan for frames and segments written since the last look, and reopen segments replaced by a copy."""
        self.reopen_replaced()
        bases = sorted(b for b in (files.parse_segment_name(n) for n in self.fs.listdir(self.directory))
                       if b is not None)
        known = {s.base_offset for s in self.segments}
        segs = list(self.segments)
        for base in bases:
            if base in known or base < segs[-1].base_offset:
                continue
            try:
                segs.append(Segment.open(self.fs, self.directory, base))
            except (CorruptSegmentError, OSError):
                break
        for seg in segs[len(self.segments) - 1 :]:
            seg.scan(verify_bodies=True)
        for seg in segs[:-1]:
            seg.sealed = True  # the writer rolled past it: it may be replaced from now on
        with self._lock:
            self.segments = segs
            self.high_watermark = segs[-1].next_offset

    def reopen_replaced(self) -> int:
        """Reopen every sealed segment whose file is not the one it was opened on. Returns how many."""
        with self._lock:
            segs = list(self.segments)
        changed = 0
        for i, seg in enumerate(segs[:-1]):
            if seg.header.repacked:
                continue  # a copy is never replaced again
            try:
                if self.fs.file_size(seg.path) == seg.size:
                    continue
                segs[i] = _open_segment(self.fs, self.directory, seg.base_offset, last=False)
            except (CorruptSegmentError, OSError):
                continue  # deleted by retention, or unreadable: left as it is
            changed += 1
        if changed:
            with self._lock:
                old = {s.base_offset: s for s in segs}
                self.segments = [old.get(s.base_offset, s) if s.sealed else s for s in self.segments]
        return changed

    def _retrying(self, offset: int, attempt: Callable[[], _T]) -> _T:
        for _ in range(_OPEN_TRIES):
            try:
                return attempt()
            except SegmentReplacedError:
                self.reopen_replaced()
        return super()._retrying(offset, attempt)


def _open_segment(fs: FileSystem, directory: str, base: int, *, last: bool) -> Segment:
    """Open one segment and learn its frames (index, or scan). A segment replaced part-way is opened again."""
    for n in range(_OPEN_TRIES):
        seg = Segment.open(fs, directory, base)
        seg.sealed = not last
        try:
            if last or not seg.load_index():
                seg.scan(verify_bodies=last)
            return seg
        except SegmentReplacedError:
            seg.close()
            if n == _OPEN_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def open_readonly_partition(
    fs: FileSystem, directory: str, topic: str, index: int, config: TopicConfig, log_config: LogConfig
) -> ReadonlyPartition:
    report = RecoveryReport(topic, index)
    try:
        state = PartitionState.read(fs, f"{directory}/{files.STATE}")
    except (FileNotFoundError, CorruptStateError):
        state = None
    bases = sorted(b for b in (files.parse_segment_name(n) for n in fs.listdir(directory)) if b is not None)
    segments: list[Segment] = []
    for i, base in enumerate(bases):
        try:
            seg = _open_segment(fs, directory, base, last=i == len(bases) - 1)
        except (CorruptSegmentError, OSError):
            continue
        if segments and seg.base_offset < segments[-1].next_offset:
            continue
        segments.append(seg)
    if not segments:
        raise CorruptSegmentError(directory, "no readable segment")
    if state is None:
        state = PartitionState(segments[0].header.log_id, segments[-1].max_epoch, segments[0].base_offset,
                               segments[0].base_offset, False)
    gaps = [(a.next_offset, b.base_offset) for a, b in pairwise(segments)
            if a.next_offset < b.base_offset]
    p = ReadonlyPartition(fs, directory, topic, index, config, log_config, state, segments, report, gaps,
                          segments[-1].header.use_crc32c)
    if state.log_start < segments[0].base_offset:
        p.state = state.with_(log_start=segments[0].base_offset)
    return p
