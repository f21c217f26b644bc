"""The columnar read path (frame bodies -> Arrow, no Record per row) against the Record path it replaces:
for any frames, keys, headers, epochs, gaps and wanted range, `slices_to_table` builds exactly the table
`to_table` builds from the same records, and `by_key` exactly what `sort_for_compression` makes of it."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgestream.edge.decoders import decode_json
from edgestream.store import Log, LogConfig, TopicConfig
from edgestream.store.checksum import crc32
from edgestream.store.codec import NONE, ZSTD
from edgestream.store.frame import (
    FRAME_HEADER_SIZE,
    FrameError,
    RecordIn,
    body_columns,
    decode_body,
    encode_frame,
    parse_header,
)
from edgestream.store.reads import FrameSlice
from edgestream.store.tier.arrowize import slices_to_table, to_table
from edgestream.store.tier.manifest import DecoderSpec, TopicDecoder
from edgestream.store.tier.parquet import sort_for_compression

JSON = TopicDecoder(DecoderSpec("json"), decode_json)
TS = 1_767_225_600_000

keys = st.one_of(st.none(), st.sampled_from([b"s1", b"s2", b"", b"line1/t-0", b"\x00\xff"]))
headers = st.one_of(st.just(()), st.lists(st.tuples(st.sampled_from(["h", "trace", "\u00e9"]), st.binary(max_size=4)),
                                          min_size=1, max_size=2).map(tuple))
values = st.one_of(st.sampled_from([b'{"v": 1}', b'{"v": 2.5, "s": "x"}', b"", b"not json", b'{"v": "t"}']),
                   st.binary(max_size=12))
records = st.builds(RecordIn, st.integers(0, 100_000).map(lambda d: TS + d), keys, values, headers)
plain = st.builds(RecordIn, st.integers(0, 1000).map(lambda d: TS + d), st.none(), values, st.just(()))


@st.composite
def frames(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """(base offset, encoded frame) for 1..5 frames; offsets usually follow on, sometimes with a gap."""
    out = []
    offset = draw(st.integers(0, 1000))
    for _ in range(draw(st.integers(1, 5))):
        recs = draw(st.lists(draw(st.sampled_from([records, plain])), min_size=1, max_size=12))
        frame = encode_frame(recs, base_offset=offset, epoch=draw(st.integers(1, 3)),
                             codec=draw(st.sampled_from([NONE, ZSTD])), level=1, checksum=crc32)
        out.append((offset, frame))
        offset += len(recs) + draw(st.sampled_from([0, 0, 0, 7]))
    return out


def _decode(frame: bytes) -> tuple[FrameSlice, list]:
    h = parse_header(frame, crc32)
    stored = memoryview(frame)[FRAME_HEADER_SIZE:h.frame_len]
    return FrameSlice(body_columns(h, stored), 0, h.record_count), decode_body(h, stored, "t", 4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.integers(0, 11), st.integers(0, 11), st.booleans())
@example([(0, encode_frame([RecordIn(TS, b"k", b'{"v": 1}')] * 3, base_offset=0, epoch=1, codec=NONE, level=1,
                           checksum=crc32))], 1, 1, True)
def test_columns_equal_the_record_path(framed: list[tuple[int, bytes]], skip: int, cut: int, by_key: bool) -> None:
    decoded = [_decode(f) for _, f in framed]
    slices = [s for s, _ in decoded]
    recs = [r for _, rs in decoded for r in rs]
    first = min(skip, slices[0].end - 1)
    end = max(1, slices[-1].end - cut) if len(slices) > 1 else max(first + 1, slices[-1].end - cut)
    slices[0] = slices[0]._replace(first=first)
    slices[-1] = slices[-1]._replace(end=end)
    wanted = recs[first:len(recs) - (decoded[-1][0].end - end)]
    for decoder in (JSON, None):
        expected = to_table(wanted, decoder)
        if by_key:
            expected = sort_for_compression(expected)
        got = slices_to_table(slices, 4, decoder, by_key=by_key)
        assert got.schema.equals(expected.schema), (got.schema, expected.schema)
        assert got.to_pylist() == expected.to_pylist()


def test_a_body_whose_lengths_do_not_add_up_is_a_frame_error() -> None:
    frame = bytearray(encode_frame([RecordIn(TS, b"k", b"abc")], base_offset=0, epoch=1, codec=NONE, level=1,
                                   checksum=crc32))
    h = parse_header(frame, crc32)
    body = bytearray(frame[FRAME_HEADER_SIZE:])
    body[8] = 9  # the value length, now past the body's end
    with pytest.raises(FrameError, match="bad_record"):
        body_columns(h, bytes(body))
    body[8] = 0xFE
    body[9:12] = b"\xff\xff\xff"  # negative
    with pytest.raises(FrameError, match="bad_record"):
        body_columns(h, bytes(body))


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_log_read_columns_matches_log_read(tmp_path: object, codec: str) -> None:
    """Through a real log: chunk boundaries from max_records, max_bytes and upto land mid-frame, and every chunk
    holds exactly the records `Log.read` returns for the same request."""
    log = Log.open(str(tmp_path), LogConfig(min_free_bytes=0))
    try:
        log.create_topic("t", TopicConfig(partitions=1, segment_bytes=64 << 10, codec=codec, retention_ms=None))
        batch: list[RecordIn] = []
        for i in range(5000):
            batch.append(RecordIn(TS + i, None if i % 7 == 0 else f"s{i % 5}".encode(),
                                  b'{"i": %d, "v": %d.5}' % (i, i % 13), (("n", b"%d" % i),) if i % 97 == 0 else ()))
            if len(batch) == 1 + i % 250:
                log.append_batch("t", 0, batch).result(10)
                batch = []
        if batch:
            log.append_batch("t", 0, batch).result(10)
        p = log.partition("t", 0)
        assert len(p.segments) >= 2
        for max_records, max_bytes, upto in ((333, 64 << 20, None), (10_000, 4096, None), (1000, 64 << 20, 4321)):
            offset, seen = 0, 0
            while True:
                slices = log.read_columns("t", 0, offset, max_records=max_records, max_bytes=max_bytes, upto=upto)
                if not slices:
                    break
                got = slices_to_table(slices, 0, JSON)
                recs = log.read("t", 0, offset, max_records=got.num_rows, max_bytes=1 << 40, upto=upto)
                assert got.to_pylist() == to_table(recs, JSON).to_pylist()
                assert slices[-1].next_offset == recs[-1].offset + 1
                offset = slices[-1].next_offset
                seen += got.num_rows
            assert seen == (upto or 5000)
        assert log.read_columns("t", 0, 5000) == []
    finally:
        log.close()


def test_an_empty_read_gives_empty_columns() -> None:
    t = slices_to_table([], 0, JSON)
    assert t.num_rows == 0 and t.column("value").type == pa.binary()
