"""Register decoding against struct-packed values, for every type and every byte/word order."""

from __future__ import annotations

import itertools
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgestream.edge.errors import DecodeError
from edgestream.edge.modbus.registers import decode_block, decode_values, encode_value
from edgestream.edge.modbus.settings import WORDS, RegisterBlock

FORMATS = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
}
ORDERS = list(itertools.product(["big", "little"], ["big", "little"]))


def device_registers(kind: str, value: float, byte_order: str, word_order: str) -> list[int]:
    """What a device with this layout puts in its registers, built independently of the code under test."""
    packed = struct.pack(">" + FORMATS[kind], value)
    words = [packed[i : i + 2] for i in range(0, len(packed), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words = words[::-1]
    return [int.from_bytes(w, "big") for w in words]


def edge_values(kind: str) -> list[float]:
    if kind.startswith("float"):
        return [0.0, -0.0, 1.0, -1.5, 41.25, 1e-30, 3.4e38 if kind == "float32" else 1.7e308, math.inf, -math.inf]
    bits = 16 * WORDS[kind]
    if kind.startswith("u"):
        return [0, 1, 0x1234 % (1 << bits), (1 << bits) - 1, (1 << (bits - 1))]
    return [0, 1, -1, -(1 << (bits - 1)), (1 << (bits - 1)) - 1]


def same(a: float, b: float) -> bool:
    return a == b and math.copysign(1, a) == math.copysign(1, b) if isinstance(a, float) else a == b


@pytest.mark.parametrize("kind", list(FORMATS))
@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
def test_every_type_and_order_decodes_what_struct_packed(kind: str, byte_order: str, word_order: str) -> None:
    block = RegisterBlock(name="v", address=0, type=kind, byte_order=byte_order, word_order=word_order)  # type: ignore[arg-type]
    for value in edge_values(kind):
        regs = device_registers(kind, value, byte_order, word_order)
        (expected,) = struct.unpack(">" + FORMATS[kind], struct.pack(">" + FORMATS[kind], value))
        got = decode_block(block, regs)
        assert same(got, expected), (kind, byte_order, word_order, value, regs, got)  # type: ignore[arg-type]
        assert encode_value(kind, value, byte_order=byte_order, word_order=word_order) == regs


@pytest.mark.parametrize("kind", ["float32", "float64"])
@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
def test_nan_decodes_as_nan(kind: str, byte_order: str, word_order: str) -> None:
    block = RegisterBlock(name="v", address=0, type=kind, byte_order=byte_order, word_order=word_order)  # type: ignore[arg-type]
    assert math.isnan(decode_block(block, device_registers(kind, math.nan, byte_order, word_order)))  # type: ignore[arg-type]


@given(
    kind=st.sampled_from(list(FORMATS)),
    orders=st.sampled_from(ORDERS),
    data=st.data(),
)
def test_random_values_round_trip(kind: str, orders: tuple[str, str], data: st.DataObject) -> None:
    bits = 16 * WORDS[kind]
    if kind == "float32":
        value: float = data.draw(st.floats(width=32, allow_nan=False))
    elif kind == "float64":
        value = data.draw(st.floats(allow_nan=False))
    elif kind.startswith("u"):
        value = data.draw(st.integers(0, (1 << bits) - 1))
    else:
        value = data.draw(st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1))
    byte_order, word_order = orders
    block = RegisterBlock(name="v", address=0, type=kind, byte_order=byte_order, word_order=word_order)  # type: ignore[arg-type]
    regs = device_registers(kind, value, byte_order, word_order)
    assert same(decode_block(block, regs), value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("byte_order", "word_order", "registers"),
    [
        ("big", "big", [0x1234, 0x5678]),  # ABCD
        ("big", "little", [0x5678, 0x1234]),  # CDAB
        ("little", "big", [0x3412, 0x7856]),  # BADC
        ("little", "little", [0x7856, 0x3412]),  # DCBA
    ],
)
def test_the_four_layouts_by_name(byte_order: str, word_order: str, registers: list[int]) -> None:
    block = RegisterBlock(name="v", address=0, type="uint32", byte_order=byte_order, word_order=word_order)  # type: ignore[arg-type]
    assert decode_block(block, registers) == 0x12345678


def test_scale_offset_and_counts() -> None:
    tenths = RegisterBlock(name="t", address=3, type="int16", scale=0.1, offset=-5.0)
    assert decode_block(tenths, [412]) == pytest.approx(36.2)
    assert decode_block(tenths, [0xFFF6]) == pytest.approx(-6.0)  # -10 * 0.1 - 5
    plain = RegisterBlock(name="p", address=0, type="uint16", count=3)
    assert decode_block(plain, [1, 2, 3]) == [1, 2, 3]
    assert all(isinstance(v, int) for v in decode_values(plain, [1, 2, 3]))
    floats = RegisterBlock(name="f", address=0, type="float32", count=2)
    assert decode_block(floats, [0x4228, 0, 0xC000, 0]) == [42.0, -2.0]
    coils = RegisterBlock(name="c", address=0, function="coils", count=3)
    assert decode_block(coils, [True, False, True, False, False, False, False, False]) == [True, False, True]


def test_wrong_register_count_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="3 registers, expected 4"):
        decode_block(RegisterBlock(name="f", address=0, type="float32", count=2), [1, 2, 3])
    with pytest.raises(DecodeError):
        decode_block(RegisterBlock(name="c", address=0, function="discrete", count=9), [True] * 8)
