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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import retention
from .config import Durability, LogConfig, TopicConfig
from .errors import CorruptFrameError, CorruptSegmentError, LogBrokenError
from .frame import (
    MAX_RECORDS_PER_FRAME,
    RECORD_HEADER_SIZE,
    BatchInfo,
    FrameError,
    FrameHeader,
    Record,
    RecordIn,
    decode_body,
    parse_header,
    ts_range_fits,
)
from .framebuilder import FrameBuilder
from .fs import FileSystem
from .reads import PartitionReads
from .recovery import RecoveryReport, recover
from .segment import SEGMENT_HEADER_SIZE, Segment, SegmentHeader
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
    recompressed_segments: int = 0
    recompress_bytes_before: int = 0
    recompress_bytes_after: int = 0
    recompress_failures: int = 0  # written by the recompression thread only


class Partition(PartitionReads):
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
        # Held by the writer while it changes what is written (append, roll, undo) and by whoever syncs while it
        # picks the segment and the offset an fdatasync will cover: the syncer thread runs beside the writer.
        self._write_lock = threading.RLock()
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
        with self._write_lock:
            self.durable_offset = max(self.durable_offset, old.next_offset)
            with self._lock:
                self.segments = [*self.segments, new]
        self.counters.rolls += 1
        try:
            self._w_write_state(recovery_point=new.base_offset)
        except OSError as exc:
            log.warning("%s/%d: could not advance the recovery point (%s); the next start scans more", self.topic,
                        self.index, exc)

    def _w_raise_epoch(self, reason: str) -> int:
        """Give the records written from now on a new identity (DESIGN 6, step 6: a mirror cursor found ahead of
        the recovered log end, so offsets it already sent may be reused for other records). The state is durable
        before this returns; the active segment rolls at the next append, as after an unclean stop."""
        new = self.state.epoch + 1
        self._w_write_state(epoch=new)
        self.counters.epoch_bumps += 1
        log.warning("%s/%d: epoch raised to %d (%s)", self.topic, self.index, new, reason)
        return new

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
        out = FrameBuilder(self, now_ms)
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
                    out.add_split(records)  # bigger than a frame
                    continue
                if not out.cur_n and out.needs_roll(min(info.nbytes, frame_bytes), n):
                    out.roll()
                out.add(records, info.nbytes)
            out.close_frame()
            out.flush()
        except OSError:
            self._w_undo(*out.undo)
            raise
        self.counters.appended_records += next_offset - first_offset
        self.counters.appended_bytes += accepted
        return bases

    @property
    def dirty(self) -> bool:
        """Records are written that no fdatasync covers yet."""
        return self.segments[-1].next_offset > self.durable_offset

    def _w_append(self, buffers: list[bytes], nbytes: int, headers: list[FrameHeader]) -> None:
        with self._write_lock:
            self.active.append_frames(buffers, headers)
        self.counters.frames += len(headers)
        self.counters.stored_bytes += nbytes

    def _w_undo(self, seg: Segment, size: int, next_offset: int) -> None:
        """A write failed part-way (ENOSPC, EIO): cut the file back so no half frame is left behind."""
        try:
            with self._write_lock:
                if seg.size != size or seg.writable().size() != size:
                    seg.truncate(size, next_offset)
        except OSError as exc:
            self.broken = exc

    def _w_sync(self, mono_now: float) -> int:
        """fdatasync what is written, if anything is not yet covered. Returns the offset below which every record
        is durable. The writer calls it for `interval` topics, the syncer thread for `fsync` ones, while the writer
        goes on writing: the segment and the offset it covers are picked under the write lock (records of
        segments sealed before were synced by their roll). A failed fdatasync breaks the partition and raises."""
        self._w_check_broken()
        with self._write_lock:
            seg = self.active
            target = seg.next_offset
            if target <= self.durable_offset:
                return self.durable_offset
        t0 = time.perf_counter()
        try:
            seg.sync()
        except OSError as exc:
            # After a failed fsync the page cache state is unknown (fsyncgate): never retry, never ack again.
            self.broken = exc
            raise
        elapsed = time.perf_counter() - t0
        with self._write_lock:
            self.counters.fsyncs += 1
            self.counters.synced_records += max(0, target - self.durable_offset)
            self.durable_offset = max(self.durable_offset, target)
            self.last_sync_mono = mono_now
        self.fsync_histogram.observe(elapsed)
        return target

    def _w_publish(self, offset: int) -> None:
        """Advance the high watermark (acknowledged end) and wake readers."""
        with self._lock:
            if offset <= self.high_watermark:
                return
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
            SegmentHeader.decode(seg.path, seg.handle().pread(SEGMENT_HEADER_SIZE, 0))
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
        except (CorruptFrameError, CorruptSegmentError, FrameError, OSError) as exc:
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
            recompressed_segments=c.recompressed_segments,
            recompress_bytes_before=c.recompress_bytes_before,
            recompress_bytes_after=c.recompress_bytes_after,
            recompress_failures=c.recompress_failures,
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

