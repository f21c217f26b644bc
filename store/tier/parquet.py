"""Writing tier files: Arrow tables -> Parquet, the options that make them small and prunable, and the
write-temp / fsync / rename steps that make a file appear whole or not at all.

Layout choices (measured on simulated sensor JSON, 120 B/record; see BENCHMARKS.md):
- zstd level 3 for most columns; the raw payload (`value`, most of the bytes) gets level 1 by default: measured on
  945,000 sensor payloads (the tier benchmark), the whole tier came to 9.2% of the raw JSON at level 1, 10.0% at 3,
  9.7% at 5, 8.9% at 7 and 8.4% at 9, and level 1 compresses ~4x faster than 5 (zstd's fast levels find the long
  repeats of key-sorted payloads as well as the middle ones do). Raise it for flash that is short of space.
- Within each row group, rows are sorted by key then offset: payloads of one sensor sit together and compress
  ~20% better; row groups still hold consecutive offsets (and so a narrow time range), which is what pruning needs.
- int64 columns (offset, ts, integer fields) use DELTA_BINARY_PACKED; text columns use dictionaries.
- Statistics only where filters use them (partition, offset, epoch, ts and the decoded fields), not on payloads.
- Row groups of `row_group_rows` (default 131,072) bound the memory of writing and reading (~30 MB each) and make
  a time-range query read a few row groups, not the file.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import durable
from ..fs import OsFileSystem
from . import layout
from .manifest import TierFile

_NO_DICT = {"offset", "ts", "value", "headers"}
_NO_STATS = {"key", "value", "headers", "decode_error"}
_CRC_CHUNK = 4 << 20


@dataclass(frozen=True, slots=True)
class ParquetOptions:
    row_group_rows: int = 131_072
    row_group_bytes: int = 24 << 20  # and at most this many payload bytes (large records: bounded memory)
    compression_level: int = 3
    value_compression_level: int = 1


def sort_for_compression(table: pa.Table) -> pa.Table:
    """Rows by key, then offset (keyless rows last)."""
    n = table.num_rows
    if n < 2 or table.column("key").null_count == n:
        return table
    offsets = table.column("offset")
    if not pc.all(pc.less(offsets.slice(0, n - 1), offsets.slice(1))).as_py():
        return table.sort_by([("key", "ascending"), ("offset", "ascending")])
    return table.take(key_order(table.column("key")))


def key_order(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The indices that sort rows by key (nulls last), rows of one key in their order. Keys are ranked through
    their dictionary: a stable sort of int32 ranks is ~6x faster than comparing the keys' bytes."""
    codes = keys.combine_chunks().dictionary_encode() if isinstance(keys, pa.ChunkedArray) else keys.dictionary_encode()
    rank = pc.rank(codes.dictionary, sort_keys="ascending", tiebreaker="first")
    return pc.sort_indices(pc.take(rank, codes.indices))


def writer_kwargs(schema: pa.Schema, opts: ParquetOptions) -> dict[str, object]:
    delta = [f.name for f in schema if f.name in ("offset", "ts") or (pa.types.is_int64(f.type) and f.name != "offset")]
    levels = {f.name: opts.compression_level for f in schema}
    levels["value"] = opts.value_compression_level
    return {
        "compression": "zstd",
        "compression_level": levels,
        "use_dictionary": [f.name for f in schema if f.name not in _NO_DICT and f.name not in delta],
        "column_encoding": dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
        "write_statistics": [f.name for f in schema if f.name not in _NO_STATS],
    }


