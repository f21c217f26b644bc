"""Recompression: repack sealed segments of small frames into big frames, in the background.

Why: group commit writes one frame per round. At a few hundred sensor readings per second (linger 5 ms) a frame
holds 2-3 records of ~120 B JSON and zstd finds nothing to share inside it (measured ~1.0x, ~5 GB/day at 500
records/s), while the same data in 256 KiB frames takes ~0.1 byte per payload byte. Once a segment is sealed its
records never change, so a copy with the same records in big frames can take its place.

What a copy holds: the same records, byte for byte (offsets, epochs, timestamps, keys, values, headers), in frames
of up to `frame_bytes` raw body bytes with the topic's codec and level. Frames are joined at the column level (the
four per-record arrays and the record bytes, store.frame), never record by record; frames of different epochs are
never joined (the epoch is per frame); a control frame is copied as it is. The copy's header is the old one with
the `repacked` flag (store.segment), so a repacked segment is never done again, across restarts too.

Which segments: sealed ones whose frames average under a quarter of `frame_bytes` of raw body (`worth_repacking`).
Frames that full are what group commit builds under load, and they compress as well as a repacked copy would; the
rule needs only the 48-byte frame headers. A copy replaces the segment only if it saves at least
`_MIN_SAVING` of the file: otherwise the temp file is dropped and the segment is left alone.

Where the work runs: decoding and re-encoding run on one background thread per Log (`Recompressor`), paced to
`cpu_share` of a core like the tierer and at a lower OS priority, never on the writer thread (it would delay
acks). Only the swap itself runs on the writer thread (`swap_segment`, through `writer.call`), so it
is serialized with appends, rolls, retention, the scrub and quarantine. The crash story is in that method.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from operator import add
from typing import TYPE_CHECKING, Any, TypeVar

from .checksum import Checksum
from .durable import TMP_SUFFIX
from .errors import CorruptFrameError, LogClosedError, StoreError
from .frame import (
    ATTR_CONTROL,
    FRAME_HEADER,
    MAX_RECORDS_PER_FRAME,
    BodyColumns,
    FrameError,
    FrameHeader,
    body_columns,
    pack_frame,
    ts_range_fits,
)
from .segment import SEGMENT_HEADER_SIZE, Segment
from .stats import RecompressStatistics

if TYPE_CHECKING:
    from .fs import FileSystem
    from .partition import Partition

T = TypeVar("T")

log = logging.getLogger("edgestream.store.recompress")

_MIN_SAVING = 0.10  # a copy must be at least this much smaller, or a rewrite of flash buys nothing worth it
_FULL_FRAME_SHARE = 4  # frames averaging under frame_bytes / 4 of raw body are "small"
_PACE_EVERY_S = 0.05  # CPU time between pacing pauses: short enough to keep the writer's GIL waits small
_NICE = 10  # background work: the kernel prefers the writer, the syncer and the sources
_LITTLE = sys.byteorder == "little"


def worth_repacking(frames: int, raw_bytes: int, frame_bytes: int) -> bool:
    """The rule: at least two frames, averaging under a quarter of `frame_bytes` of raw body."""
    return frames >= 2 and raw_bytes < frames * frame_bytes // _FULL_FRAME_SHARE


@dataclass(frozen=True, slots=True)
class Packed:
    """One frame of the copy: header bytes, stored body, parsed header."""

    head: bytes
    stored: bytes
    header: FrameHeader


class FramePacker:
    """Joins decoded frames into big ones (sans-I/O): `add` the frames of a segment in order, `finish` at the end;
    both return the packed frames that are complete."""

    def __init__(self, frame_bytes: int, codec: int, level: int, checksum: Checksum) -> None:
        self._frame_bytes = frame_bytes
        self._codec = codec
        self._level = level
        self._checksum = checksum
        self._group: list[BodyColumns] = []
        self._raw = 0
        self._count = 0

    def add(self, body: BodyColumns, stored: bytes) -> list[Packed]:
        h = body.header
        out: list[Packed] = []
        if h.attributes & ATTR_CONTROL:  # never joined: copied as it is
            out += self.finish()
            return [*out, Packed(FRAME_HEADER.pack(*h), bytes(stored), h)]
        if self._group and not self._fits(body):
            out += self.finish()
        self._group.append(body)
        self._raw += h.raw_len
        self._count += h.record_count
        return out

    def _fits(self, body: BodyColumns) -> bool:
        h = body.header
        first = self._group[0].header
        lo = h.first_ts + min(body.ts_deltas)
        return (
            h.epoch == first.epoch
            and self._raw + h.raw_len <= self._frame_bytes
            and self._count + h.record_count <= MAX_RECORDS_PER_FRAME
            and ts_range_fits(lo, h.max_ts, first.first_ts)
        )

    def finish(self) -> list[Packed]:
        if not self._group:
            return []
        group, self._group, self._raw, self._count = self._group, [], 0, 0
        first = group[0].header
        raw = join_bodies(group)
        head, stored, header = pack_frame(
            raw,
            record_count=sum(b.header.record_count for b in group),
            first_ts=first.first_ts,
            max_ts=max(b.header.max_ts for b in group),
            base_offset=first.base_offset,
            epoch=first.epoch,
            codec=self._codec,
            level=self._level,
            checksum=self._checksum,
        )
        return [Packed(head, stored, header)]


def join_bodies(group: list[BodyColumns]) -> bytes:
    """The raw body of one frame holding the records of `group` (consecutive frames, one epoch) in order: the
    four arrays concatenated (timestamp deltas moved onto the first frame's first_ts) and the record bytes."""
    first_ts = group[0].header.first_ts
    ts, klens, vlens, hlens = array("i"), array("i"), array("i"), array("I")
    for b in group:
        shift = b.header.first_ts - first_ts
        ts.extend(b.ts_deltas if shift == 0 else array("i", map(add, b.ts_deltas, repeat(shift))))
        klens.extend(b.klens)
        vlens.extend(b.vlens)
        hlens.extend(b.hlens)
    if not _LITTLE:  # pragma: no cover - every target is little-endian
        for arr in (ts, klens, vlens, hlens):
            arr.byteswap()
    parts: list[bytes | memoryview] = [ts.tobytes(), klens.tobytes(), vlens.tobytes(), hlens.tobytes()]
    parts += [memoryview(b.raw)[b.data_start :] for b in group]
    return b"".join(parts)


# -- the I/O shell ---------------------------------------------------------------------------------------------------


def temp_path(seg: Segment) -> str:
    """`<base>.log.tmp`: recovery deletes every `*.tmp` at start-up, and no segment pattern matches it."""
    return seg.path + TMP_SUFFIX


class Stopped(Exception):
    """The recompressor was asked to stop part-way through a segment."""


def write_copy(seg: Segment, p: Partition, tmp: str, pace: Callable[[], None]) -> Segment:
    """Steps 1-2 (background thread): write the repacked copy of `seg` to `tmp` and fdatasync it; check it by a
    full scan (every checksum, contiguous offsets, bodies that decode) and return its `Segment` (sealed, its handle
    open on the temp file's inode, its index built). Raises OSError, CorruptFrameError, Stopped."""
    fs = seg.fs
    cfg = p.config
    header = seg.header
    new_header = type(header)(header.partition, header.base_offset, header.log_id, header.epoch, header.created_ms,
                              header.use_crc32c, True)
    packer = FramePacker(cfg.frame_bytes, cfg.codec_id, cfg.compression_level, seg.checksum)
    out = fs.open_new(tmp)
    try:
        out.write(new_header.encode())
        for pos, h, body in seg.walk(SEGMENT_HEADER_SIZE, seg.size):
            stored = body(pos, h)  # checks the body CRC
            try:
                cols = body_columns(h, stored)
            except FrameError as exc:
                raise CorruptFrameError(seg.path, pos, exc.reason) from exc
            _write(out, packer.add(cols, stored))
            pace()
        _write(out, packer.finish())
        out.sync()
    finally:
        out.close()
    new = Segment(fs, seg.directory, new_header, fs.file_size(tmp))
    new.index.interval_bytes = cfg.index_interval_bytes
    new.sealed = True
    new._handle = fs.open_read(tmp)  # the same inode is the segment after the rename
    try:
        result = new.scan(verify_bodies=True)
        if result.error is not None:
            raise CorruptFrameError(tmp, result.end_position, result.error.reason)
        for pos, h, body in new.walk(SEGMENT_HEADER_SIZE, new.size):
            try:
                body_columns(h, body(pos, h))
            except FrameError as exc:
                raise CorruptFrameError(tmp, pos, exc.reason) from exc
        if (new.next_offset, new.max_ts, new.max_epoch) != (seg.next_offset, seg.max_ts, seg.max_epoch):
            raise CorruptFrameError(tmp, new.size, "copy_mismatch")
    except BaseException:
        new.close()
        raise
    return new


def _write(out: Any, packed: list[Packed]) -> None:
    if packed:
        out.writev([b for f in packed for b in (f.head, f.stored)])


def swap_segment(p: Partition, old: Segment, new: Segment, tmp: str) -> bool:
    """Put a repacked copy of a sealed segment in its place (writer thread only: run through `writer.call`). `new` is
    written to `tmp` and fdatasync'ed, its index built, its handle open on the temp file.

    1. `old` must still be a sealed segment of this partition (retention may have deleted it, the scrub
       quarantined it, or the partition broke): else delete the temp file and return False;
    2. `os.replace` the temp file over the segment and fsync the directory. A crash before the rename is
       durable finds the old file (and the `*.tmp` is deleted at start-up); after it, the copy with the old
       `.idx`, which covers the old, larger size and so is ignored and rebuilt by a header scan;
    3. write the copy's `.idx` by durable replace;
    4. swap the Segment objects under the lock (done once step 2 happened, even if step 3 failed): a reader
       holding `old` keeps reading its open descriptor (the old inode lives until it is dropped); one that
       opens `old` lazily finds the copy's header and gets SegmentReplacedError, so it reads again from a
       fresh snapshot.
    """
    with p._lock:
        current = any(seg is old for seg in p.segments[:-1])
    if not current or p.broken is not None or not old.sealed:
        new.close()
        remove_quietly(p.fs, tmp)
        return False
    try:
        p.fs.replace(tmp, old.path)
    except OSError:
        new.close()
        remove_quietly(p.fs, tmp)
        raise
    try:
        p.fs.sync_dir(p.directory)
        new.write_index()
    finally:
        with p._lock:
            p.segments = [new if seg is old else seg for seg in p.segments]
        p.counters.recompressed_segments += 1
        p.counters.recompress_bytes_before += old.size
        p.counters.recompress_bytes_after += new.size
    return True


def remove_quietly(fs: FileSystem, path: str) -> None:
    try:
        fs.remove(path)
    except OSError:
        pass  # recovery deletes a left-over *.tmp at the next start


class Recompressor:
    """One per writable Log: a background thread that repacks eligible sealed segments every `interval_s`, and
    `run_pass` for a caller that wants it now. One pass at a time; one segment at a time under `busy`, which
    `Log.delete_topic` also takes so that no temp file appears in a directory being removed."""

    def __init__(
        self,
        partitions: Callable[[], list[Partition]],
        call: Callable[[Callable[[], Any]], Any],
        *,
        cpu_share: float,
        interval_s: float,
    ) -> None:
        self._partitions = partitions
        self._call = call
        self._cpu_share = cpu_share
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.busy = threading.RLock()
        self._pass_lock = threading.Lock()
        self._judged: weakref.WeakSet[Segment] = weakref.WeakSet()  # looked at, not worth it (this process)
        self._thread: threading.Thread | None = None
        self._stats_lock = threading.Lock()
        self._passes = 0
        self._segments = 0
        self._bytes_before = 0
        self._bytes_after = 0
        self._failures = 0
        self._skipped = 0
        self._cpu_seconds = 0.0
        self._raw_bytes = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgestream-recompress", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:  # Linux: a thread id is a process id for setpriority; raising the nice value needs no privilege
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
        except (AttributeError, OSError):
            pass
        while not self._stop.wait(self._interval_s):
            try:
                self.run_pass(pace=True)
            except Exception:  # the writer and readers carry on without it; the next pass tries again
                log.exception("recompression pass failed")
                with self._stats_lock:
                    self._failures += 1

    def run_pass(self, *, pace: bool = False) -> int:
        """Look at every sealed segment not yet repacked or judged; repack those worth it. Returns how many were
        replaced. Without `pace` it runs flat out (tests, an operator's request)."""
        done = 0
        with self._pass_lock:
            for p in self._partitions():
                if not p.config.recompress or p.config.codec_id == 0:
                    continue
                with p._lock:
                    sealed = p.segments[:-1]
                for seg in sealed:
                    if self._stop.is_set():
                        return done
                    if seg.header.repacked or seg in self._judged:
                        continue
                    try:
                        if self.recompress(p, seg, pace=pace):
                            done += 1
                    except Stopped:
                        return done
            with self._stats_lock:
                self._passes += 1
        return done

    def recompress(self, p: Partition, seg: Segment, *, pace: bool = False) -> bool:
        """Repack one sealed segment if it is worth it and put the copy in its place. True if it was replaced."""
        with self.busy:
            if p not in self._partitions() or p.broken is not None:
                return False
            t0 = time.thread_time()
            last = [t0]

            def pacer() -> None:
                if self._stop.is_set():
                    raise Stopped
                now = time.thread_time()
                if pace and now - last[0] >= _PACE_EVERY_S:
                    self._pace(now - last[0])
                    last[0] = time.thread_time()

            try:
                frames, raw = _measure(seg)
            except (OSError, StoreError) as exc:  # deleted, replaced or corrupt (the scrub deals with that)
                log.info("not recompressing %s: %s", seg.path, exc)
                self._judged.add(seg)
                return False
            if not worth_repacking(frames, raw, p.config.frame_bytes):
                self._judged.add(seg)
                return False
            if p.fs.free_bytes(p.directory) < p.log_config.min_free_bytes + seg.size:
                return False  # no room for the copy now: the next pass looks again
            tmp = temp_path(seg)
            try:
                new = write_copy(seg, p, tmp, pacer)
            except Stopped:
                remove_quietly(p.fs, tmp)
                raise
            except (OSError, StoreError) as exc:
                remove_quietly(p.fs, tmp)
                self._failed(p, seg, f"writing the copy failed: {exc}")
                return False
            finally:
                self._count_cpu(time.thread_time() - t0, raw)
            if new.size > seg.size * (1 - _MIN_SAVING):
                new.close()
                remove_quietly(p.fs, tmp)
                self._judged.add(seg)
                with self._stats_lock:
                    self._skipped += 1
                return False
            try:
                swapped = bool(self._call(lambda: swap_segment(p, seg, new, tmp)))
            except LogClosedError:
                new.close()
                remove_quietly(p.fs, tmp)
                raise Stopped from None
            except (OSError, StoreError) as exc:
                self._failed(p, seg, f"replacing the segment failed: {exc}")
                return False
            if not swapped:
                new.close()
                with self._stats_lock:
                    self._skipped += 1
                return False
            with self._stats_lock:
                self._segments += 1
                self._bytes_before += seg.size
                self._bytes_after += new.size
            log.info("recompressed %s: %d -> %d bytes", seg.path, seg.size, new.size)
            return True

    def _failed(self, p: Partition, seg: Segment, why: str) -> None:
        log.warning("%s/%d: %s (%s); the segment is left as it was", p.topic, p.index, why, seg.path)
        self._judged.add(seg)  # not again in this process: an I/O error is not worth a retry loop
        p.counters.recompress_failures += 1  # only this thread writes this counter
        with self._stats_lock:
            self._failures += 1

    def _count_cpu(self, seconds: float, raw: int) -> None:
        with self._stats_lock:
            self._cpu_seconds += seconds
            self._raw_bytes += raw

    def _pace(self, worked: float) -> None:
        share = self._cpu_share
        if 0 < share < 1 and worked > 0:
            self._stop.wait(worked * (1 - share) / share)

    def statistics(self) -> RecompressStatistics:
        with self._stats_lock:
            return RecompressStatistics(
                passes=self._passes,
                segments=self._segments,
                bytes_before=self._bytes_before,
                bytes_after=self._bytes_after,
                skipped=self._skipped,
                failures=self._failures,
                cpu_seconds=self._cpu_seconds,
                raw_bytes=self._raw_bytes,
            )


def _measure(seg: Segment) -> tuple[int, int]:
    """(frames, raw body bytes) of a segment from its frame headers only."""
    frames = raw = 0
    for _, h, _ in seg.walk(SEGMENT_HEADER_SIZE, seg.size):
        frames += 1
        raw += h.raw_len
    return frames, raw
