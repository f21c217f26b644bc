"""Byte-stuffed framings: COBS (0x00 delimited) and SLIP (RFC 1055), codecs and framings.

COBS (Cheshire & Baker 1999): the payload is cut at every 0x00; each piece is sent as a code byte (piece
length + 1, at most 0xFF) and the piece, so the encoded frame holds no 0x00 and 0x00 ends it. A code of 0xFF
carries 254 bytes and no implied zero; any other code implies a zero after its piece unless it is the last.
Overhead: one byte per 254. A chunk is valid iff no code runs past its end.

SLIP: END (0xC0) ends a frame; inside, 0xC0 is sent as ESC ESC_END (0xDB 0xDC) and 0xDB as ESC ESC_ESC (0xDB
0xDD). A chunk is valid iff every ESC is followed by ESC_END or ESC_ESC. RFC 1055 leaves other escapes "as
is"; here they make the chunk garbage, because a checksum-less frame that decodes loosely is data nobody can
trust.

Both encoders also send the delimiter *before* each frame (RFC 1055's advice): line noise since the last frame
then ends up in its own chunk and is reported as garbage instead of spoiling the next frame. Empty chunks (two
delimiters in a row) are that padding and are skipped; an empty payload encodes to a non-empty chunk (COBS
0x01; SLIP with a checksum), so SLIP without a checksum cannot carry empty payloads.
"""

from __future__ import annotations

from ..errors import FramingError
from .checksum import Checksum
from .framing import SAMPLE_BYTES, DelimitedFraming, Event, Frame


def cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    pieces = data.split(b"\x00")
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        while len(piece) >= 254:
            out.append(0xFF)
            out += piece[:254]
            piece = piece[254:]
            if not piece and i == last:
                return bytes(out)  # ends on a full block: no trailing code needed
        out.append(len(piece) + 1)
        out += piece
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """The decoded bytes, or None if `data` is not valid COBS (a zero byte, a code running past the end)."""
    if b"\x00" in data:
        return None
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if end > n:
            return None
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD


def slip_encode(data: bytes) -> bytes:
    return data.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")


def slip_decode(data: bytes) -> bytes | None:
    """The decoded bytes, or None if an escape is invalid (or a raw END is present)."""
    if b"\xc0" in data:
        return None
    if b"\xdb" not in data:
        return data
    pieces = data.split(b"\xdb")
    out = bytearray(pieces[0])
    for piece in pieces[1:]:
        if not piece:
            return None
        code = piece[0]
        if code == ESC_END:
            out.append(END)
        elif code == ESC_ESC:
            out.append(ESC)
        else:
            return None
        out += piece[1:]
    return bytes(out)


class _StuffedFraming(DelimitedFraming):
    name = ""

    def __init__(self, delimiter: bytes, *, max_frame_bytes: int, checksum: Checksum | None, lead: bool) -> None:
        super().__init__(delimiter, max_frame_bytes)
        if checksum is not None and checksum.encoding != "binary":
            raise ValueError(f"{self.name} framing takes a binary checksum")
        self.checksum = checksum
        self.lead = lead

    def _stuff(self, data: bytes) -> bytes:
        raise NotImplementedError

    def _unstuff(self, data: bytes) -> bytes | None:
        raise NotImplementedError

    def encode(self, payload: bytes) -> bytes:
        body = self.checksum.append(payload) if self.checksum is not None else payload
        stuffed = self._stuff(body)
        if len(stuffed) > self.max_frame_bytes:
            raise ValueError(f"encoded frame of {len(stuffed)} bytes over max_frame_bytes {self.max_frame_bytes}")
        return (self.delimiter if self.lead else b"") + stuffed + self.delimiter

    def _chunk(self, chunk: bytes, out: list[Event]) -> None:
        if not chunk:
            return
        body = self._unstuff(chunk)
        if body is None:
            out.append(FramingError("garbage", f"not a valid {self.name} frame", data=chunk[:SAMPLE_BYTES]))
            return
        if self.checksum is not None:
            payload, why = self.checksum.split(body)
            if why:
                out.append(FramingError("checksum", why, data=chunk[:SAMPLE_BYTES]))
                return
            body = payload
        out.append(Frame(body))


class CobsFraming(_StuffedFraming):
    name = "COBS"

    def __init__(self, *, max_frame_bytes: int = 4096, checksum: Checksum | None = None, lead: bool = True) -> None:
        super().__init__(b"\x00", max_frame_bytes=max_frame_bytes, checksum=checksum, lead=lead)

    def _stuff(self, data: bytes) -> bytes:
        return cobs_encode(data)

    def _unstuff(self, data: bytes) -> bytes | None:
        return cobs_decode(data)


class SlipFraming(_StuffedFraming):
    name = "SLIP"

    def __init__(self, *, max_frame_bytes: int = 4096, checksum: Checksum | None = None, lead: bool = True) -> None:
        super().__init__(b"\xc0", max_frame_bytes=max_frame_bytes, checksum=checksum, lead=lead)

    def _stuff(self, data: bytes) -> bytes:
        return slip_encode(data)

    def _unstuff(self, data: bytes) -> bytes | None:
        return slip_decode(data)

    def encode(self, payload: bytes) -> bytes:
        if not payload and self.checksum is None:
            raise ValueError("SLIP without a checksum cannot carry an empty payload (it reads as padding)")
        return super().encode(payload)