class PendingFile:
    """One Parquet file being written as `<final>.tmp`. `finish()` makes it durable and returns its entry;
    the caller renames it (`publish`) only when every file of the step is ready."""

    def __init__(self, root: str, relpath: str, topic: str, partition: int, schema: pa.Schema,
                 opts: ParquetOptions) -> None:
        self.root = root
        self.relpath = relpath
        self.topic = topic
        self.partition = partition
        self.schema = schema
        self.path = os.path.join(root, relpath)
        self.tmp = self.path + layout.TMP
        durable.ensure_dir(OsFileSystem(), os.path.dirname(self.path))
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self.tmp, schema, **writer_kwargs(schema, opts))
        self.rows = 0
        self.first_offset: int | None = None
        self.last_offset = -1
        self.min_ts: int | None = None
        self.max_ts: int | None = None

    def fits(self, table: pa.Table) -> pa.Table | None:
        """`table` in this file's schema if it can be written here without losing anything, else None."""
        if table.schema.equals(self.schema):
            return table
        names = set(table.column_names)
        if not names <= set(self.schema.names):
            return None
        arrays = []
        for f in self.schema:
            if f.name not in names:
                arrays.append(pa.nulls(table.num_rows, f.type))
                continue
            col = table.column(f.name)
            if col.type == f.type:
                arrays.append(col)
            elif pa.types.is_null(col.type) or (pa.types.is_int64(col.type) and pa.types.is_float64(f.type)):
                arrays.append(col.cast(f.type))
            else:
                return None
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def write(self, table: pa.Table) -> None:
        assert self._writer is not None
        self._writer.write_table(table, row_group_size=table.num_rows)
        offsets = pc.min_max(table.column("offset"))
        stamps = pc.min_max(table.column("ts").cast(pa.int64()))
        lo, hi = offsets["min"].as_py(), offsets["max"].as_py()
        tlo, thi = stamps["min"].as_py(), stamps["max"].as_py()
        self.first_offset = lo if self.first_offset is None else min(self.first_offset, lo)
        self.last_offset = max(self.last_offset, hi)
        self.min_ts = tlo if self.min_ts is None else min(self.min_ts, tlo)
        self.max_ts = thi if self.max_ts is None else max(self.max_ts, thi)
        self.rows += table.num_rows

    def finish(self, now_ms: int) -> TierFile:
        """Close, fsync and checksum the temp file (not yet renamed)."""
        assert self._writer is not None and self.first_offset is not None
        self._writer.close()
        self._writer = None
        crc, size = fsync_and_crc(self.tmp)
        return TierFile(self.relpath, self.topic, self.partition, self.first_offset, self.last_offset, self.rows,
                        self.min_ts or 0, self.max_ts or 0, size, crc, now_ms)

    def abandon(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, pa.ArrowException):
                pass
            self._writer = None
        try:
            os.remove(self.tmp)
        except FileNotFoundError:
            pass


def fsync_and_crc(path: str) -> tuple[int, int]:
    """fsync a file and return (zlib CRC-32, size). The bytes are still in the page cache: cheap."""
    crc = 0
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
        while chunk := os.read(fd, _CRC_CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    finally:
        os.close(fd)
    return crc, size


def file_crc(path: str) -> int:
    with open(path, "rb") as f:
        crc = 0
        while chunk := f.read(_CRC_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def publish(root: str, relpaths: list[str]) -> None:
    """Rename each `<path>.tmp` to `<path>`, then fsync the directories once: the files exist for good."""
    fs = OsFileSystem()
    dirs = set()
    for rel in relpaths:
        path = os.path.join(root, rel)
        os.replace(path + layout.TMP, path)
        dirs.add(os.path.dirname(path))
    for d in sorted(dirs):
        fs.sync_dir(d)


def day_groups(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """Split rows by the UTC day of `ts`: one (YYYY-MM-DD, rows) per day, in day order."""
    days = pc.divide(table.column("ts").cast(pa.int64()), layout.DAY_MS)
    mm = pc.min_max(days)
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    if lo == hi:
        return [(layout.day_of(lo * layout.DAY_MS), table)]
    out = []
    for d in pc.unique(days).sort().to_pylist():
        out.append((layout.day_of(d * layout.DAY_MS), table.filter(pc.equal(days, d))))
    return out
