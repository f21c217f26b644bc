"""Round trips of every on-disk format of the store (frame, segment header, index, state, envelope, cursor file),
fed whole and, where a reader meets a growing file, one byte at a time; a changed byte anywhere is detected."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgestream.store import CorruptStateError, RecordIn
from edgestream.store import codec as codecs
from edgestream.store.checksum import crc32, crc32c
from edgestream.store.cursors import CursorPosition, CursorStore
from edgestream.store.durable import envelope, open_envelope
from edgestream.store.frame import (
    FRAME_HEADER_SIZE,
    FrameError,
    batch_info,
    check_body,
    decode_body,
    decode_frame,
    encode_frame,
    parse_header,
)
from edgestream.store.index import IndexSummary, OffsetIndex
from edgestream.store.segment import SEGMENT_HEADER_SIZE, Segment, SegmentHeader
from edgestream.store.simfs import SimFileSystem
from edgestream.store.state import PartitionState

TS = 1_700_000_000_000

headers_st = st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=12)), max_size=3).map(tuple)
record_st = st.builds(
    RecordIn,
    st.integers(TS - 2**31 + 1, TS + 2**31 - 1),
    st.one_of(st.none(), st.binary(max_size=16)),
    st.binary(max_size=300),
    headers_st,
)


def _frame(records: list[RecordIn], codec: int = codecs.ZSTD, checksum: object = crc32c, base: int = 100) -> bytes:
    return encode_frame(records, base_offset=base, epoch=3, codec=codec, level=1, checksum=checksum)  # type: ignore


@settings(max_examples=150, deadline=None)
@given(st.lists(record_st, min_size=1, max_size=40), st.sampled_from([codecs.NONE, codecs.LZ4, codecs.ZSTD]),
       st.sampled_from([crc32, crc32c]))
def test_frame_round_trip(records: list[RecordIn], codec: int, checksum: object) -> None:
    records[0] = records[0]._replace(timestamp_ms=TS)  # deltas are from the first record's timestamp
    data = _frame(records, codec, checksum)
    h, recs = decode_frame(data, checksum)  # type: ignore[arg-type]
    assert h.frame_len == len(data) and h.record_count == len(records) and h.epoch == 3
    assert h.max_ts == max(r.timestamp_ms for r in records) and h.first_ts == TS
    assert [(r.offset, r.epoch) for r in recs] == [(100 + i, 3) for i in range(len(records))]
    assert [(r.timestamp_ms, r.key, r.value, r.headers) for r in recs] == [tuple(r) for r in records]
    info = batch_info(records)
    assert info.ts_lo == min(r.timestamp_ms for r in records) and info.ts_hi == h.max_ts
    if not any(r.headers for r in records):
        assert info.nbytes == h.raw_len, "without headers the size estimate is exact"


def test_compression_falls_back_to_none_when_it_does_not_help() -> None:
    noise = random.Random(1).randbytes(2000)
    h, _ = decode_frame(_frame([RecordIn(TS, None, noise)]), crc32c)
    assert h.codec == codecs.NONE
    h, _ = decode_frame(_frame([RecordIn(TS, None, b"a" * 2000)]), crc32c)
    assert h.codec == codecs.ZSTD and h.frame_len < 200


@pytest.mark.parametrize("codec", [codecs.NONE, codecs.ZSTD])
def test_every_changed_byte_of_a_frame_is_detected(codec: int) -> None:
    records = [RecordIn(TS + i, b"k" if i % 2 else None, b"value-%d" % i * 30, (("h", b"x"),) if i == 1 else ())
               for i in range(5)]
    data = _frame(records, codec)
    for pos in range(len(data)):
        for bit in (0, 7):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            with pytest.raises(FrameError):
                h = parse_header(bytes(bad), crc32c)
                body = bytes(bad[FRAME_HEADER_SIZE : h.frame_len])
                check_body(h, body, crc32c)
                decode_body(h, body)


def test_batch_info_rejects_wrong_types() -> None:
    with pytest.raises(TypeError):
        batch_info([RecordIn(TS, None, "text")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        batch_info([RecordIn(1.5, None, b"x")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        batch_info([RecordIn(TS, "key", b"x")])  # type: ignore[arg-type]


def test_segment_header_round_trip_and_every_changed_byte_is_detected() -> None:
    h = SegmentHeader(partition=7, base_offset=12345, log_id=bytes(range(16)), epoch=4, created_ms=TS, use_crc32c=True)
    data = h.encode()
    assert len(data) == SEGMENT_HEADER_SIZE
    assert SegmentHeader.decode("p", data) == h
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(Exception, match="corrupt segment"):
            SegmentHeader.decode("p", bytes(bad))


def test_scan_of_a_growing_segment_fed_one_byte_at_a_time() -> None:
    """A reader scanning while the writer appends (or after a torn write) sees whole frames only, never raises."""
    fs = SimFileSystem(0)
    fs.makedirs("/d")
    header = SegmentHeader(0, 0, b"\1" * 16, 0, TS, True)
    frames = [_frame([RecordIn(TS + i, None, b"r%d" % i * (i + 1)) for i in range(k)], base=sum(range(1, k)))
              for k in range(1, 6)]
    full = header.encode() + b"".join(frames)
    ends = [SEGMENT_HEADER_SIZE]
    for f in frames:
        ends.append(ends[-1] + len(f))
    fs.write_file("/d/00000000000000000000.log", full[:SEGMENT_HEADER_SIZE])
    handle = fs.open_append("/d/00000000000000000000.log")
    seg = Segment.open(fs, "/d", 0)
    for n in range(SEGMENT_HEADER_SIZE, len(full) + 1):
        if n > SEGMENT_HEADER_SIZE:
            handle.write(full[n - 1 : n])
        result = seg.scan(verify_bodies=True)
        whole = max(i for i, e in enumerate(ends) if e <= n)
        assert result.end_position == ends[whole]
        assert result.next_offset == sum(range(1, whole + 1))
        assert result.clean == (n == ends[whole])


def test_index_round_trip_lookup_and_corruption() -> None:
    idx = OffsetIndex(1000, interval_bytes=100)
    ts = -(2**63)
    for i, pos in enumerate(range(64, 5000, 60)):
        idx.maybe_add(1000 + 3 * i, pos, ts)
        ts = TS + i
    summary = IndexSummary(1000, 1000 + 3 * 83, 5000, TS + 82, 2)
    payload = idx.encode(summary)
    back, s2 = OffsetIndex.decode("i", payload, 100)
    assert s2 == summary
    assert list(back.rel_offsets) == list(idx.rel_offsets) and list(back.positions) == list(idx.positions)
    assert back.lookup(1000, 64) == 64
    assert back.lookup(1000 + 3 * 40, 64) == idx.positions[max(i for i, r in enumerate(idx.rel_offsets) if r <= 120)]
    assert back.lookup_time(TS + 10, 64) <= back.lookup(1000 + 3 * 11, 64)
    data = envelope(payload)
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        with pytest.raises(CorruptStateError):
            OffsetIndex.decode("i", open_envelope("i", bytes(bad)), 100)


def test_state_round_trip_and_envelope_detects_every_change_and_truncation() -> None:
    state = PartitionState(b"\x07" * 16, epoch=9, log_start=100, recovery_point=250, clean=True)
    data = envelope(state.encode())
    assert PartitionState.decode("s", open_envelope("s", data)) == state
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x80
        with pytest.raises(CorruptStateError):
            PartitionState.decode("s", open_envelope("s", bytes(bad)))
    for n in range(len(data)):  # a torn write of the file, fed one byte at a time
        with pytest.raises(CorruptStateError):
            open_envelope("s", data[:n])
    with pytest.raises(CorruptStateError):  # fields that cannot be true together
        PartitionState.decode("s", PartitionState(b"\0" * 16, 0, 10, 5, False).encode())


def test_cursor_file_round_trip_and_a_garbled_one_reads_as_absent() -> None:
    fs = SimFileSystem(0)
    store = CursorStore(fs, "/data")
    pos = {("t", 0): CursorPosition(42, "ab" * 16, 3), ("t.x", 11): CursorPosition(7)}
    store.commit("mirror", pos, required=True)
    fresh = CursorStore(fs, "/data")
    fresh.load_all()
    cur = fresh.get("mirror")
    assert cur is not None and cur.required and cur.offsets == pos
    assert fresh.protect_from("t", 0) == 42 and fresh.protect_from("t", 1) == 0
    data = fs.read_bytes("/data/cursors/mirror")
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x04
        fs.write_file("/data/cursors/mirror", bytes(bad))
        again = CursorStore(fs, "/data")
        again.load_all()
        assert again.get("mirror") is None and again.corrupt
