"""OffsetIndex: the sparse offset+time index of one segment (`<base>.idx`). Reader and writer of the format.

An entry points at the start of a frame:

    rel_offset u32 (frame base offset - segment base) | position u32 (byte in the .log) | ts_before i64

`ts_before` is the largest timestamp of every record in the segment *before* that frame (or the minimum i64 for the
first), so it never decreases and can be bisected even when record timestamps go back and forth. An entry is added
at the first frame and then at the first frame after every `interval_bytes` (4 KiB, Kafka's default) of log.

The active segment's index lives in memory and is rebuilt by a header-only scan after a crash. At seal (and at a
clean shutdown) it is written by durable replace into an enveloped file (store.durable) with the segment summary:

    version u16 | base_offset u64 | next_offset u64 | covered_bytes u64 | max_ts i64 | max_epoch u32 | count u32
    | entries (16 bytes each)

An index is used only if its CRC matches, its base offset is the segment's, it covers exactly the segment's
current size and its entries increase; anything else means "rebuild it by scanning the segment", never an error.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from dataclasses import dataclass

from . import durable
from .errors import CorruptStateError
from .fs import FileSystem

ENTRY = struct.Struct("<IIq")
SUMMARY = struct.Struct("<HQQQqII")
VERSION = 1
TS_MIN = -(2**63)
DEFAULT_INTERVAL_BYTES = 4096


@dataclass(frozen=True, slots=True)
class IndexSummary:
    base_offset: int
    next_offset: int
    covered_bytes: int
    max_ts: int
    max_epoch: int


class OffsetIndex:
    """In-memory sparse index. Only the writer thread appends; readers bisect a snapshot length."""

    __slots__ = ("_last_pos", "base_offset", "interval_bytes", "positions", "rel_offsets", "ts_before")

    def __init__(self, base_offset: int, interval_bytes: int = DEFAULT_INTERVAL_BYTES) -> None:
        self.base_offset = base_offset
        self.interval_bytes = interval_bytes
        self.rel_offsets = array("I")
        self.positions = array("I")
        self.ts_before = array("q")
        self._last_pos = -1

    def __len__(self) -> int:
        return len(self.rel_offsets)

    def maybe_add(self, frame_base_offset: int, position: int, ts_before: int) -> None:
        """Called for every frame in order; keeps one entry per `interval_bytes` of log."""
        if self._last_pos < 0 or position - self._last_pos >= self.interval_bytes:
            self.rel_offsets.append(frame_base_offset - self.base_offset)
            self.positions.append(position)
            self.ts_before.append(ts_before)
            self._last_pos = position

    def truncate_to(self, position: int) -> None:
        """Drop entries at or after `position` (the log was truncated there)."""
        n = len(self.positions)
        while n and self.positions[n - 1] >= position:
            n -= 1
        del self.rel_offsets[n:]
        del self.positions[n:]
        del self.ts_before[n:]
        self._last_pos = self.positions[n - 1] if n else -1

    def lookup(self, offset: int, first_position: int) -> int:
        """Position of the last indexed frame starting at or before `offset` (`first_position` if none)."""
        i = bisect_right(self.rel_offsets, offset - self.base_offset)
        return self.positions[i - 1] if i else first_position

    def lookup_time(self, ts: int, first_position: int) -> int:
        """Position from which a scan finds the first record with timestamp >= ts."""
        i = bisect_right(self.ts_before, ts - 1)  # entries whose ts_before < ts
        return self.positions[i - 1] if i else first_position

    def encode(self, summary: IndexSummary) -> bytes:
        head = SUMMARY.pack(
            VERSION,
            summary.base_offset,
            summary.next_offset,
            summary.covered_bytes,
            summary.max_ts,
            summary.max_epoch,
            len(self.rel_offsets),
        )
        body = bytearray()
        for r, p, t in zip(self.rel_offsets, self.positions, self.ts_before, strict=True):
            body += ENTRY.pack(r, p, t)
        return head + bytes(body)

    def write(self, fs: FileSystem, path: str, summary: IndexSummary) -> None:
        durable.write_enveloped(fs, path, self.encode(summary))

    @classmethod
    def decode(cls, path: str, payload: bytes, interval_bytes: int = DEFAULT_INTERVAL_BYTES) -> tuple[
        OffsetIndex, IndexSummary
    ]:
        if len(payload) < SUMMARY.size:
            raise CorruptStateError(path, "index shorter than its summary")
        version, base, nxt, covered, max_ts, max_epoch, count = SUMMARY.unpack_from(payload, 0)
        if version != VERSION:
            raise CorruptStateError(path, f"index format version {version}, expected {VERSION}")
        if len(payload) != SUMMARY.size + count * ENTRY.size:
            raise CorruptStateError(path, f"index holds {len(payload)} bytes for {count} entries")
        idx = cls(base, interval_bytes)
        prev_rel, prev_pos, prev_ts = -1, -1, TS_MIN
        for r, p, t in ENTRY.iter_unpack(payload[SUMMARY.size :]):
            if r <= prev_rel or p <= prev_pos or t < prev_ts:
                raise CorruptStateError(path, "index entries do not increase")
            idx.rel_offsets.append(r)
            idx.positions.append(p)
            idx.ts_before.append(t)
            prev_rel, prev_pos, prev_ts = r, p, t
        idx._last_pos = prev_pos
        if count and (base + prev_rel >= nxt or prev_pos >= covered):
            raise CorruptStateError(path, "index entry beyond the segment end")
        return idx, IndexSummary(base, nxt, covered, max_ts, max_epoch)

    @classmethod
    def read(cls, fs: FileSystem, path: str, interval_bytes: int = DEFAULT_INTERVAL_BYTES) -> tuple[
        OffsetIndex, IndexSummary
    ]:
        return cls.decode(path, durable.read_enveloped(fs, path), interval_bytes)
