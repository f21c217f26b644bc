"""Segment: one `<base>.log` file of a partition, and its header format.

Segment header, 64 bytes, little-endian (`SEGMENT_HEADER`):

    off  size  field
      0     8  magic          b"EDGLOG01"
      8     2  version        1
     10     2  flags          bit 0: frames use CRC-32C (else zlib CRC-32); bit 1: repacked (store.recompress
                              rewrote the sealed segment's frames into bigger ones; same records, same offsets)
     12     4  partition
     16     8  base_offset    also the file name (%020d)
     24    16  log_id         16 random bytes made when the partition was created
     40     4  epoch          the partition's epoch when the segment was created
     44     8  created_ms
     52     8  reserved       zero
     60     4  header_crc     zlib CRC-32 of bytes 0..59

Frames (store.frame) follow back to back. A segment is valid iff its header is, and every frame up to the end is
valid and continues the offsets of the one before. The active (last) segment may end in a torn frame after a
crash: recovery truncates it there. Sealed segments are never appended to again; their `.idx` is written at seal.
A sealed segment may be replaced once, whole, by a repacked copy (store.recompress): a `Segment` object describes
the file it was opened on, so a lazily opened handle that finds the other header raises SegmentReplacedError and the
reader takes a fresh snapshot.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import files
from .checksum import Checksum, crc32, for_flag
from .errors import CorruptFrameError, CorruptSegmentError, CorruptStateError, StoreError
from .frame import FRAME_HEADER_SIZE, FrameError, FrameHeader, check_body, parse_header
from .fs import FileHandle, FileSystem
from .index import TS_MIN, IndexSummary, OffsetIndex

SEGMENT_HEADER = struct.Struct("<8sHHIQ16sIq8sI")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 64
SEGMENT_MAGIC = b"EDGLOG01"
SEGMENT_VERSION = 1
FLAG_CRC32C = 0x1
FLAG_REPACKED = 0x2



class SegmentReplacedError(StoreError, FileNotFoundError):
    """The path of a sealed segment names a repacked copy now (store.recompress), not the file this `Segment`
    object was opened on. A FileNotFoundError, like a segment retention deleted: readers take a fresh snapshot of
    the segment list and read again."""

    retriable = True

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} was replaced by a repacked copy; read again from a fresh segment list")
        self.path = path


BodyReader = Callable[[int, FrameHeader], bytes]
_READ_CHUNK = 1 << 20  # 1 MiB reads when scanning: few syscalls, bounded memory
_READ_WINDOW = 128 << 10  # readers: a few compressed frames per pread, not a MiB for a 1,000-record read


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    partition: int
    base_offset: int
    log_id: bytes
    epoch: int
    created_ms: int
    use_crc32c: bool
    repacked: bool = False

    def encode(self) -> bytes:
        head = SEGMENT_HEADER.pack(
            SEGMENT_MAGIC,
            SEGMENT_VERSION,
            (FLAG_CRC32C if self.use_crc32c else 0) | (FLAG_REPACKED if self.repacked else 0),
            self.partition,
            self.base_offset,
            self.log_id,
            self.epoch,
            self.created_ms,
            b"\0" * 8,
            0,
        )
        return head[:-4] + struct.pack("<I", crc32(head[:-4]))

    @classmethod
    def decode(cls, path: str, data: bytes) -> SegmentHeader:
        if len(data) < SEGMENT_HEADER_SIZE:
            raise CorruptSegmentError(path, f"header is {len(data)} of {SEGMENT_HEADER_SIZE} bytes")
        magic, version, flags, partition, base, log_id, epoch, created, _, crc = SEGMENT_HEADER.unpack_from(data)
        if magic != SEGMENT_MAGIC:
            raise CorruptSegmentError(path, f"bad magic {magic!r}")
        if crc32(data[: SEGMENT_HEADER_SIZE - 4]) != crc:
            raise CorruptSegmentError(path, "header CRC mismatch")
        if version != SEGMENT_VERSION:
            raise CorruptSegmentError(path, f"format version {version}; this edgestream reads {SEGMENT_VERSION}")
        return cls(partition, base, log_id, epoch, created, bool(flags & FLAG_CRC32C), bool(flags & FLAG_REPACKED))


@dataclass(slots=True)
class ScanResult:
    """What a scan of a segment found. `error` is None when every byte up to the end was valid frames."""

    end_position: int
    next_offset: int
    max_ts: int
    max_epoch: int
    frames: int
    records: int
    error: FrameError | None = None

    @property
    def clean(self) -> bool:
        return self.error is None


def _replaced(path: str, header: SegmentHeader, found: bytes) -> bool:
    """Whether the header read from `path` belongs to another file than the one `header` was read from. A header
    that does not decode is left to the frame checks, as before a replace could happen."""
    try:
        return SegmentHeader.decode(path, found) != header
    except CorruptSegmentError:
        return False


class _ChunkReader:
    """Sequential reads of a file through a 1 MiB window: one pread per MiB, not two per frame."""

    def __init__(self, handle: FileHandle, size: int, chunk: int = _READ_CHUNK) -> None:
        self._h = handle
        self._size = size
        self._chunk = chunk
        self._buf = b""
        self._start = 0

    def read(self, pos: int, n: int) -> bytes:
        end = pos + n
        if pos >= self._start and end <= self._start + len(self._buf):
            return self._buf[pos - self._start : end - self._start]
        want = max(n, self._chunk)
        self._buf = self._h.pread(min(want, self._size - pos), pos)
        self._start = pos
        return self._buf[:n]


class Segment:
    """One segment file. Appends come only from the partition's writer; reads from any thread (pread)."""

    def __init__(self, fs: FileSystem, directory: str, header: SegmentHeader, size: int) -> None:
        self.fs = fs
        self.directory = directory
        self.header = header
        self.base_offset = header.base_offset
        self.path = os.path.join(directory, files.segment_name(header.base_offset))
        self.index_path = os.path.join(directory, files.index_name(header.base_offset))
        self.checksum: Checksum = for_flag(header.use_crc32c)
        self.size = size  # bytes of valid frames + header (the writer's view)
        self.next_offset = header.base_offset  # offset after the last record
        self.max_ts = TS_MIN
        self.max_epoch = header.epoch
        self.index = OffsetIndex(header.base_offset)
        self.sealed = False
        self._handle: FileHandle | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, fs: FileSystem, directory: str, header: SegmentHeader) -> Segment:
        """Create the file with its header, durable (file and directory entry) before it returns."""
        seg = cls(fs, directory, header, SEGMENT_HEADER_SIZE)
        handle = fs.open_append(seg.path)
        try:
            handle.truncate(0)
            handle.write(header.encode())
            handle.sync()
            fs.sync_dir(directory)
        except BaseException:
            handle.close()
            try:  # a half-made segment would look like a torn roll to recovery; better none at all
                fs.remove(seg.path)
            except OSError:
                pass
            raise
        seg._handle = handle
        return seg

    @classmethod
    def open(cls, fs: FileSystem, directory: str, base_offset: int) -> Segment:
        """Open an existing segment: check its header only. Call `load_index` or `scan` to learn its frames."""
        path = os.path.join(directory, files.segment_name(base_offset))
        handle = fs.open_read(path)
        try:
            size = handle.size()
            header = SegmentHeader.decode(path, handle.pread(SEGMENT_HEADER_SIZE, 0))
        finally:
            handle.close()
        if header.base_offset != base_offset:
            raise CorruptSegmentError(path, f"header says base offset {header.base_offset}, name says {base_offset}")
        return cls(fs, directory, header, size)

    @property
    def empty(self) -> bool:
        return self.next_offset == self.base_offset

    def handle(self) -> FileHandle:
        h = self._handle
        if h is None:
            if not self.sealed:
                h = self._handle = self.fs.open_append(self.path)
                return h
            h = self.fs.open_read(self.path)
            try:
                found = h.pread(SEGMENT_HEADER_SIZE, 0)
            except BaseException:
                h.close()
                raise
            if _replaced(self.path, self.header, found):
                # The path now names a repacked copy: this object's index and size describe the old file.
                h.close()
                raise SegmentReplacedError(self.path)
            self._handle = h
        return h

    def writable(self) -> FileHandle:
        """The handle appends go through (reopened for append if the segment was opened read-only)."""
        if self._handle is None:
            self._handle = self.fs.open_append(self.path)
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            h, self._handle = self._handle, None
            h.close()

    # -- index ---------------------------------------------------------------------------------------------------

    def load_index(self) -> bool:
        """Use the `.idx` if it is intact and covers exactly this file. False means: scan instead."""
        try:
            index, summary = OffsetIndex.read(self.fs, self.index_path)
        except (OSError, ValueError, CorruptStateError):
            return False
        if summary.base_offset != self.base_offset or summary.covered_bytes != self.size:
            return False
        self.index = index
        self.next_offset = summary.next_offset
        self.max_ts = summary.max_ts
        self.max_epoch = max(self.max_epoch, summary.max_epoch)
        return True

    def write_index(self) -> None:
        self.index.write(
            self.fs,
            self.index_path,
            IndexSummary(self.base_offset, self.next_offset, self.size, self.max_ts, self.max_epoch),
        )

    # -- scanning ------------------------------------------------------------------------------------------------

    def scan(self, *, verify_bodies: bool) -> ScanResult:
        """Walk every frame from the start, rebuilding the index. Stops at the first invalid frame.

        Sets `next_offset`, `max_ts`, `max_epoch` from what is valid. Does not truncate: the caller decides.
        """
        handle = self.handle()
        file_size = handle.size()
        reader = _ChunkReader(handle, file_size)
        self.index = OffsetIndex(self.base_offset, self.index.interval_bytes)
        pos = SEGMENT_HEADER_SIZE
        expect = self.base_offset
        max_ts = TS_MIN
        max_epoch = self.header.epoch
        frames = records = 0
        error: FrameError | None = None
        while pos < file_size:
            try:
                h = parse_header(reader.read(pos, min(FRAME_HEADER_SIZE, file_size - pos)), self.checksum)
                if pos + h.frame_len > file_size:
                    raise FrameError("beyond_end", f"frame of {h.frame_len} bytes at {pos}, file is {file_size}")
                if h.base_offset != expect:
                    raise FrameError("offset_gap", f"frame starts at offset {h.base_offset}, expected {expect}")
                if verify_bodies:
                    check_body(h, reader.read(pos + FRAME_HEADER_SIZE, h.frame_len - FRAME_HEADER_SIZE), self.checksum)
            except FrameError as exc:
                error = exc
                break
            self.index.maybe_add(h.base_offset, pos, max_ts)
            max_ts = max(max_ts, h.max_ts)
            max_epoch = max(max_epoch, h.epoch)
            expect = h.next_offset
            pos += h.frame_len
            frames += 1
            records += h.record_count
        self.size = pos
        self.next_offset = expect
        self.max_ts = max_ts
        self.max_epoch = max_epoch
        return ScanResult(pos, expect, max_ts, max_epoch, frames, records, error)

    # -- writing (partition writer only) -------------------------------------------------------------------------

    def append_frames(self, buffers: list[bytes], frames: list[FrameHeader]) -> None:
        """Write already-encoded frames (one gathered write) and index them. On OSError the caller truncates
        back."""
        self.writable().writev(buffers)
        pos = self.size
        for h in frames:
            self.index.maybe_add(h.base_offset, pos, self.max_ts)
            if h.max_ts > self.max_ts:
                self.max_ts = h.max_ts
            if h.epoch > self.max_epoch:
                self.max_epoch = h.epoch
            pos += h.frame_len
        self.size = pos
        self.next_offset = frames[-1].next_offset

    def sync(self) -> None:
        self.writable().sync()

    def truncate(self, position: int, next_offset: int) -> None:
        """Cut the file at a frame boundary (recovery, or undoing a partial write). Durable when it returns."""
        handle = self.writable()
        handle.truncate(position)
        handle.sync()
        self.size = position
        self.next_offset = next_offset
        self.index.truncate_to(position)

    def seal(self) -> None:
        """No more appends: make the data durable, then write the index (durable replace)."""
        if self._handle is not None:
            self._handle.sync()
        self.write_index()
        self.sealed = True

    # -- reading -------------------------------------------------------------------------------------------------

    def frames(self, start: int, end: int) -> Iterator[tuple[FrameHeader, bytes]]:
        """Frames (header, checked stored body) between byte positions `start` and `end` (a frame boundary).
        Raises CorruptFrameError at a frame that fails its checks."""
        for pos, h, body in self.walk(start, end):
            yield h, body(pos, h)

    def walk(self, start: int, end: int) -> Iterator[tuple[int, FrameHeader, BodyReader]]:
        """(position, header, body reader) of each frame from `start` to `end`: a reader skipping frames reads
        only their 48-byte headers; `body(pos, h)` reads and checks the body when it is wanted."""
        reader = _ChunkReader(self.handle(), end, _READ_WINDOW)
        checksum = self.checksum
        path = self.path

        def body(pos: int, h: FrameHeader) -> bytes:
            data = reader.read(pos + FRAME_HEADER_SIZE, h.frame_len - FRAME_HEADER_SIZE)
            try:
                check_body(h, data, checksum)
            except FrameError as exc:
                raise CorruptFrameError(path, pos, exc.reason) from exc
            return data

        pos = start
        while pos < end:
            try:
                h = parse_header(reader.read(pos, FRAME_HEADER_SIZE), checksum)
            except FrameError as exc:
                raise CorruptFrameError(path, pos, exc.reason) from exc
            if pos + h.frame_len > end:
                raise CorruptFrameError(path, pos, "beyond_end")
            yield pos, h, body
            pos += h.frame_len

    # -- removal -------------------------------------------------------------------------------------------------

    def delete(self) -> None:
        """Remove the segment and its index (retention). Readers holding the handle can finish."""
        self._handle = None  # an open descriptor keeps the data readable until garbage-collected
        for path in (self.path, self.index_path):
            try:
                self.fs.remove(path)
            except FileNotFoundError:
                pass

    def quarantine(self) -> str:
        """Rename a corrupt segment out of the way (never delete it) and drop its index. Returns the new path."""
        self.close()
        target = files.quarantine_path(self.fs, self.path)
        self.fs.replace(self.path, target)
        try:
            self.fs.remove(self.index_path)
        except FileNotFoundError:
            pass
        self.fs.sync_dir(self.directory)
        return target
