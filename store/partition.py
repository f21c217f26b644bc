"""Partition: the ordered, durable log of one topic partition (a directory of segments).

Appends arrive already batched by the group-commit writer (store.writer), which is the only thread that calls the
`_w_*` methods. Readers call `read`, `offset_for_time` and friends from any thread: they take a snapshot of the
segment list and the high watermark under `_lock` and read with pread outside it.

Offsets:
    log_start <= ... < high_watermark <= end_offset
- `end_offset`: the offset the next record will get (everything below is written to the file).
- `high_watermark`: records below it were acknowledged to their producers; readers and the mirror see only these.
  In `fsync` mode it is also the durable offset; in `interval`/`os` mode acknowledged records may not be durable
  yet, and the epoch raised after an unclean stop keeps their identities unique.
- `durable_offset`: records below it are covered by an fdatasync.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from . import retention
from .config import Durability, LogConfig, TopicConfig
from .errors import CorruptFrameError, LogBrokenError, OffsetOutOfRangeError
from .frame import (
    FRAME_HEADER_SIZE,
    MAX_RECORDS_PER_FRAME,
    RECORD_HEADER_SIZE,
    BatchInfo,
    FrameError,
    FrameHeader,
    Record,
    RecordIn,
    build_frame,
    decode_body,
    parse_header,
    record_size,
    ts_fits,
    ts_range_fits,
)
from .fs import FileSystem
from .recovery import RecoveryReport, recover
from .segment import SEGMENT_HEADER_SIZE, BodyReader, Segment, SegmentHeader
from .state import PartitionState
from .stats import FsyncHistogram, PartitionStatistics

log = logging.getLogger("edgestream.store.partition")

_U32_MAX = 2**32 - 1
_FRAME_OVERHEAD = 48


@dataclass(slots=True)
class _Counters:
    appended_records: int = 0
    appended_bytes: int = 0  # payload bytes (key + value) accepted
    stored_bytes: int = 0  # bytes written to segments (frames, after compression)
    frames: int = 0
    fsyncs: int = 0
    synced_records: int = 0
    rolls: int = 0
    retention_deleted_segments: int = 0
    retention_deleted_records: int = 0
    scrubbed_segments: int = 0
    quarantined_segments: int = 0
    epoch_bumps: int = 0
    recovery_truncated_bytes: int = 0
    recovery_truncated_records: int = 0
    blocked_cycles: int = 0


class Partition:
    def __init__(
        self,
        fs: FileSystem,
        directory: str,
        topic: str,
        index: int,
        config: TopicConfig,
        log_config: LogConfig,
        state: PartitionState,
        segments: list[Segment],
        report: RecoveryReport,
        gaps: list[tuple[int, int]],
        use_crc32c: bool,
    ) -> None:
        self.fs = fs
        self.directory = directory
        self.topic = topic
        self.index = index
        self.config = config
        self.log_config = log_config
        self.durability: Durability = config.durability_mode
        self.state = state
        self.segments = segments
        self.recovery = report
        self.gaps = gaps
        self.use_crc32c = use_crc32c
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Partition], None]] = []
        self.high_watermark = segments[-1].next_offset
        self.durable_offset = self.high_watermark
        self.last_sync_mono = 0.0
        self.dirty = False  # bytes written since the last fdatasync of the active segment
        self.broken: BaseException | None = None
        self.blocked = False  # the writer holds appends back (on_full = block and no room)
        self.dropped: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.counters = _Counters()
        self.fsync_histogram = FsyncHistogram()
        self.counters.epoch_bumps = 1 if report.epoch_bumped else 0
        self.counters.recovery_truncated_bytes = report.truncated_bytes
        self.counters.recovery_truncated_records = report.truncated_records
        self.counters.quarantined_segments = len(report.quarantined)
        self._scrub_cursor = 0
        self._frame_cache: tuple[Segment, int, list[Record]] | None = None
        # Called with (topic, partition) -> lowest offset a required cursor still has to read, or None.
        self.protect_from: Callable[[], int | None] = lambda: None

    # -- opening -------------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        directory: str,
        topic: str,
        index: int,
        config: TopicConfig,
        log_config: LogConfig,
        *,
        now_ms: int,
        use_crc32c: bool,
    ) -> Partition:
        fs.makedirs(directory)
        rec = recover(
            fs,
            directory,
            topic=topic,
            partition=index,
            now_ms=now_ms,
            use_crc32c=use_crc32c,
            index_interval_bytes=config.index_interval_bytes,
        )
        return cls(
            fs, directory, topic, index, config, log_config, rec.state, rec.segments, rec.report, rec.gaps, use_crc32c
        )

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, "state")

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    @property
    def log_start(self) -> int:
        return self.state.log_start

    @property
    def end_offset(self) -> int:
        return self.segments[-1].next_offset

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def log_id(self) -> bytes:
        return self.state.log_id

    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    # -- listeners (long poll, follow) ---------------------------------------------------------------------------

    def add_listener(self, fn: Callable[[Partition], None]) -> None:
        """`fn(partition)` runs on the writer thread whenever the high watermark moves. Keep it tiny."""
        with self._lock:
            self._listeners = [*self._listeners, fn]

    def remove_listener(self, fn: Callable[[Partition], None]) -> None:
        with self._lock:
            self._listeners = [f for f in self._listeners if f is not fn]

    def _notify(self) -> None:
        for fn in self._listeners:
            fn(self)

    # -- writing (writer thread only) ----------------------------------------------------------------------------

    def _w_check_broken(self) -> None:
        if self.broken is not None:
            raise LogBrokenError(
                f"{self.topic}/{self.index} stopped accepting writes after an I/O error ({self.broken}); "
                "restart edgestream: recovery truncates to the last durable frame"
            )

    def _w_needs_roll(self, incoming: int, records: int, now_ms: int) -> bool:
        seg = self.active
        if seg.empty:
            return False
        return (
            seg.size + incoming > self.config.segment_bytes
            or now_ms - seg.header.created_ms >= self.config.segment_ms
            or seg.header.epoch != self.state.epoch
            or seg.next_offset + records - seg.base_offset > _U32_MAX
        )

    def _w_roll(self, now_ms: int) -> None:
        """Seal the active segment and start a new one at the end offset (DESIGN 4: roll).

        1. fdatasync the active segment and write its `.idx` by durable replace;
        2. create the new segment (header written, file and directory entry durable);
        3. advance the recovery point in `state` (durable replace).
        A failure in 1 or 2 leaves the old segment active and raises; in 3 it only costs a longer scan at the next
        start, so it is logged and the roll stands.
        """
        old = self.active
        old.seal()
        header = SegmentHeader(self.index, old.next_offset, self.state.log_id, self.state.epoch, now_ms,
                               self.use_crc32c)
        try:
            new = Segment.create(self.fs, self.directory, header)
        except BaseException:
            old.sealed = False
            raise
        new.index.interval_bytes = self.config.index_interval_bytes
        self.dirty = False
        self.durable_offset = old.next_offset
        with self._lock:
            self.segments = [*self.segments, new]
        self.counters.rolls += 1
        try:
            self._w_write_state(recovery_point=new.base_offset)
        except OSError as exc:
            log.warning("%s/%d: could not advance the recovery point (%s); the next start scans more", self.topic,
                        self.index, exc)

    def _w_write_state(self, **changes: object) -> None:
        new = self.state.with_(**changes)
        new.write(self.fs, self.state_path)
        self.state = new

    def _w_write(self, batches: Sequence[tuple[Sequence[RecordIn], BatchInfo]], now_ms: int) -> list[int]:
        """Encode and write the batches (one per append, in order). Returns each batch's base offset.

        Frames hold up to `frame_bytes` of records; whole batches ride in one frame when they fit (the common case
        costs no per-record Python here), a batch larger than a frame is split. Everything bound for one segment
        goes out in one write(). Nothing here syncs, except a roll (which seals the old segment).
        On an OSError the active segment is cut back to where this call started writing to it and the error is
        re-raised. Frames that went into a segment sealed by a roll inside this call stay (they are durable); the
        caller fails those appends all the same, so such records are "maybe written", as after any failed ack.
        """
        self._w_check_broken()
        cfg = self.config
        frame_bytes = cfg.frame_bytes
        bases: list[int] = []
        next_offset = self.active.next_offset
        first_offset = next_offset
        out = _FrameBuilder(self, now_ms)
        undo = (self.active, self.active.size, self.active.next_offset)
        accepted = 0
        try:
            for records, info in batches:
                bases.append(next_offset)
                n = len(records)
                next_offset += n
                accepted += info.nbytes - RECORD_HEADER_SIZE * n
                if out.cur_n and not (
                    out.cur_bytes + info.nbytes <= frame_bytes
                    and out.cur_n + n <= MAX_RECORDS_PER_FRAME
                    and ts_range_fits(info.ts_lo, info.ts_hi, out.first_ts)
                ):
                    out.close_frame()
                if not out.cur_n and (
                    info.nbytes > frame_bytes
                    or n > MAX_RECORDS_PER_FRAME
                    or not ts_range_fits(info.ts_lo, info.ts_hi, records[0][0])
                ):
                    for rec in records:  # bigger than a frame: split it record by record
                        out.add_one(rec)
                    continue
                if not out.cur_n and out.needs_roll(min(info.nbytes, frame_bytes), n):
                    out.roll()
                    undo = (self.active, self.active.size, self.active.next_offset)
                out.add(records, info.nbytes)
            out.close_frame()
            out.flush()
        except OSError:
            self._w_undo(*undo)
            raise
        self.counters.appended_records += next_offset - first_offset
        self.counters.appended_bytes += accepted
        return bases

    def _w_append(self, data: bytes, headers: list[FrameHeader]) -> None:
        self.active.append_frames(data, headers)
        self.dirty = True
        self.counters.frames += len(headers)
        self.counters.stored_bytes += len(data)

    def _w_undo(self, seg: Segment, size: int, next_offset: int) -> None:
        """A write failed part-way (ENOSPC, EIO): cut the file back so no half frame is left behind."""
        try:
            if seg.size != size or seg.writable().size() != size:
                seg.truncate(size, next_offset)
        except OSError as exc:
            self.broken = exc

    def _w_sync(self, mono_now: float) -> float:
        """fdatasync the active segment if it has unsynced bytes. Returns the seconds it took (0 if none)."""
        if not self.dirty:
            return 0.0
        t0 = time.perf_counter()
        try:
            self.active.sync()
        except OSError as exc:
            # After a failed fsync the page cache state is unknown (fsyncgate): never retry, never ack again.
            self.broken = exc
            raise
        elapsed = time.perf_counter() - t0
        self.dirty = False
        self.counters.fsyncs += 1
        self.counters.synced_records += self.active.next_offset - self.durable_offset
        self.durable_offset = self.active.next_offset
        self.last_sync_mono = mono_now
        self.fsync_histogram.observe(elapsed)
        return elapsed

    def _w_publish(self, offset: int) -> None:
        """Advance the high watermark (acknowledged end) and wake readers."""
        if offset > self.high_watermark:
            self.high_watermark = offset
            self._notify()

    def _w_retention(self, now_ms: int, free_bytes_needed: int = 0) -> int:
        """Apply retention (and drop_oldest when room is needed). Returns bytes freed."""
        with self._lock:
            sealed = self.segments[:-1]
        if not sealed:
            return 0
        infos = [retention.SegmentInfo(s.base_offset, s.next_offset, s.size, s.max_ts) for s in sealed]
        protect = self.protect_from()
        plan = retention.plan(
            infos,
            total_bytes=self.size_bytes(),
            retention_bytes=self.config.retention_bytes,
            retention_ms=self.config.retention_ms,
            now_ms=now_ms,
            protect_from=protect,
            free_bytes_needed=free_bytes_needed,
        )
        if not plan:
            return 0
        doomed = {d.base_offset for d in plan}
        new_start = plan[-1].next_offset
        # The state moves first: after a crash between the two steps, recovery deletes the leftovers.
        try:
            self._w_write_state(log_start=new_start, recovery_point=max(self.state.recovery_point, new_start))
        except OSError as exc:  # e.g. ENOSPC for the temp file: nothing was deleted, try again later
            log.warning("%s/%d: retention could not write the state file: %s", self.topic, self.index, exc)
            return 0
        with self._lock:
            victims = [s for s in self.segments if s.base_offset in doomed]
            self.segments = [s for s in self.segments if s.base_offset not in doomed]
            self.gaps = [(a, b) for a, b in self.gaps if b > new_start]
        freed = 0
        for seg in victims:
            seg.delete()
            freed += seg.size
        self.fs.sync_dir(self.directory)
        for d in plan:
            self.counters.retention_deleted_segments += 1
            self.counters.retention_deleted_records += d.next_offset - d.base_offset
            if d.unread_records:
                self.dropped["drop_oldest"] = self.dropped.get("drop_oldest", 0) + d.unread_records
        return freed

    def _w_scrub_one(self) -> str | None:
        """Re-check one sealed segment (round robin): every frame's checksums, its records and its offsets.
        Quarantines it if anything is wrong and returns where it went."""
        with self._lock:
            sealed = self.segments[:-1]
        if not sealed:
            return None
        seg = sealed[self._scrub_cursor % len(sealed)]
        self._scrub_cursor += 1
        try:
            expect = seg.base_offset
            for h, body in seg.frames(SEGMENT_HEADER_SIZE, seg.size):
                if h.base_offset != expect:
                    raise FrameError("offset_gap", f"frame starts at {h.base_offset}, expected {expect}")
                decode_body(h, body)
                expect = h.next_offset
            if expect != seg.next_offset:
                raise FrameError("short_segment", f"frames end at offset {expect}, expected {seg.next_offset}")
            self.counters.scrubbed_segments += 1
            return None
        except (CorruptFrameError, FrameError, OSError) as exc:
            return self._w_quarantine(seg, f"scrub: {exc}")

    def _w_quarantine(self, seg: Segment, reason: str) -> str:
        with self._lock:
            i = self.segments.index(seg)
            nxt = self.segments[i + 1].base_offset
            self.segments = [s for s in self.segments if s is not seg]
            if i > 0:
                self.gaps = sorted([*self.gaps, (seg.base_offset, nxt)])
        if i == 0:
            self._w_write_state(log_start=nxt)
        where = seg.quarantine()
        self.counters.quarantined_segments += 1
        self.recovery.quarantined.append(f"{where} ({reason})")
        log.error("%s/%d: quarantined %s (%s)", self.topic, self.index, where, reason)
        return where

    def _w_close(self, clean: bool) -> None:
        """Clean shutdown: sync, write the active index, mark the state clean (written last)."""
        active = self.active
        if clean and self.broken is None:
            active.sync()
            active.write_index()
            self._w_write_state(clean=True)
        for seg in self.segments:
            seg.close()

    # -- reading (any thread) ------------------------------------------------------------------------------------

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
        for attempt in range(3):
            try:
                return self._read(offset, max_records, max_bytes, upto)
            except FileNotFoundError:
                if attempt == 2:  # retention keeps deleting under us: report the new start
                    raise OffsetOutOfRangeError(self.topic, self.index, offset, self.state.log_start,
                                                self.high_watermark) from None
        raise AssertionError("unreachable")

    def _read(self, offset: int, max_records: int, max_bytes: int, upto: int | None) -> list[Record]:
        segments, hw, gaps = self._snapshot()
        limit = hw if upto is None else min(hw, upto)
        if offset < self.state.log_start or offset > hw:
            raise OffsetOutOfRangeError(self.topic, self.index, offset, self.state.log_start, hw)
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

    def _iter_from(
        self, segments: list[Segment], gaps: list[tuple[int, int]], offset: int, limit: int
    ) -> Iterator[tuple[int, list[Record]]]:
        """(body bytes, records) per frame, from `offset` up to `limit`."""
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
                recs = self._decoded(seg, pos, h, body)
                lo = offset - h.base_offset if offset > h.base_offset else 0
                hi = limit - h.base_offset
                if lo or hi < len(recs):
                    recs = recs[lo:hi]
                yield h.raw_len, recs
                if h.next_offset >= limit:
                    return

    def offset_for_time(self, ts_ms: int) -> int:
        """The first acknowledged offset whose timestamp is >= ts_ms, or the high watermark if there is none."""
        segments, hw, gaps = self._snapshot()
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

    def statistics(self) -> PartitionStatistics:
        segments, hw, gaps = self._snapshot()
        c = self.counters
        return PartitionStatistics(
            topic=self.topic,
            partition=self.index,
            log_start=self.state.log_start,
            high_watermark=hw,
            end_offset=segments[-1].next_offset,
            durable_offset=self.durable_offset,
            epoch=self.state.epoch,
            segments=len(segments),
            size_bytes=sum(s.size for s in segments),
            appended_records=c.appended_records,
            appended_bytes=c.appended_bytes,
            stored_bytes=c.stored_bytes,
            frames=c.frames,
            fsyncs=c.fsyncs,
            synced_records=c.synced_records,
            fsync_seconds=self.fsync_histogram.snapshot(),
            rolls=c.rolls,
            retention_deleted_segments=c.retention_deleted_segments,
            retention_deleted_records=c.retention_deleted_records,
            dropped=tuple(sorted(self.dropped.items())),
            rejected=tuple(sorted(self.rejected.items())),
            epoch_bumps=c.epoch_bumps,
            recovery_truncated_bytes=c.recovery_truncated_bytes,
            recovery_truncated_records=c.recovery_truncated_records,
            quarantined_segments=c.quarantined_segments,
            scrubbed_segments=c.scrubbed_segments,
            gap_records=sum(b - a for a, b in gaps),
            blocked=self.blocked,
            broken=self.broken is not None,
            oldest_timestamp_ms=_first_ts(segments),
        )


def _first_ts(segments: list[Segment]) -> int | None:
    """Smallest timestamp bound we know cheaply: the first frame's first_ts of the first non-empty segment."""
    for seg in segments:
        if seg.empty:
            continue
        try:
            h = parse_header(seg.handle().pread(_FRAME_OVERHEAD, SEGMENT_HEADER_SIZE), seg.checksum)
        except (ValueError, OSError):
            return None
        return h.first_ts
    return None


