"""Register words to values and back, sans-I/O.

A read returns 16-bit words in register order. A value of N words is rebuilt as big-endian bytes and unpacked
with `struct`:

| byte order | word order | 32-bit layout of registers r0 r1 (A = most significant byte) |
|------------|------------|--------------------------------------------------------------|
| big        | big        | r0 = AB, r1 = CD  (Modbus's own convention, "ABCD")          |
| big        | little     | r0 = CD, r1 = AB  ("CDAB", word swap)                        |
| little     | big        | r0 = BA, r1 = DC  ("BADC", byte swap)                        |
| little     | little     | r0 = DC, r1 = BA  ("DCBA")                                   |

64-bit values follow the same rule over four words. `scale` and `offset` then give value * scale + offset; an
integer with scale 1 and offset 0 stays an integer. `encode` is the exact inverse (the simulator writes with
it).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..errors import DecodeError
from .settings import WORDS, RegisterBlock

_FORMAT = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
}

Value = int | float | bool


def words_to_bytes(words: Sequence[int], byte_order: str, word_order: str) -> bytes:
    """The big-endian byte string of one value, from its registers as read."""
    ordered = reversed(words) if word_order == "little" else words
    return b"".join(int(w).to_bytes(2, "big" if byte_order == "big" else "little") for w in ordered)


def bytes_to_words(data: bytes, byte_order: str, word_order: str) -> list[int]:
    """Inverse of `words_to_bytes`."""
    words = [
        int.from_bytes(data[i : i + 2], "big" if byte_order == "big" else "little") for i in range(0, len(data), 2)
    ]
    return words[::-1] if word_order == "little" else words


def decode_values(block: RegisterBlock, words: Sequence[int] | Sequence[bool]) -> list[Value]:
    """All `block.count` values of one block, from what the read returned."""
    kind = block.type or "uint16"
    if kind == "bool":
        if len(words) < block.count:
            raise DecodeError("short_read", f"{block.name}: {len(words)} bits, expected {block.count}")
        return [bool(b) for b in words[: block.count]]
    width = WORDS[kind]
    if len(words) != block.count * width:
        raise DecodeError("short_read", f"{block.name}: {len(words)} registers, expected {block.count * width}")
    fmt = ">" + _FORMAT[kind]
    scaled = block.scale != 1.0 or block.offset != 0.0
    out: list[Value] = []
    for i in range(0, len(words), width):
        chunk = words[i : i + width]
        if any(not 0 <= int(w) <= 0xFFFF for w in chunk):
            raise DecodeError("bad_register", f"{block.name}: register value out of 0..65535")
        (raw,) = struct.unpack(fmt, words_to_bytes(chunk, block.byte_order, block.word_order))
        out.append(raw * block.scale + block.offset if scaled else raw)
    return out


def decode_block(block: RegisterBlock, words: Sequence[int] | Sequence[bool]) -> Value | list[Value]:
    """One value when `count` is 1, else a list."""
    values = decode_values(block, words)
    return values[0] if block.count == 1 else values


def encode_value(kind: str, value: float | int, *, byte_order: str = "big", word_order: str = "big") -> list[int]:
    """Registers holding `value` (unscaled), as a device would present them."""
    if kind == "bool":
        return [int(bool(value))]
    fmt = ">" + _FORMAT[kind]
    packed = struct.pack(fmt, value if kind.startswith("float") else int(value))
    return bytes_to_words(packed, byte_order, word_order)
