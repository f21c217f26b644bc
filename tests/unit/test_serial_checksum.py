"""Checksums: catalogue check values, wire placement, and single-byte damage always detected."""

from __future__ import annotations

import pytest

from edgestream.edge.serial.checksum import ALGORITHMS, Checksum

CHECK = b"123456789"


@pytest.mark.parametrize(
    ("algorithm", "value"),
    [
        ("crc16-modbus", 0x4B37),
        ("crc16-ccitt", 0x29B1),
        ("crc32", 0xCBF43926),
        ("xor", 0x31),
        ("lrc", 0x23),
        ("sum8", 0xDD),
    ],
)
def test_catalogue_check_values(algorithm: str, value: int) -> None:
    assert Checksum(algorithm).compute(CHECK) == value


def test_modbus_crc_goes_low_byte_first_like_an_rtu_frame() -> None:
    # Read holding registers, unit 1, address 0, count 10: the canonical example frame "01 03 00 00 00 0A C5 CD".
    request = bytes.fromhex("01030000000a")
    assert Checksum("crc16-modbus").append(request) == request + bytes.fromhex("c5cd")


def test_nmea_sentence_checksum_skips_the_dollar() -> None:
    ck = Checksum("xor", "hex", separator=b"*", skip=1)
    sentence = b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,"
    assert ck.append(sentence) == sentence + b"*76"
    assert ck.split(sentence + b"*76") == (sentence, "")
    assert ck.split(sentence + b"*76".lower()) == (sentence, "")  # receivers accept either case


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("encoding", ["binary", "hex"])
def test_append_then_split_round_trips(algorithm: str, encoding: str) -> None:
    ck = Checksum(algorithm, encoding)  # type: ignore[arg-type]
    for payload in (b"", b"\x00", b"hello world", bytes(range(256))):
        assert ck.split(ck.append(payload)) == (payload, "")
    assert len(ck.append(b"abc")) == 3 + ck.wire_size


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_single_byte_change_is_detected(algorithm: str) -> None:
    ck = Checksum(algorithm)
    frame = ck.append(b'{"sensor":"line1/temperature-0","value":41.2}')
    for pos in range(len(frame)):
        for mask in (0x01, 0x80, 0xFF, 0x5A):
            damaged = bytearray(frame)
            damaged[pos] ^= mask
            payload, why = ck.split(bytes(damaged))
            assert why and payload == b"", (pos, mask)


def test_split_explains_what_is_wrong() -> None:
    ck = Checksum("crc16-ccitt", "hex", separator=b";")
    assert ck.split(b"no field")[1] == "no checksum field"
    assert "digits" in ck.split(b"x;12")[1]
    assert ck.split(b"x;12zz")[1] == "checksum field is not hex"
    assert "mismatch" in ck.split(b"x;0000")[1]
    assert "shorter" in Checksum("crc32").split(b"ab")[1]


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="crc16-modbus"):
        Checksum("crc8")