class _FrameBuilder:
    """The frames of one `_w_write` call: groups records into frames, frames into one write per segment, and rolls
    the segment when the next frame would not fit in it."""

    __slots__ = ("cur", "cur_bytes", "cur_n", "first_ts", "headers", "next_base", "now_ms", "p", "pending",
                 "pending_bytes")

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

    def add(self, records: Sequence[RecordIn], nbytes: int) -> None:
        if not self.cur_n:
            self.first_ts = records[0][0]
        self.cur.extend(records)
        self.cur_n += len(records)
        self.cur_bytes += nbytes

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

    def close_frame(self) -> None:
        if not self.cur_n:
            return
        p = self.p
        cfg = p.config
        frame, header = build_frame(self.cur, base_offset=self.next_base, epoch=p.state.epoch, codec=cfg.codec_id,
                                    level=cfg.compression_level, checksum=p.active.checksum)
        self.pending.append(frame)
        self.headers.append(header)
        self.pending_bytes += len(frame)
        self.next_base += self.cur_n
        self.cur = []
        self.cur_n = 0
        self.cur_bytes = 0

    def flush(self) -> None:
        if self.pending:
            self.p._w_append(b"".join(self.pending), self.headers)
            self.pending, self.headers, self.pending_bytes = [], [], 0
