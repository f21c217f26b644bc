"""PartitionReads: the read side of a partition (any thread), kept apart from the writer's side.

A reader takes a snapshot of the segment list, the high watermark and the gaps under the partition's lock, then
reads with pread outside it: frames below the high watermark never change, so no lock is held while decoding.
Only frames wanted are read past their 48-byte header; the last decoded frame is cached for a reader that asks
for fewer records than a frame holds and comes back for the rest.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

from .errors import CorruptFrameError, OffsetOutOfRangeError
from .frame import BodyColumns, FrameError, FrameHeader, Record, body_columns, decode_body
from .segment import SEGMENT_HEADER_SIZE, BodyReader, Segment
from .state import PartitionState

_T = TypeVar("_T")


class FrameSlice(NamedTuple):
    """Records [first, end) of one decoded frame (see `PartitionReads.read_columns`)."""

    body: BodyColumns
    first: int
    end: int

    @property
    def next_offset(self) -> int:
        """The offset after the last record wanted from this frame."""
        return self.body.header.base_offset + self.end


class PartitionReads:
    """Mixed into Partition, which sets these."""

    topic: str
    index: int
    state: PartitionState
    segments: list[Segment]
    high_watermark: int
    gaps: list[tuple[int, int]]
    _lock: threading.Lock
    _frame_cache: tuple[Segment, int, list[Record]] | None

    def _snapshot(self) -> tuple[list[Segment], int, list[tuple[int, int]]]:
        with self._lock:
            return self.segments, self.high_watermark, self.gaps

    def read(
        self,
        offset: int,
        *,
        max_records: int = 1000,
        max_bytes: int = 1 << 20,
        upto: int | None = None,
    ) -> list[Record]:
        """Acknowledged records from `offset` on. Empty when `offset` is the high watermark.

        Raises OffsetOutOfRangeError below the log start or above the high watermark, CorruptFrameError at a frame
        that fails its checks (the scrub quarantines its segment). Offsets lost to a quarantined segment are
        skipped (the gap is in the partition's statistics).
        """
        return self._retrying(offset, lambda: self._read(offset, max_records, max_bytes, upto))

    def _retrying(self, offset: int, attempt: Callable[[], _T]) -> _T:
        """Retention may delete a segment between the snapshot and its pread: read again on a new snapshot."""
        for n in range(3):
            try:
                return attempt()
            except FileNotFoundError:
                if n == 2:  # retention keeps deleting under us: report the new start
                    raise OffsetOutOfRangeError(self.topic, self.index, offset, self.state.log_start,
                                                self.high_watermark) from None
        raise AssertionError("unreachable")

    def _bounds(self, offset: int, upto: int | None) -> tuple[list[Segment], list[tuple[int, int]], int]:
        """A snapshot (segments, gaps) and the end of what may be read, after checking `offset` is in range."""
        segments, hw, gaps = self._snapshot()
        if offset < self.state.log_start or offset > hw:
            raise OffsetOutOfRangeError(self.topic, self.index, offset, self.state.log_start, hw)
        return segments, gaps, hw if upto is None else min(hw, upto)

    def _read(self, offset: int, max_records: int, max_bytes: int, upto: int | None) -> list[Record]:
        segments, gaps, limit = self._bounds(offset, upto)
        out: list[Record] = []
        nbytes = 0
        for raw_len, recs in self._iter_from(segments, gaps, offset, limit):
            room = max_records - len(out)
            if len(recs) > room:
                recs = recs[:room]
            out.extend(recs)
            nbytes += raw_len
            if len(out) >= max_records or nbytes >= max_bytes:
                break
        return out

    def _decoded(self, seg: Segment, pos: int, h: FrameHeader, body: BodyReader) -> list[Record]:
        """The records of the frame at `pos`. The last frame decoded is kept: a reader asking for fewer records
        than a frame holds comes back for the rest of it. Only frames below the high watermark are ever decoded,
        and those never change."""
        cached = self._frame_cache
        if cached is not None and cached[0] is seg and cached[1] == pos:
            return cached[2]
        try:
            recs = decode_body(h, body(pos, h), self.topic, self.index)
        except FrameError as exc:
            raise CorruptFrameError(seg.path, pos, exc.reason) from exc
        self._frame_cache = (seg, pos, recs)
        return recs

    def read_columns(self, offset: int, *, max_records: int = 131_072, max_bytes: int = 64 << 20,
                     upto: int | None = None) -> list[FrameSlice]:
        """`read` for column builders: the frames holding acknowledged records from `offset` on, as decoded bodies
        and the range of each frame's records wanted, with no Python object per record. Stops after the frame
        that reaches `max_records` records or `max_bytes` body bytes. Same errors as `read`."""
        return self._retrying(offset, lambda: self._read_columns(offset, max_records, max_bytes, upto))

    def _read_columns(self, offset: int, max_records: int, max_bytes: int, upto: int | None) -> list[FrameSlice]:
        segments, gaps, limit = self._bounds(offset, upto)
        out: list[FrameSlice] = []
        count = nbytes = 0
        for seg, pos, h, body, lo, hi in self._frames_from(segments, gaps, offset, limit):
            try:
                cols = body_columns(h, body(pos, h))
            except FrameError as exc:
                raise CorruptFrameError(seg.path, pos, exc.reason) from exc
            out.append(FrameSlice(cols, lo, hi))
            count += hi - lo
            nbytes += h.raw_len
            if count >= max_records or nbytes >= max_bytes:
                break
        return out

    def _iter_from(
        self, segments: list[Segment], gaps: list[tuple[int, int]], offset: int, limit: int
    ) -> Iterator[tuple[int, list[Record]]]:
        """(body bytes, records) per frame, from `offset` up to `limit`."""
        for seg, pos, h, body, lo, hi in self._frames_from(segments, gaps, offset, limit):
            recs = self._decoded(seg, pos, h, body)
            if lo or hi < len(recs):
                recs = recs[lo:hi]
            yield h.raw_len, recs

    def _frames_from(
        self, segments: list[Segment], gaps: list[tuple[int, int]], offset: int, limit: int
    ) -> Iterator[tuple[Segment, int, FrameHeader, BodyReader, int, int]]:
        """(segment, position, header, body reader, first, end) per frame holding records from `offset` up to
        `limit`; records [first, end) of the frame are the wanted ones."""
        for a, b in gaps:
            if a <= offset < b:
                offset = b
        if offset >= limit:
            return
        bases = [s.base_offset for s in segments]
        i = max(0, bisect_right(bases, offset) - 1)
        for seg in segments[i:]:
            if seg.base_offset >= limit:
                return
            if seg.next_offset <= offset and seg is not segments[-1]:
                continue
            start = seg.index.lookup(offset, SEGMENT_HEADER_SIZE)
            for pos, h, body in seg.walk(start, seg.size):
                if h.next_offset <= offset:
                    continue
                if h.base_offset >= limit:
                    return
                lo = offset - h.base_offset if offset > h.base_offset else 0
                yield seg, pos, h, body, lo, min(h.record_count, limit - h.base_offset)
                if h.next_offset >= limit:
                    return

    def offset_for_time(self, ts_ms: int) -> int:
        """The first acknowledged offset whose timestamp is >= ts_ms, or the high watermark if there is none."""
        segments, hw, _ = self._snapshot()
        for seg in segments:
            if seg.max_ts < ts_ms and seg is not segments[-1]:
                continue
            if seg.empty:
                continue
            start = seg.index.lookup_time(ts_ms, SEGMENT_HEADER_SIZE)
            for pos, h, body in seg.walk(start, seg.size):
                if h.base_offset >= hw:
                    return hw
                if h.max_ts < ts_ms or h.next_offset <= self.state.log_start:
                    continue
                for r in self._decoded(seg, pos, h, body):
                    if r.offset >= hw:
                        return hw
                    if r.timestamp_ms >= ts_ms and r.offset >= self.state.log_start:
                        return r.offset
        return hw
