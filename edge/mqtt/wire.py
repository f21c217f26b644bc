"""MQTT's data representations (MQTT 5.0 section 1.5, the same in 3.1.1) and a bounds-checked reader.

| type                  | layout                                                            |
|-----------------------|-------------------------------------------------------------------|
| byte, two/four byte   | big-endian unsigned integers                                      |
| variable byte integer | 7 bits per byte, low group first, high bit = "more"; 1..4 bytes,  |
|                       | at most 268,435,455, minimal length                               |
| UTF-8 string          | two byte length + well-formed UTF-8 without U+0000                |
| binary data           | two byte length + bytes                                           |
| string pair           | two UTF-8 strings                                                 |

Every read is checked against the end of the packet, so a lying length is `MalformedPacketError` (0x81), never
an IndexError or a read past the packet into the next one.
"""

from __future__ import annotations

import struct

from ..errors import MalformedPacketError
from . import reasons

VARINT_MAX = 268_435_455
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def malformed(message: str) -> MalformedPacketError:
    return MalformedPacketError(message, reason_code=reasons.MALFORMED_PACKET)


def protocol_error(message: str) -> MalformedPacketError:
    return MalformedPacketError(message, reason_code=reasons.PROTOCOL_ERROR)


def encode_varint(value: int) -> bytes:
    if value < 128:
        return bytes((value,))
    if not 0 <= value <= VARINT_MAX:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        digit = value & 0x7F
        value >>= 7
        if value:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def decode_varint(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """(value, position after it), or None if the bytes up to `end` hold only part of it."""
    value = 0
    shift = 0
    for i in range(4):
        if pos + i >= end:
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise malformed("variable byte integer not in its shortest form")
            return value, pos + i + 1
        shift += 7
    raise malformed("variable byte integer longer than 4 bytes")


def encode_u16(value: int) -> bytes:
    return _U16.pack(value)


def encode_u32(value: int) -> bytes:
    return _U32.pack(value)


def encode_string(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"UTF-8 string of {len(raw)} bytes does not fit MQTT's 65,535")
    return _U16.pack(len(raw)) + raw


def encode_binary(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"binary data of {len(value)} bytes does not fit MQTT's 65,535")
    return _U16.pack(len(value)) + value


def check_string(raw: bytes) -> str:
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise malformed(f"invalid UTF-8 in a string: {exc.reason}") from None
    if "\x00" in text:
        raise malformed("U+0000 in a UTF-8 string")
    return text


class Reader:
    """Reads MQTT data types from `data[pos:end]`; every method raises 0x81 instead of reading past `end`."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _take(self, n: int) -> int:
        start = self.pos
        if start + n > self.end:
            raise malformed("packet ends in the middle of a field")
        self.pos = start + n
        return start

    def u8(self) -> int:
        return self.data[self._take(1)]

    def u16(self) -> int:
        start = self._take(2)
        return (self.data[start] << 8) | self.data[start + 1]

    def u32(self) -> int:
        return int(_U32.unpack_from(self.data, self._take(4))[0])

    def varint(self) -> int:
        got = decode_varint(self.data, self.pos, self.end)
        if got is None:
            raise malformed("packet ends in the middle of a variable byte integer")
        value, self.pos = got
        return value

    def binary(self) -> bytes:
        n = self.u16()
        start = self._take(n)
        return self.data[start : start + n]

    def string(self) -> str:
        return check_string(self.binary())

    def rest(self) -> bytes:
        start, self.pos = self.pos, self.end
        return self.data[start : self.end]

    def expect_end(self, what: str) -> None:
        if self.pos != self.end:
            raise malformed(f"{self.end - self.pos} unexpected bytes at the end of {what}")
