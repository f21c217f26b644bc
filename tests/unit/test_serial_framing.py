"""Framings: round trips under any split of the stream, damage detection, garbage and overlong recovery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgestream.edge.errors import FramingError
from edgestream.edge.serial.checksum import Checksum
from edgestream.edge.serial.framing import (
    SAMPLE_BYTES,
    Event,
    FixedSizeFraming,
    Frame,
    Framing,
    LengthPrefixFraming,
    LineFraming,
)
from edgestream.edge.serial.stuffing import (
    CobsFraming,
    SlipFraming,
    cobs_decode,
    cobs_encode,
    slip_decode,
    slip_encode,
)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Framing]
    payloads: st.SearchStrategy[bytes]
    checked: bool = False  # strong enough checksum that damage and garbage never produce a wrong frame


def _text(exclude: bytes = b"\n", min_size: int = 1, prefix: bytes = b"") -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=120).map(
        lambda b: prefix + bytes(c for c in b if c not in exclude) + b"x"
    )


CRC32 = Checksum("crc32")
CASES = [
    Case("line-lf", lambda: LineFraming(b"\n", max_frame_bytes=512), _text()),
    Case("line-crlf", lambda: LineFraming(b"\r\n", max_frame_bytes=512), _text(b"\r\n")),
    Case(
        "line-nmea",
        lambda: LineFraming(b"\r\n", checksum=Checksum("crc32", "hex", separator=b"*", skip=1), start=b"$"),
        _text(b"\r\n$", prefix=b"$"),
        checked=True,
    ),
    Case("length-2-big", lambda: LengthPrefixFraming(), st.binary(max_size=300)),
    Case(
        "length-1-crc16",
        lambda: LengthPrefixFraming(length_bytes=1, checksum=Checksum("crc16-modbus")),
        st.binary(max_size=200),
    ),
    Case(
        "length-4-little-sync-crc32",
        lambda: LengthPrefixFraming(
            length_bytes=4, byteorder="little", sync=b"\xaa\x55", checksum=CRC32, length_includes_checksum=True
        ),
        st.binary(max_size=300),
        checked=True,
    ),
    Case(
        "length-2-crc32-no-sync",
        lambda: LengthPrefixFraming(max_frame_bytes=400, checksum=CRC32),
        st.binary(max_size=300),
        checked=True,
    ),
    Case("fixed-12", lambda: FixedSizeFraming(12), st.binary(min_size=12, max_size=12)),
    Case(
        "fixed-12-crc32",
        lambda: FixedSizeFraming(12, checksum=CRC32),
        st.binary(min_size=12, max_size=12),
        checked=True,
    ),
    Case(
        "fixed-8-sync-crc32",
        lambda: FixedSizeFraming(8, sync=b"\x7e", checksum=CRC32),
        st.binary(min_size=8, max_size=8),
        checked=True,
    ),
    Case("cobs", lambda: CobsFraming(max_frame_bytes=1024), st.binary(max_size=600)),
    Case(
        "cobs-crc32",
        lambda: CobsFraming(max_frame_bytes=1024, checksum=CRC32),
        st.binary(max_size=600),
        checked=True,
    ),
    Case("slip", lambda: SlipFraming(), st.binary(min_size=1, max_size=300)),
    Case(
        "slip-crc16-ccitt",
        lambda: SlipFraming(checksum=Checksum("crc16-ccitt")),
        st.binary(max_size=300),
    ),
    Case("slip-crc32", lambda: SlipFraming(checksum=CRC32), st.binary(max_size=300), checked=True),
]
CHECKED = [c for c in CASES if c.checked]


def frames(events: list[Event]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


def errors(events: list[Event]) -> list[FramingError]:
    return [e for e in events if isinstance(e, FramingError)]


def feed_all(framing: Framing, chunks: list[bytes]) -> list[Event]:
    out: list[Event] = []
    for chunk in chunks:
        out += framing.feed(chunk)
    return out + framing.flush()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_whole_bytewise_and_in_random_splits(case: Case, data: st.DataObject) -> None:
    payloads = data.draw(st.lists(case.payloads, max_size=8))
    encoder = case.make()
    wire = b"".join(encoder.encode(p) for p in payloads)

    whole = feed_all(case.make(), [wire])
    assert frames(whole) == payloads
    assert errors(whole) == []

    bytewise = feed_all(case.make(), [wire[i : i + 1] for i in range(len(wire))])
    assert frames(bytewise) == payloads
    assert errors(bytewise) == []

    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
    split = feed_all(case.make(), split_at(wire, cuts))
    assert frames(split) == payloads
    assert errors(split) == []


@pytest.mark.parametrize("case", CHECKED, ids=lambda c: c.name)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_damaged_byte_loses_only_its_own_frame(case: Case, data: st.DataObject) -> None:
    # Non-empty payloads: while hunting, an empty frame is not accepted as a resync point (see framing.py).
    payloads = data.draw(st.lists(case.payloads.filter(bool), min_size=1, max_size=6))
    encoder = case.make()
    encoded = [encoder.encode(p) for p in payloads]
    victim = data.draw(st.integers(min_value=0, max_value=len(payloads) - 1))
    pos = data.draw(st.integers(min_value=0, max_value=len(encoded[victim]) - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255))
    damaged = bytearray(encoded[victim])
    damaged[pos] ^= mask
    wire = b"".join(encoded[:victim]) + bytes(damaged) + b"".join(encoded[victim + 1 :])

    for chunks in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        events = feed_all(case.make(), chunks)
        got = frames(events)
        others = payloads[:victim] + payloads[victim + 1 :]
        # Every untouched frame arrives, in order; the damaged one is either refused or (when the byte changed
        # only framing that does not matter, such as padding) arrives unchanged: never a wrong frame.
        if got == others:
            assert {e.reason for e in errors(events)} <= {"checksum", "garbage", "truncated"}
            assert errors(events)
        else:
            assert got == payloads


@pytest.mark.parametrize("case", CHECKED, ids=lambda c: c.name)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_garbage_between_frames_loses_no_frame(case: Case, data: st.DataObject) -> None:
    payloads = data.draw(st.lists(case.payloads.filter(bool), min_size=1, max_size=6))
    encoder = case.make()
    parts = []
    delimiter = getattr(encoder, "delimiter", b"")
    noise = st.binary(min_size=1, max_size=40).filter(lambda g: any(b not in delimiter for b in g))
    for p in payloads:
        garbage = data.draw(noise)  # bytes that are only padding (delimiters) are not garbage
        if isinstance(encoder, LineFraming):
            garbage += encoder.delimiter  # a noise line; noise inside a line is test_line_noise_before_start
        parts.append(garbage + encoder.encode(p))
    wire = b"".join(parts)
    for chunks in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        events = feed_all(case.make(), chunks)
        assert frames(events) == payloads
        assert errors(events)
        assert all(len(e.data) <= SAMPLE_BYTES for e in errors(events))


def test_hunting_reports_every_dropped_byte_once() -> None:
    framing = FixedSizeFraming(4, checksum=CRC32)
    garbage = b"\x01\x02\x03\x04\x05\x06\x07"
    events = feed_all(framing, [framing.encode(b"abcd") + garbage + framing.encode(b"efgh")])
    assert frames(events) == [b"abcd", b"efgh"]
    [err] = errors(events)
    assert (err.reason, err.data) == ("garbage", garbage)
    assert err.detail.startswith("7 bytes dropped")


def test_a_frame_damaged_in_place_is_reported_as_checksum() -> None:
    framing = LengthPrefixFraming(sync=b"\xaa", checksum=Checksum("crc16-modbus"))
    good, bad = framing.encode(b"first"), bytearray(framing.encode(b"second"))
    bad[4] ^= 0x10  # inside the payload: the length still holds, the CRC does not
    events = feed_all(framing, [good + bytes(bad) + framing.encode(b"third")])
    assert frames(events) == [b"first", b"third"]
    assert [e.reason for e in errors(events)] == ["checksum"]


def test_overlong_line_is_reported_once_and_the_next_line_is_kept() -> None:
    long_line = b"x" * 1000 + b"\n"
    wire = b"ok1\n" + long_line + b"ok2\n"
    for chunks in ([wire], [wire[i : i + 1] for i in range(len(wire))], [wire[:300], wire[300:700], wire[700:]]):
        events = feed_all(LineFraming(b"\n", max_frame_bytes=100), chunks)
        assert frames(events) == [b"ok1", b"ok2"]
        [err] = errors(events)
        assert err.reason == "overlong"
        assert err.data == b"x" * len(err.data) and 0 < len(err.data) <= SAMPLE_BYTES


def test_overlong_with_a_two_byte_terminator_split_across_reads() -> None:
    framing = LineFraming(b"\r\n", max_frame_bytes=10)
    events = framing.feed(b"a" * 20 + b"\r") + framing.feed(b"\nnext\r\n")
    assert frames(events) == [b"next"]
    assert [e.reason for e in errors(events)] == ["overlong"]


def test_line_noise_before_start_marker_is_garbage_and_the_sentence_survives() -> None:
    framing = LineFraming(b"\r\n", checksum=Checksum("xor", "hex", skip=1), start=b"$")
    sentence = framing.encode(b"$GPGLL,4916.45,N,12311.12,W")
    events = feed_all(framing, [b"\xff\x00\x13" + sentence + b"no marker at all\r\n" + sentence])
    assert frames(events) == [b"$GPGLL,4916.45,N,12311.12,W"] * 2
    assert [(e.reason, e.data) for e in errors(events)] == [
        ("garbage", b"\xff\x00\x13"),
        ("garbage", b"no marker at all"),
    ]


def test_line_checksum_failure_and_blank_lines() -> None:
    framing = LineFraming(b"\n", checksum=Checksum("sum8", "hex"))
    events = feed_all(framing, [b"\n\n" + framing.encode(b"a") + b"b*00\n" + b"c\n" + framing.encode(b"d")])
    assert frames(events) == [b"a", b"d"]
    assert [e.reason for e in errors(events)] == ["checksum", "checksum"]


def test_partial_frame_at_end_of_stream_is_truncated() -> None:
    line = LineFraming()
    assert [e.reason for e in errors(line.feed(b"abc") + line.flush())] == ["truncated"]
    length = LengthPrefixFraming(checksum=CRC32)
    wire = length.encode(b"complete") + length.encode(b"cut short")[:6]
    events = feed_all(length, [wire])
    assert frames(events) == [b"complete"]
    assert [e.reason for e in errors(events)] == ["truncated"]
    assert line.flush() == [] and length.flush() == []


def test_length_over_max_is_loss_of_sync_not_a_huge_buffer() -> None:
    framing = LengthPrefixFraming(max_frame_bytes=16, checksum=CRC32)
    events = feed_all(framing, [b"\xff\xff" + framing.encode(b"fine")])
    assert frames(events) == [b"fine"]
    assert [e.reason for e in errors(events)] == ["garbage"]
    assert "out of range" in errors(events)[0].detail


def test_sync_marker_skips_noise_without_hunting_inside_it() -> None:
    framing = FixedSizeFraming(3, sync=b"\x7e\x7e")
    events = feed_all(framing, [b"noise" + framing.encode(b"abc") + b"\x7exy" + framing.encode(b"def")])
    assert frames(events) == [b"abc", b"def"]
    assert [(e.reason, e.data) for e in errors(events)] == [("garbage", b"noise"), ("garbage", b"\x7exy")]


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [  # the examples of the COBS paper / Wikipedia, without the trailing delimiter
        ("00", "0101"),
        ("0000", "010101"),
        ("00110000", "0102110101"),
        ("11220033", "0311220233"),
        ("11223344", "0511223344"),
        ("11000000", "0211010101"),
        (bytes(range(1, 255)).hex(), "ff" + bytes(range(1, 255)).hex()),
        ("00" + bytes(range(1, 255)).hex(), "01ff" + bytes(range(1, 255)).hex()),
        (bytes(range(1, 256)).hex(), "ff" + bytes(range(1, 255)).hex() + "02ff"),
        (bytes(range(2, 256)).hex() + "00", "ff" + bytes(range(2, 256)).hex() + "0101"),
        (bytes(range(3, 256)).hex() + "0001", "fe" + bytes(range(3, 256)).hex() + "0201"),
    ],
)
def test_cobs_reference_vectors(raw: str, encoded: str) -> None:
    assert cobs_encode(bytes.fromhex(raw)).hex() == encoded
    assert cobs_decode(bytes.fromhex(encoded)) == bytes.fromhex(raw)


def test_cobs_and_slip_refuse_invalid_chunks() -> None:
    assert cobs_decode(b"\x05ab") is None  # code runs past the end
    assert slip_encode(b"a\xc0b\xdbc") == b"a\xdb\xdcb\xdb\xddc"
    assert slip_decode(b"a\xdb\xdcb\xdb\xddc") == b"a\xc0b\xdbc"
    assert slip_decode(b"a\xdbx") is None
    assert slip_decode(b"a\xdb") is None
    events = feed_all(SlipFraming(), [b"\xc0ok\xc0\xc0bad\xdbq\xc0\xc0ok2\xc0"])
    assert frames(events) == [b"ok", b"ok2"]
    assert [e.reason for e in errors(events)] == ["garbage"]


def test_encoders_refuse_what_they_cannot_frame() -> None:
    with pytest.raises(ValueError):
        LineFraming().encode(b"two\nlines")
    with pytest.raises(ValueError):
        FixedSizeFraming(4).encode(b"abc")
    with pytest.raises(ValueError):
        LengthPrefixFraming(length_bytes=1).encode(b"x" * 300)
    with pytest.raises(ValueError):
        SlipFraming().encode(b"")
    with pytest.raises(ValueError):
        LineFraming(checksum=Checksum("crc32"))  # binary checksum on a text line
    with pytest.raises(ValueError):
        CobsFraming(checksum=Checksum("crc32", "hex"))


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b"b", b"\r", b"\n", b"\r\n"]), max_size=60).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10),
)
def test_line_framing_matches_a_whole_stream_reference_under_any_split(data: bytes, cuts: list[int]) -> None:
    """Reference: split the whole stream at each CRLF; a chunk over max is overlong, an empty one is skipped; the
    tail is overlong if it can no longer end in time, else truncated."""
    max_len = 5
    *chunks, tail = data.split(b"\r\n")
    expected: list[tuple[str, bytes]] = []
    for chunk in chunks:
        if len(chunk) > max_len:
            expected.append(("overlong", b""))
        elif chunk:
            expected.append(("frame", chunk))
    if tail:
        expected.append(("overlong", b"") if len(tail) - 1 > max_len else ("truncated", b""))
    events = feed_all(LineFraming(b"\r\n", max_frame_bytes=max_len), split_at(data, cuts))
    got = [("frame", e.payload) if isinstance(e, Frame) else (e.reason, b"") for e in events]
    assert got == expected
