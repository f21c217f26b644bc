"""Frames: one batch of records as it is stored in a segment. Reader and writer of the format live here.

Frame header, 48 bytes, little-endian (`FRAME_HEADER`):

    off  size  field
      0     4  frame_len     total bytes of the frame, header included; the next frame starts at pos + frame_len
      4     4  header_crc    checksum of bytes 0..3 and 8..47 (length, offsets, epoch, counts, times)
      8     4  body_crc      checksum of the stored body (after compression)
     12     1  magic         0xE1
     13     1  attributes    bits 0-2 codec (Kafka ids: 0 none, 3 lz4, 4 zstd); bit 5 control frame
     14     2  record_count  1..65535; offsets inside the frame are implicit: base_offset + i
     16     8  base_offset
     24     4  epoch         the partition's epoch when the frame was written (raised after every unclean stop)
     28     4  raw_len       body length before compression
     32     8  first_ts      timestamp (ms) of the first record
     40     8  max_ts        largest timestamp in the frame

Body (before compression): for each record a fixed 16-byte header (`RECORD_HEADER`)

    ts_delta i32 (timestamp - first_ts) | key_len i32 (-1: no key) | value_len i32 | headers_len u32

followed by the key, the value and the headers blob. The headers blob is `count u16` then, per header,
`name_len u16, name (utf-8), value_len u32, value`. Fixed-width fields are packed and unpacked in C by `struct`
(7x faster than Kafka-style varints in Python, research/log-design.md 4) and the compressor removes the zeros.

A frame is valid iff: the magic matches; header_crc matches; frame_len >= 48 and the frame lies within the file;
base_offset is the offset the previous frame ended at; body_crc matches; and, when it is decoded, the body
decompresses to raw_len bytes that parse into exactly record_count records. A frame that fails any check ends the
readable log at its start: a torn tail after a crash looks exactly like that, and is "end of log", not an error.
The checksum function (CRC-32C or zlib CRC-32) is chosen per segment and recorded in the segment header.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from . import codec as codecs
from .checksum import Checksum

FRAME_HEADER = struct.Struct("<IIIBBHQIIqq")
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 48
_HEADER_TAIL = struct.Struct("<IBBHQIIqq")  # bytes 8..47: body_crc onwards
_U32 = struct.Struct("<I")
FRAME_MAGIC = 0xE1
ATTR_CODEC_MASK = 0x07
ATTR_CONTROL = 0x20

RECORD_HEADER = struct.Struct("<iiiI")
RECORD_HEADER_SIZE = RECORD_HEADER.size  # 16
_HDR_COUNT = struct.Struct("<H")
_HDR_NAME = struct.Struct("<H")
_HDR_VALUE = struct.Struct("<I")

MAX_RECORDS_PER_FRAME = 0xFFFF
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1

Headers = tuple[tuple[str, bytes], ...]


class RecordIn(NamedTuple):
    """A record to append: what a producer gives. Offsets and epoch are assigned by the partition."""

    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers = ()


class FrameHeader(NamedTuple):
    frame_len: int
    header_crc: int
    body_crc: int
    magic: int
    attributes: int
    record_count: int
    base_offset: int
    epoch: int
    raw_len: int
    first_ts: int
    max_ts: int

    @property
    def codec(self) -> int:
        return self.attributes & ATTR_CODEC_MASK

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.record_count

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.record_count - 1


class FrameError(ValueError):
    """Why bytes are not a valid frame. `reason` is short and stable (used in reports and counters)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def encode_headers(headers: Headers) -> bytes:
    if not headers:
        return b""
    parts = [_HDR_COUNT.pack(len(headers))]
    for name, value in headers:
        n = name.encode()
        parts.append(_HDR_NAME.pack(len(n)))
        parts.append(n)
        parts.append(_HDR_VALUE.pack(len(value)))
        parts.append(value)
    return b"".join(parts)


def decode_headers(blob: bytes | memoryview) -> Headers:
    if not blob:
        return ()
    mv = memoryview(blob)
    (count,) = _HDR_COUNT.unpack_from(mv, 0)
    pos = 2
    out = []
    for _ in range(count):
        (nlen,) = _HDR_NAME.unpack_from(mv, pos)
        pos += 2
        name = bytes(mv[pos : pos + nlen]).decode()
        pos += nlen
        (vlen,) = _HDR_VALUE.unpack_from(mv, pos)
        pos += 4
        if pos + vlen > len(mv):
            raise FrameError("bad_headers", "header value runs past the blob")
        out.append((name, bytes(mv[pos : pos + vlen])))
        pos += vlen
    if pos != len(mv):
        raise FrameError("bad_headers", f"{len(mv) - pos} stray bytes after headers")
    return tuple(out)


def record_size(rec: RecordIn) -> int:
    """Bytes a record takes in an uncompressed body (headers estimated cheaply when present)."""
    size = RECORD_HEADER_SIZE + len(rec.value) + (len(rec.key) if rec.key is not None else 0)
    if rec.headers:
        size += 2 + sum(6 + len(n) * 4 + len(v) for n, v in rec.headers)
    return size


