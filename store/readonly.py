"""Read-only partitions: inspect a data dir that another process (a running gateway) holds, changing nothing.

Segments are opened as they are: sealed ones through their `.idx` or a header-only scan, the last one by a
checked scan that stops at the first frame that is not (yet) valid: a torn or half-written tail is simply the end.
`refresh()` picks up what the writer added since (new frames, new segments) for `consume --follow`.
"""

from __future__ import annotations

from itertools import pairwise

from . import files
from .config import LogConfig, TopicConfig
from .errors import CorruptSegmentError, CorruptStateError
from .fs import FileSystem
from .partition import Partition
from .recovery import RecoveryReport
from .segment import Segment
from .state import PartitionState


class ReadonlyPartition(Partition):
    def refresh(self) -> None:
        """Scan for frames and segments written since the last look."""
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
        with self._lock:
            self.segments = segs
            self.high_watermark = segs[-1].next_offset


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
            seg = Segment.open(fs, directory, base)
        except (CorruptSegmentError, OSError):
            continue
        last = i == len(bases) - 1
        if last or not seg.load_index():
            seg.scan(verify_bodies=last)
        seg.sealed = not last
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
