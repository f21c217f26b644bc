"""Tierer: sealed segments -> Parquet files listed in the manifest, exactly once; then cold retention and
compaction. One tierer per data dir (`tier/.lock`); it runs in the gateway's background thread or as
`edgestream tier run`.

Tiering one sealed segment [base, next) of a partition (`_tier_segment`, the commit protocol):
  1. read its records through `Log.read` in chunks of `row_group_rows`; decode; split by UTC day; sort each chunk
     by key; write each day's rows to `<file>.tmp` (a new file when a chunk's schema does not fit the open one);
  2. close, fsync and checksum every temp file;
  3. rename them into place and fsync their directories;
  4. commit the manifest: the new files and `tiered_upto = next` in one durable replace (THE commit point);
  5. commit the `tier` cursor (required=True) to `next`: from now on hot retention may delete the segment.
A crash before 4 leaves files the manifest does not list: `open()` deletes them and the segment is tiered again
(file names are deterministic). A crash between 4 and 5 leaves the cursor behind the manifest: `open()` sets it
from the manifest. Whatever the point of the crash, no offset is lost or tiered twice.

The tierer yields the CPU by pacing (`cpu_share`): after each chunk it sleeps in proportion to the work it did,
since `os.nice` would lower the whole gateway; on Linux it also lowers its own thread's priority.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ..cursors import CursorPosition
from ..errors import DataDirLockedError, OffsetOutOfRangeError
from ..fs import OsFileSystem
from ..lock import DataDirLock
from ..log import Log
from ..partition import Partition
from ..reads import FrameSlice
from . import coldplan, compact, layout
from . import manifest as mf
from .arrowize import slices_to_table
from .coldplan import ColdRetention
from .errors import TierBusyError, TierConflictError
from .manifest import DecoderSpec, Manifest, TierFile, TopicDecoder
from .parquet import ParquetOptions, PendingFile, day_groups, publish
from .stats import PartitionBacklog, TierStatistics, backlog

log = logging.getLogger("edgestream.store.tier")

CURSOR = "tier"
StepHook = Callable[[str], None]
MiB = 1 << 20


@dataclass(frozen=True)
class TierSettings:
    topics: tuple[str, ...] | None = None  # None: every topic of the log
    parquet: ParquetOptions = field(default_factory=ParquetOptions)
    retention: ColdRetention = field(default_factory=ColdRetention)
    topic_retention: Mapping[str, ColdRetention] = field(default_factory=dict)
    compact: bool = True
    compact_small_bytes: int = 4 * MiB
    compact_max_bytes: int = 64 * MiB
    cpu_share: float = 0.5  # at most this fraction of one core, averaged over a segment
    threads: bool = False  # build the next chunk on a second thread while writing (the CLI; not in the gateway)

    def retention_for(self, topic: str) -> ColdRetention:
        return self.topic_retention.get(topic, self.retention)


class _Counters:
    def __init__(self) -> None:
        self.segments = 0
        self.rows = 0
        self.bytes_written = 0
        self.payload_bytes = 0
        self.decode_errors = 0
        self.skipped = 0
        self.retention_files = 0
        self.retention_bytes = 0
        self.compactions = 0
        self.passes = 0
        self.errors = 0
        self.last_error = ""
        self.last_pass_ms = 0
        self.seconds = 0.0
        self.topic_rows: dict[str, int] = {}


class Tierer:
    def __init__(
        self,
        log_: Log,
        decoders: Mapping[str, TopicDecoder],
        settings: TierSettings | None = None,
        *,
        wall_ms: Callable[[], int] | None = None,
        sleep: Callable[[float], None] | None = None,
        hook: StepHook | None = None,
    ) -> None:
        self.log = log_
        self.decoders = decoders
        self.settings = settings or TierSettings()
        self.root = layout.tier_dir(log_.data_dir)
        self.wall_ms = wall_ms or log_.wall_ms
        self._sleep = sleep or time.sleep
        self._hook = hook or (lambda step: None)
        self.fs = OsFileSystem()
        self.manifest = Manifest()
        self.conflicts: dict[tuple[str, int], str] = {}
        self.c = _Counters()
        self.stopping = threading.Event()
        self._lock: DataDirLock | None = None
        self._stats_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def open(self) -> Tierer:
        """Take the tier lock, delete what an interrupted run left, align the cursor with the manifest."""
        from .. import durable

        durable.ensure_dir(self.fs, self.root)
        lock = DataDirLock(self.root)
        try:
            lock.acquire()
        except DataDirLockedError as exc:
            raise TierBusyError(self.root, exc.holder) from None
        self._lock = lock
        try:
            self.manifest = mf.load(self.fs, self.log.data_dir)
            self._remove_unlisted()
            self._register()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Tierer:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remove_unlisted(self) -> None:
        """Temp files and files the manifest does not list are leftovers of a crash: delete them."""
        listed = self.manifest.paths()
        removed = 0
        dirs = set()
        for rel in layout.walk_files(self.root):
            if rel in listed:
                continue
            if not (rel.endswith(layout.PARQUET) or rel.endswith(layout.TMP)):
                continue
            os.remove(os.path.join(self.root, rel))
            dirs.add(os.path.dirname(os.path.join(self.root, rel)))
            removed += 1
        stale = layout.manifest_path(self.log.data_dir) + layout.TMP
        if os.path.exists(stale):
            os.remove(stale)
        for d in sorted(dirs, reverse=True):
            self.fs.sync_dir(d)
            _remove_empty_dirs(d, self.root)
        if removed:
            log.info("tier: removed %d unlisted file(s) left by an interrupted run", removed)

    def _topics(self) -> list[str]:
        names = self.log.topic_names()
        wanted = self.settings.topics
        return [n for n in names if wanted is None or n in wanted]

    def _decoder(self, topic: str) -> TopicDecoder | None:
        return self.decoders.get(topic)

    def _register(self) -> None:
        """Record each topic's decoder in the manifest and put the required cursor where the manifest says."""
        m = self.manifest
        for topic in self._topics():
            dec = self._decoder(topic)
            m = m.with_topic(topic, dec.spec if dec is not None else DecoderSpec())
        if m is not self.manifest:
            m.save(self.fs, self.log.data_dir)
            self.manifest = m
        positions = {}
        for topic in self._topics():
            for p in self.log.topic(topic).partitions:
                entry = m.partition(topic, p.index)
                if entry is not None and entry.log_id and entry.log_id != p.log_id.hex():
                    self.conflicts[(topic, p.index)] = str(TierConflictError(topic, p.index, entry.log_id,
                                                                              p.log_id.hex()))
                    continue
                upto = entry.tiered_upto if entry is not None else p.log_start
                positions[(topic, p.index)] = CursorPosition(upto, p.log_id.hex(), p.epoch)
        if positions:
            self.log.cursors.commit(CURSOR, positions, required=True)

    # -- one pass ----------------------------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Tier every sealed segment not tiered yet, then cold retention and compaction. Returns segments tiered."""
        t0 = time.monotonic()
        tiered = 0
        known = set(self.manifest.topics)
        if any(t not in known for t in self._topics()):
            self._register()
        for topic in self._topics():
            for p in self.log.topic(topic).partitions:
                if self.stopping.is_set():
                    return tiered
                if (topic, p.index) in self.conflicts:
                    continue
                tiered += self._tier_partition(topic, p)
        if not self.stopping.is_set():
            self.apply_retention()
        if self.settings.compact and not self.stopping.is_set():
            self.compact_days()
        with self._stats_lock:
            self.c.passes += 1
            self.c.last_pass_ms = self.wall_ms()
            self.c.seconds += time.monotonic() - t0
        return tiered

    def _tier_partition(self, topic: str, p: Partition) -> int:
        done = 0
        upto = self.manifest.tiered_upto(topic, p.index)
        for seg in p.segments[:-1]:
            if seg.next_offset <= upto or seg.empty:
                continue
            if p.high_watermark < seg.next_offset or self.stopping.is_set():
                break
            start = max(upto, seg.base_offset, p.log_start)
            try:
                files = self._tier_segment(topic, p, start, seg.next_offset)
            except OffsetOutOfRangeError:
                continue  # deleted under us (on_full = drop_oldest): counted as skipped with the next segment
            if files is None:
                break  # stopping
            skipped = start - upto if upto < start else 0
            self.manifest = self.manifest.with_segment(topic, p.index, p.log_id.hex(), files, seg.next_offset,
                                                       skipped)
            self.manifest.save(self.fs, self.log.data_dir)
            self._hook("manifest_saved")
            self.log.cursors.commit(CURSOR, {(topic, p.index): CursorPosition(seg.next_offset, p.log_id.hex(),
                                                                              p.epoch)}, required=True)
            self._hook("cursor_committed")
            with self._stats_lock:
                self.c.segments += 1
                self.c.skipped += skipped
            upto = seg.next_offset
            done += 1
        return done

    def _tier_segment(self, topic: str, p: Partition, start: int, end: int) -> list[TierFile] | None:
        """Steps 1-3 of the protocol for offsets [start, end). None if stopped part-way (nothing kept)."""
        opts = self.settings.parquet
        decoder = self._decoder(topic)
        open_files: dict[str, PendingFile] = {}
        finished: list[PendingFile] = []
        rows = payload = errors = 0
        chunks = self._chunks(topic, p.index, start, end, decoder)
        try:
            t0 = time.monotonic()
            for table in chunks:
                rows += table.num_rows
                payload += pc.sum(pc.binary_length(table.column("value"))).as_py() or 0
                errors += table.num_rows - table.column("decode_error").null_count
                for day, part in day_groups(table):
                    current = open_files.get(day)
                    fitted = current.fits(part) if current is not None else None
                    if current is None or fitted is None:  # a new day, or a schema the open file cannot hold
                        if current is not None:
                            finished.append(current)
                        first = _min_offset(part)
                        current = PendingFile(self.root, layout.file_relpath(topic, day, p.index, first), topic,
                                              p.index, part.schema, opts)
                        open_files[day] = current
                        fitted = part
                    current.write(fitted)
                self._pace(time.monotonic() - t0)
                if self.stopping.is_set():
                    raise _Stopped
                t0 = time.monotonic()
            finished.extend(open_files.values())
            now = self.wall_ms()
            entries = [f.finish(now) for f in finished]
            self._hook("files_written")
            publish(self.root, [e.path for e in entries])
            self._hook("files_renamed")
        except _Stopped:
            for f in [*finished, *open_files.values()]:
                f.abandon()
            return None
        except BaseException:
            for f in [*finished, *open_files.values()]:
                f.abandon()
            raise
        finally:
            chunks.close()
        with self._stats_lock:
            self.c.rows += rows
            self.c.topic_rows[topic] = self.c.topic_rows.get(topic, 0) + rows
            self.c.payload_bytes += payload
            self.c.decode_errors += errors
            self.c.bytes_written += sum(e.bytes for e in entries)
        return entries

    def _chunks(self, topic: str, partition: int, start: int, end: int, decoder: TopicDecoder | None
                ) -> Generator[pa.Table, None, None]:
        """Offsets [start, end) as tables of about `row_group_rows` rows or `row_group_bytes`, sorted by key.
        With `threads` (the CLI) the next table is built on a second thread while the caller writes this one:
        reading JSON and writing Parquet run in Arrow's C++ without the GIL, so a second core takes ~1/3 off
        (measured on segments of several chunks; a segment of one chunk gains nothing)."""
        def read(offset: int) -> list[FrameSlice]:
            if offset >= end:
                return []
            opts = self.settings.parquet
            return self.log.read_columns(topic, partition, offset, max_records=opts.row_group_rows,
                                         max_bytes=opts.row_group_bytes, upto=end)

        def build(slices: list[FrameSlice]) -> pa.Table:
            return slices_to_table(slices, partition, decoder, by_key=True)

        slices = read(start)
        if not self.settings.threads:
            while slices:
                yield build(slices)
                slices = read(slices[-1].next_offset)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="edgestream-tier-build") as pool:
            pending = pool.submit(build, slices) if slices else None
            while pending is not None:
                slices = read(slices[-1].next_offset)
                after = pool.submit(build, slices) if slices else None
                try:
                    table = pending.result()
                except BaseException:
                    if after is not None:
                        after.cancel()
                    raise
                pending = after
                yield table

    def _pace(self, worked: float) -> None:
        share = self.settings.cpu_share
        if 0 < share < 1 and worked > 0:
            self._sleep(worked * (1 - share) / share)

    # -- cold retention and compaction -------------------------------------------------------------------------------

    def apply_retention(self) -> int:
        """Delete expired files: manifest first (a crash leaves unlisted files, removed at the next start)."""
        now = self.wall_ms()
        doomed: list[TierFile] = []
        for topic in sorted({f.topic for f in self.manifest.files}):
            policy = self.settings.retention_for(topic)
            if policy.retention_ms is None and policy.retention_bytes is None:
                continue
            doomed += coldplan.retention_plan(self.manifest.files_of(topic), policy, now)
        if not doomed:
            return 0
        self.manifest = self.manifest.without_files({f.path for f in doomed})
        self.manifest.save(self.fs, self.log.data_dir)
        self._hook("retention_manifest_saved")
        self._delete(doomed)
        with self._stats_lock:
            self.c.retention_files += len(doomed)
            self.c.retention_bytes += sum(f.bytes for f in doomed)
        return len(doomed)

    def compact_days(self) -> int:
        s = self.settings
        today = layout.day_of(self.wall_ms())
        plans = coldplan.compaction_plan(self.manifest.files, small_bytes=s.compact_small_bytes,
                                         max_bytes=s.compact_max_bytes, today=today)
        done = 0
        for group in plans:
            if self.stopping.is_set():
                break
            t0 = time.monotonic()
            merged = compact.compact(self.root, group, s.parquet, self.wall_ms())
            if merged is None:
                continue
            self._hook("compaction_written")
            publish(self.root, [merged.path])
            self.manifest = self.manifest.without_files({f.path for f in group}, add=(merged,))
            self.manifest.save(self.fs, self.log.data_dir)
            self._hook("compaction_manifest_saved")
            self._delete(group)
            done += 1
            self._pace(time.monotonic() - t0)
        with self._stats_lock:
            self.c.compactions += done
        return done

    def _delete(self, doomed: list[TierFile]) -> None:
        dirs = set()
        for f in doomed:
            path = os.path.join(self.root, f.path)
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            dirs.add(os.path.dirname(path))
        for d in sorted(dirs):
            if os.path.isdir(d):
                self.fs.sync_dir(d)
                _remove_empty_dirs(d, self.root)

    # -- status ------------------------------------------------------------------------------------------------------

    def backlog(self) -> list[PartitionBacklog]:
        return backlog(self.log, self.manifest, self._topics())

    def statistics(self) -> TierStatistics:
        m = self.manifest
        c = self.c
        with self._stats_lock:
            return TierStatistics(
                segments_tiered=c.segments, rows_tiered=c.rows, bytes_written=c.bytes_written,
                payload_bytes_read=c.payload_bytes, decode_errors=c.decode_errors, skipped_offsets=c.skipped,
                retention_deleted_files=c.retention_files, retention_deleted_bytes=c.retention_bytes,
                compactions=c.compactions, passes=c.passes, errors=c.errors, last_error=c.last_error,
                last_pass_ms=c.last_pass_ms, busy_seconds=c.seconds, files=len(m.files),
                tier_bytes=m.total_bytes(), topic_bytes=tuple(sorted(
                    (t, m.total_bytes(t)) for t in {f.topic for f in m.files})),
                topic_rows=tuple(sorted(c.topic_rows.items())), backlog=tuple(self.backlog()),
                conflicts=tuple(sorted(self.conflicts.values())),
            )

    def record_error(self, exc: BaseException) -> None:
        with self._stats_lock:
            self.c.errors += 1
            self.c.last_error = str(exc)


class _Stopped(Exception):
    pass


def _min_offset(table: object) -> int:
    value = pc.min(table.column("offset")).as_py()  # type: ignore[attr-defined]
    assert isinstance(value, int)
    return value


def _remove_empty_dirs(path: str, root: str) -> None:
    """Remove `path` and its parents up to (not including) `root` while they are empty."""
    path = os.path.abspath(path)
    root = os.path.abspath(root)
    while path.startswith(root + os.sep) and os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)
        path = os.path.dirname(path)