def encode_body(records: Sequence[RecordIn], first_ts: int) -> tuple[bytes, int]:
    """Pack records into a frame body. Returns (body, max_ts). Every ts delta must fit in an i32."""
    parts: list[bytes] = []
    append = parts.append
    pack = RECORD_HEADER.pack
    max_ts = first_ts
    for ts, key, value, headers in records:
        if ts > max_ts:
            max_ts = ts
        hblob = encode_headers(headers) if headers else b""
        if key is None:
            append(pack(ts - first_ts, -1, len(value), len(hblob)))
        else:
            append(pack(ts - first_ts, len(key), len(value), len(hblob)))
            append(key)
        append(value)
        if hblob:
            append(hblob)
    return b"".join(parts), max_ts


def ts_fits(ts: int, first_ts: int) -> bool:
    return _I32_MIN <= ts - first_ts <= _I32_MAX


def encode_frame(
    records: Sequence[RecordIn],
    *,
    base_offset: int,
    epoch: int,
    codec: int,
    level: int,
    checksum: Checksum,
    control: bool = False,
) -> bytes:
    """One frame holding `records` (1..65535, timestamps within an i32 of the first)."""
    n = len(records)
    if not 0 < n <= MAX_RECORDS_PER_FRAME:
        raise ValueError(f"a frame holds 1..{MAX_RECORDS_PER_FRAME} records, not {n}")
    first_ts = records[0][0]
    body, max_ts = encode_body(records, first_ts)
    used, stored = codecs.compress(codec, body, level)
    attributes = used | (ATTR_CONTROL if control else 0)
    frame_len = FRAME_HEADER_SIZE + len(stored)
    tail = _HEADER_TAIL.pack(
        checksum(stored), FRAME_MAGIC, attributes, n, base_offset, epoch, len(body), first_ts, max_ts
    )
    len_bytes = _U32.pack(frame_len)
    header_crc = checksum(len_bytes + tail)
    return b"".join((len_bytes, _U32.pack(header_crc), tail, stored))


def parse_header(buf: bytes | memoryview, checksum: Checksum) -> FrameHeader:
    """Check and unpack a 48-byte frame header. Raises FrameError with a stable reason."""
    if len(buf) < FRAME_HEADER_SIZE:
        raise FrameError("short_header", f"{len(buf)} of {FRAME_HEADER_SIZE} bytes")
    h = FrameHeader._make(FRAME_HEADER.unpack_from(buf, 0))
    if h.magic != FRAME_MAGIC:
        raise FrameError("bad_magic", f"0x{h.magic:02x}")
    mv = memoryview(buf)
    if checksum(bytes(mv[0:4]) + bytes(mv[8:FRAME_HEADER_SIZE])) != h.header_crc:
        raise FrameError("header_crc")
    if h.frame_len < FRAME_HEADER_SIZE:
        raise FrameError("bad_length", f"frame_len {h.frame_len}")
    if h.record_count == 0:
        raise FrameError("bad_count", "zero records")
    if h.codec not in codecs.IDS:
        raise FrameError("bad_codec", f"codec id {h.codec}")
    return h


def check_body(h: FrameHeader, stored: bytes | memoryview, checksum: Checksum) -> None:
    if len(stored) != h.frame_len - FRAME_HEADER_SIZE:
        raise FrameError("short_body", f"{len(stored)} of {h.frame_len - FRAME_HEADER_SIZE} bytes")
    if checksum(stored) != h.body_crc:
        raise FrameError("body_crc")


class Record(NamedTuple):
    """A stored record. (log id, epoch, partition, offset) names it for good: the mirror sends that identity
    upstream so the centre can drop duplicates."""

    topic: str
    partition: int
    offset: int
    epoch: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers


def decode_body(h: FrameHeader, stored: bytes | memoryview, topic: str = "", partition: int = 0) -> list[Record]:
    """Decompress and parse a body whose CRC was already checked. Records are built directly (tuple.__new__):
    reading is the mirror's and the tierer's hot path."""
    try:
        raw = codecs.decompress(h.codec, stored, h.raw_len)
    except codecs.DecompressError as exc:
        raise FrameError("decompress", str(exc)) from exc
    out: list[Record] = []
    append = out.append
    unpack = RECORD_HEADER.unpack_from
    new = tuple.__new__
    pos = 0
    end = len(raw)
    offset = h.base_offset
    epoch = h.epoch
    first_ts = h.first_ts
    key: bytes | None
    try:
        for _ in range(h.record_count):
            dts, klen, vlen, hlen = unpack(raw, pos)
            pos += 16
            if klen >= 0:
                key = raw[pos : pos + klen]
                pos += klen
            else:
                key = None
            if vlen < 0:
                raise FrameError("bad_record", f"record {offset} has a negative length")
            value = raw[pos : pos + vlen]
            pos += vlen
            if hlen:
                headers = decode_headers(raw[pos : pos + hlen])
                pos += hlen
            else:
                headers = ()
            append(new(Record, (topic, partition, offset, epoch, first_ts + dts, key, value, headers)))
            offset += 1
    except struct.error as exc:
        raise FrameError("bad_record", str(exc)) from exc
    if pos != end:
        raise FrameError("bad_record", f"{end - pos} stray bytes after {h.record_count} records"
                         if pos < end else f"records run {pos - end} bytes past the body")
    return out


def decode_frame(buf: bytes | memoryview, checksum: Checksum) -> tuple[FrameHeader, list[Record]]:
    """Parse one whole frame (header + body). Convenience for tests and tools; readers use the parts."""
    h = parse_header(buf, checksum)
    stored = memoryview(buf)[FRAME_HEADER_SIZE : h.frame_len]
    check_body(h, stored, checksum)
    return h, decode_body(h, stored)
