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

import os
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import retention
from .config import Durability, LogConfig, TopicConfig
from .errors import LogBrokenError, OffsetOutOfRangeError
from .frame import (
    MAX_RECORDS_PER_FRAME,
    FrameHeader,
    Record,
    RecordIn,
    decode_body,
    encode_frame,
    parse_header,
    record_size,
    ts_fits,
)
from .fs import FileSystem
from .recovery import RecoveryReport, recover
from .segment import SEGMENT_HEADER_SIZE, Segment, SegmentHeader
from .state import PartitionState
from .stats import FsyncHistogram, PartitionStatistics

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
        """
        old = self.active
        old.seal()
        self.dirty = False
        self.durable_offset = old.next_offset
        header = SegmentHeader(self.index, old.next_offset, self.state.log_id, self.state.epoch, now_ms,
                               self.use_crc32c)
        new = Segment.create(self.fs, self.directory, header)
        new.index.interval_bytes = self.config.index_interval_bytes
        with self._lock:
            self.segments = [*self.segments, new]
        self._w_write_state(recovery_point=new.base_offset)
        self.counters.rolls += 1

    def _w_write_state(self, **changes: object) -> None:
        self.state = self.state.with_(**changes)
        self.state.write(self.fs, self.state_path)

    def _w_write(self, batches: list[list[RecordIn]], now_ms: int) -> list[int]:
        """Encode and write the batches (one per append, in order). Returns each batch's base offset.

        Frames hold up to `frame_bytes` of records; a batch may span frames, and frames span batches. Everything
        bound for one segment goes out in one write(). Nothing here syncs, except a roll (which seals).
        On an OSError the segment is truncated back to where this call started and the error re-raised.
        """
        self._w_check_broken()
        cfg = self.config
        codec = cfg.codec_id
        level = cfg.compression_level
        checksum = self.active.checksum
        bases: list[int] = []
        next_offset = self.active.next_offset
        pending_frames: list[bytes] = []
        pending_headers: list[FrameHeader] = []
        pending_bytes = 0
        cur: list[RecordIn] = []
        cur_bytes = 0
        cur_base = next_offset
        accepted_bytes = 0

        def close_frame() -> None:
            nonlocal cur, cur_bytes, cur_base, pending_bytes
            if not cur:
                return
            frame = encode_frame(cur, base_offset=cur_base, epoch=self.state.epoch, codec=codec, level=level,
                                 checksum=checksum)
            pending_frames.append(frame)
            pending_headers.append(parse_header(frame, checksum))
            pending_bytes += len(frame)
            cur_base += len(cur)
            cur = []
            cur_bytes = 0

        def flush_to_segment() -> None:
            nonlocal pending_frames, pending_headers, pending_bytes
            if pending_frames:
                self._w_append(b"".join(pending_frames), pending_headers)
                pending_frames, pending_headers, pending_bytes = [], [], 0

        start_seg, start_size, start_next = self.active, self.active.size, self.active.next_offset
        try:
            for batch in batches:
                bases.append(next_offset)
                for rec in batch:
                    size = record_size(rec)
                    accepted_bytes += len(rec.value) + (len(rec.key) if rec.key else 0)
                    if cur and (
                        cur_bytes + size > cfg.frame_bytes
                        or len(cur) >= MAX_RECORDS_PER_FRAME
                        or not ts_fits(rec.timestamp_ms, cur[0].timestamp_ms)
                    ):
                        close_frame()
                    if not cur and self._w_needs_roll(pending_bytes + size + _FRAME_OVERHEAD, 1, now_ms):
                        flush_to_segment()
                        self._w_roll(now_ms)
                        checksum = self.active.checksum
                    cur.append(rec)
                    cur_bytes += size
                    next_offset += 1
            close_frame()
            flush_to_segment()
        except OSError:
            self._w_undo(start_seg, start_size, start_next)
            raise
        self.counters.appended_records += next_offset - (bases[0] if bases else next_offset)
        self.counters.appended_bytes += accepted_bytes
        return bases

    def _w_append(self, data: bytes, headers: list[FrameHeader]) -> None:
        self.active.append_frames(data, headers)
        self.dirty = True
        self.counters.frames += len(headers)
        self.counters.stored_bytes += len(data)

    def _w_undo(self, seg: Segment, size: int, next_offset: int) -> None:
        """A write failed part-way (ENOSPC, EIO): cut the file back so no half frame is left behind."""
        try:
            if seg is self.active:
                seg.truncate(size, next_offset)
            else:  # a roll happened inside the failed call: the new segments are empty or partial
                for s in reversed(self.segments):
                    if s is seg:
                        break
                    s.truncate(SEGMENT_HEADER_SIZE, s.base_offset)
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
        self._w_write_state(log_start=new_start, recovery_point=max(self.state.recovery_point, new_start))
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
        """Re-check the body CRCs of one sealed segment (round robin). Quarantines it if corrupt."""
        with self._lock:
            sealed = self.segments[:-1]
        if not sealed:
            return None
        seg = sealed[self._scrub_cursor % len(sealed)]
        self._scrub_cursor += 1
        try:
            for _ in seg.frames(SEGMENT_HEADER_SIZE, seg.size):
                pass
            self.counters.scrubbed_segments += 1
            return None
        except (ValueError, OSError) as exc:
            with self._lock:
                i = self.segments.index(seg)
                nxt = self.segments[i + 1].base_offset
                self.segments = [s for s in self.segments if s is not seg]
                self.gaps = sorted([*self.gaps, (seg.base_offset, nxt)])
            where = seg.quarantine()
            self.counters.quarantined_segments += 1
            self.recovery.quarantined.append(f"{where} (scrub: {exc})")
            if i == 0:
                self._w_write_state(log_start=nxt)
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

        Raises OffsetOutOfRangeError below the log start or above the high watermark. Offsets lost to a
        quarantined segment are skipped (the gap is in the partition's statistics).
        """
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
        topic, part = self.topic, self.index
        for seg in segments[i:]:
            if seg.base_offset >= limit:
                return
            if seg.next_offset <= offset and seg is not segments[-1]:
                continue
            start = seg.index.lookup(offset, SEGMENT_HEADER_SIZE)
            end = seg.size
            for h, body in seg.frames(start, end):
                if h.next_offset <= offset:
                    continue
                if h.base_offset >= limit:
                    return
                recs = decode_body(h, body, topic, part)
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
            for h, body in seg.frames(start, seg.size):
                if h.base_offset >= hw:
                    return hw
                if h.max_ts < ts_ms:
                    continue
                for r in decode_body(h, body, self.topic, self.index):
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
