"""Per-frame checksums used on serial lines, and where a frame carries them.

Algorithms (check values over b"123456789", the catalogue convention):

| name          | width | value     | notes                                                        |
|---------------|-------|-----------|--------------------------------------------------------------|
| crc16-modbus  | 2     | 0x4B37    | poly 0xA001 reflected, init 0xFFFF; sent low byte first      |
| crc16-ccitt   | 2     | 0x29B1    | CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF (binascii)      |
| crc32         | 4     | 0xCBF43926| zlib's CRC-32                                                |
| xor           | 1     | 0x31      | XOR of all bytes (NMEA 0183 `*hh`)                           |
| lrc           | 1     | 0x23      | Modbus ASCII LRC: two's complement of the byte sum           |
| sum8          | 1     | 0xDD      | byte sum modulo 256                                          |

Placement: `binary` appends the value as a fixed-width field after the payload (byte order configurable,
default little for crc16-modbus as Modbus RTU sends it, big for the rest); `hex` appends a separator and the
value as upper-case hex digits (accepted in either case), for text lines such as NMEA's `$GPGGA,...*47`.
`skip` leaves that many leading bytes out of the computation (NMEA excludes the `$`).

The 1-byte sums are weak: a deframer that hunts for frame boundaries byte by byte (length-prefixed and
fixed-size framing without a sync marker) accepts a bogus frame about once in 256 tries. Use a CRC there.
"""

from __future__ import annotations

import binascii
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Algorithm = Literal["crc16-modbus", "crc16-ccitt", "crc32", "xor", "lrc", "sum8"]
ALGORITHMS: tuple[str, ...] = ("crc16-modbus", "crc16-ccitt", "crc32", "xor", "lrc", "sum8")


def _modbus_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_MODBUS_TABLE = _modbus_table()


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    table = _MODBUS_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc16_ccitt(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def xor8(data: bytes) -> int:
    # int.from_bytes + folding would be faster for long frames, but frames are short and this stays obvious.
    value = 0
    for byte in data:
        value ^= byte
    return value


def lrc8(data: bytes) -> int:
    return -sum(data) & 0xFF


def sum8(data: bytes) -> int:
    return sum(data) & 0xFF


_HEX_DIGITS = b"0123456789abcdefABCDEF"

_FUNCTIONS: dict[str, tuple[Callable[[bytes], int], int]] = {
    "crc16-modbus": (crc16_modbus, 2),
    "crc16-ccitt": (crc16_ccitt, 2),
    "crc32": (crc32, 4),
    "xor": (xor8, 1),
    "lrc": (lrc8, 1),
    "sum8": (sum8, 1),
}


@dataclass(frozen=True, slots=True)
class Checksum:
    """One checksum and how it sits in a frame. `split` and `append` are inverse of each other."""

    algorithm: str
    encoding: Literal["binary", "hex"] = "binary"
    byteorder: Literal["big", "little"] | None = None
    separator: bytes = b"*"
    skip: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in _FUNCTIONS:
            raise ValueError(f"unknown checksum algorithm {self.algorithm!r}; one of {', '.join(ALGORITHMS)}")
        if self.encoding == "hex" and not self.separator:
            raise ValueError("a hex checksum needs a non-empty separator")

    @property
    def width(self) -> int:
        """Bytes of the binary field; the hex field has twice as many digits."""
        return _FUNCTIONS[self.algorithm][1]

    @property
    def wire_size(self) -> int:
        """Bytes the checksum adds to a frame."""
        if self.encoding == "hex":
            return len(self.separator) + 2 * self.width
        return self.width

    def _order(self) -> Literal["big", "little"]:
        if self.byteorder is not None:
            return self.byteorder
        return "little" if self.algorithm == "crc16-modbus" else "big"

    def compute(self, payload: bytes) -> int:
        return _FUNCTIONS[self.algorithm][0](payload[self.skip :] if self.skip else payload)

    def append(self, payload: bytes) -> bytes:
        value = self.compute(payload)
        if self.encoding == "hex":
            return payload + self.separator + b"%0*X" % (2 * self.width, value)
        return payload + value.to_bytes(self.width, self._order())

    def split(self, frame: bytes) -> tuple[bytes, str]:
        """(payload, "") if the checksum holds, else (b"", why). `frame` is the payload + checksum field."""
        if self.encoding == "hex":
            cut = frame.rfind(self.separator)
            if cut < 0:
                return b"", "no checksum field"
            digits = frame[cut + len(self.separator) :]
            payload = frame[:cut]
            if len(digits) != 2 * self.width:
                return b"", f"checksum field has {len(digits)} digits, expected {2 * self.width}"
            if digits.translate(None, _HEX_DIGITS):
                return b"", "checksum field is not hex"
            got = int(digits, 16)
        else:
            if len(frame) < self.width:
                return b"", "frame shorter than its checksum"
            payload = frame[: len(frame) - self.width]
            got = int.from_bytes(frame[len(frame) - self.width :], self._order())
        want = self.compute(payload)
        if got != want:
            n = 2 * self.width
            return b"", f"{self.algorithm} mismatch: got {got:0{n}x}, computed {want:0{n}x}"
        return payload, ""
