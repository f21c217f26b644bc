"""FrameBuilder: how one writer round's appends become frames, and frames one gathered write per segment.

Whole appends ride in one frame when they fit (no per-record Python); an append bigger than a frame is cut where
its running size passes `frame_bytes`; a piece whose timestamps do not fit an i32 delta, or that carries headers,
goes record by record. Before a frame is started the builder asks the partition whether the segment must roll.
Only the partition's writer (store.partition._w_write) uses it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import itemgetter
from typing import TYPE_CHECKING

from .frame import (
    FRAME_HEADER_SIZE,
    MAX_RECORDS_PER_FRAME,
    RECORD_HEADER_SIZE,
    FrameHeader,
    RecordIn,
    build_frame,
    record_size,
    ts_fits,
    ts_range_fits,
)
from .segment import Segment

if TYPE_CHECKING:
    from .partition import Partition

_HEADERS = itemgetter(3)

class FrameBuilder:
    """The frames of one `_w_write` call: groups records into frames, frames into one write per segment, and rolls
    the segment when the next frame would not fit in it."""

    __slots__ = ("cur", "cur_bytes", "cur_n", "first_ts", "headers", "next_base", "now_ms", "p", "pending",
                 "pending_bytes", "undo")

    def __init__(self, p: Partition, now_ms: int) -> None:
        self.p = p
        self.now_ms = now_ms
        self.cur: list[RecordIn] = []
        self.cur_bytes = 0
        self.cur_n = 0
        self.first_ts = 0
        self.next_base = p.active.next_offset
        self.pending: list[bytes] = []
        self.headers: list[FrameHeader] = []
        self.pending_bytes = 0
        # Where a failed write cuts the active segment back to: its state before this call wrote to it.
        self.undo: tuple[Segment, int, int] = (p.active, p.active.size, p.active.next_offset)

    def add(self, records: Sequence[RecordIn], nbytes: int) -> None:
        if not self.cur_n:
            self.first_ts = records[0][0]
        self.cur.extend(records)
        self.cur_n += len(records)
        self.cur_bytes += nbytes

    def add_split(self, records: Sequence[RecordIn]) -> None:
        """A batch bigger than a frame: cut it where the running size passes frame_bytes (C-level passes), and
        fall back to record by record for a piece whose timestamps or headers need it."""
        frame_bytes = self.p.config.frame_bytes
        if any(map(_HEADERS, records)):
            for rec in records:
                self.add_one(rec)
            return
        sizes = [RECORD_HEADER_SIZE + len(v) + (len(k) if k is not None else 0) for _, k, v, _ in records]
        ends = list(accumulate(sizes))
        start = 0
        n = len(records)
        while start < n:
            base = ends[start - 1] if start else 0
            stop = bisect_right(ends, base + frame_bytes, start, n)
            stop = min(max(stop, start + 1), start + MAX_RECORDS_PER_FRAME)
            piece = records[start:stop]
            tss = [r[0] for r in piece]
            if ts_range_fits(min(tss), max(tss), tss[0]):
                self.close_frame()
                if self.needs_roll(ends[stop - 1] - base, len(piece)):
                    self.roll()
                self.add(piece, ends[stop - 1] - base)
            else:
                for rec in piece:
                    self.add_one(rec)
            start = stop

    def add_one(self, rec: RecordIn) -> None:
        size = record_size(rec)
        if self.cur_n and (
            self.cur_bytes + size > self.p.config.frame_bytes
            or self.cur_n >= MAX_RECORDS_PER_FRAME
            or not ts_fits(rec.timestamp_ms, self.first_ts)
        ):
            self.close_frame()
        if not self.cur_n and self.needs_roll(size, 1):
            self.roll()
        self.add((rec,), size)

    def needs_roll(self, incoming: int, records: int) -> bool:
        return self.p._w_needs_roll(self.pending_bytes + incoming + FRAME_HEADER_SIZE, records + self.pending_n(),
                                    self.now_ms)

    def pending_n(self) -> int:
        return sum(h.record_count for h in self.headers)

    def roll(self) -> None:
        self.flush()
        self.p._w_roll(self.now_ms)
        active = self.p.active
        self.undo = (active, active.size, active.next_offset)

    def close_frame(self) -> None:
        if not self.cur_n:
            return
        p = self.p
        cfg = p.config
        head, stored, header = build_frame(self.cur, base_offset=self.next_base, epoch=p.state.epoch,
                                           codec=cfg.codec_id, level=cfg.compression_level, checksum=p.active.checksum)
        self.pending.append(head)
        self.pending += stored
        self.headers.append(header)
        self.pending_bytes += header.frame_len
        self.next_base += self.cur_n
        self.cur = []
        self.cur_n = 0
        self.cur_bytes = 0

    def flush(self) -> None:
        if self.pending:
            self.p._w_append(self.pending, self.pending_bytes, self.headers)
            self.pending, self.headers, self.pending_bytes = [], [], 0
