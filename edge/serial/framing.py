"""Serial framings, sans-I/O: bytes in, frames and framing errors out; and the matching encoders.

Every framing object has `encode(payload) -> bytes` (what a device sends) and a streaming decoder: `feed(data)
-> list[Frame | FramingError]` takes whatever the port delivered (any split: a byte at a time or many frames
at once) and returns events in stream order. Errors travel in the same list as frames, so a bad frame never
takes the good ones around it down: the caller stores each frame and dead-letters each error. `flush()` is
called at end of stream (port closed): it reports a partial frame as "truncated" and releases anything held.

| framing | on the wire                                   | finds the next frame after damage by            |
|---------|-----------------------------------------------|--------------------------------------------------|
| line    | payload [sep hex-checksum] terminator         | the next terminator                              |
| length  | [sync] length(1/2/4, big/little) payload [ck] | the sync marker, else hunting byte by byte       |
| fixed   | [sync] payload(size) [ck]                     | the sync marker, else hunting byte by byte       |
| cobs    | 00 cobs(payload [ck]) 00                      | the next 00  (see stuffing.py)                   |
| slip    | C0 slip(payload [ck]) C0                      | the next C0  (see stuffing.py)                   |

Error reasons (a bounded vocabulary: metric label and dead-letter reason): "garbage" (bytes that belong to no
frame, or a delimited chunk that does not decode), "overlong" (no delimiter within max_frame_bytes: reported
once, then everything up to the next delimiter is dropped), "checksum" (a frame whose checksum does not hold),
"truncated" (a partial frame at end of stream). Each error carries at most SAMPLE_BYTES of the dropped bytes.

Hunting (length/fixed without a delimiter): when a candidate frame is invalid (length out of range, checksum
wrong) the decoder drops one byte and tries again at the next offset. Dropped bytes are reported as one error
when the next good frame is found: "checksum" if exactly one candidate frame was dropped (a frame damaged in
place), "garbage" otherwise. Without a checksum or sync marker hunting cannot tell data from noise; configure
one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from ..errors import FramingError
from .checksum import Checksum

SAMPLE_BYTES = 256  # dropped bytes kept in one error: enough to see what the device sent, bounded in memory


@dataclass(frozen=True, slots=True)
class Frame:
    """One delimited payload, framing and checksum removed."""

    payload: bytes


Event = Frame | FramingError


class Framing(Protocol):
    def encode(self, payload: bytes) -> bytes: ...

    def feed(self, data: bytes) -> list[Event]: ...

    def flush(self) -> list[Event]: ...


class _Dropped:
    """A run of dropped bytes not yet reported: counted in full, sampled up to SAMPLE_BYTES."""

    __slots__ = ("count", "sample", "suspect", "why")

    def __init__(self) -> None:
        self.count = 0
        self.sample = bytearray()
        self.suspect = 0  # size of the first rejected candidate frame, 0 if the run did not start with one
        self.why = ""

    def add(self, buf: bytes | bytearray, start: int, end: int, why: str = "", suspect: int = 0) -> None:
        """Drop buf[start:end]. `suspect` is the size of the rejected candidate frame starting here (-1: an
        incomplete one at end of stream)."""
        if end <= start:
            return
        if self.count == 0:
            self.suspect = suspect
            self.why = why
        self.count += end - start
        room = SAMPLE_BYTES - len(self.sample)
        if room > 0:
            self.sample += buf[start : min(end, start + room)]

    def take(self, out: list[Event], reason: str | None = None) -> None:
        if self.count == 0:
            return
        if reason is None:
            if self.suspect < 0:
                reason = "truncated"
            elif self.suspect and self.count == self.suspect:
                reason = "checksum"
            else:
                reason = "garbage"
        detail = f"{self.count} bytes dropped" + (f" ({self.why})" if self.why else "")
        out.append(FramingError(reason, detail, data=bytes(self.sample)))
        self.__init__()  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------------------
# Delimited framings: line here, COBS and SLIP in stuffing.py.


class DelimitedFraming:
    """Splits the stream at a delimiter and hands each chunk to `_chunk`. Subclasses decode chunks."""

    def __init__(self, delimiter: bytes, max_frame_bytes: int) -> None:
        if not delimiter:
            raise ValueError("the delimiter must not be empty")
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.delimiter = delimiter
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._scan = 0  # where the next delimiter search starts: never rescan bytes already searched
        self._discarding = False  # after an overlong chunk, until the next delimiter

    def _chunk(self, chunk: bytes, out: list[Event]) -> None:
        raise NotImplementedError

    def _overlong(self, data: bytes | bytearray, out: list[Event]) -> None:
        out.append(
            FramingError(
                "overlong",
                f"no delimiter within {self.max_frame_bytes} bytes; dropping up to the next one",
                data=bytes(data[:SAMPLE_BYTES]),
            )
        )

    def feed(self, data: bytes) -> list[Event]:
        out: list[Event] = []
        buf = self._buf
        buf += data
        delim = self.delimiter
        dlen = len(delim)
        start = 0
        while True:
            idx = buf.find(delim, self._scan)
            if idx < 0:
                break
            if self._discarding:
                self._discarding = False
            elif idx - start > self.max_frame_bytes:
                self._overlong(buf[start:idx], out)
            else:
                self._chunk(bytes(buf[start:idx]), out)
            start = idx + dlen
            self._scan = start
        if start:
            del buf[:start]
        # A delimiter may be split across feeds: rescan its possible first bytes next time.
        self._scan = max(0, len(buf) - dlen + 1)
        if len(buf) - (dlen - 1) > self.max_frame_bytes:
            if not self._discarding:
                self._overlong(buf, out)
                self._discarding = True
            keep = bytes(buf[len(buf) - (dlen - 1) :]) if dlen > 1 else b""
            buf[:] = keep
            self._scan = 0
        return out

    def flush(self) -> list[Event]:
        out: list[Event] = []
        if self._buf and not self._discarding:
            out.append(
                FramingError(
                    "truncated",
                    f"{len(self._buf)} bytes without a delimiter at end of stream",
                    data=bytes(self._buf[:SAMPLE_BYTES]),
                )
            )
        self._buf.clear()
        self._scan = 0
        self._discarding = False
        return out


class LineFraming(DelimitedFraming):
    """Text lines. Empty lines are skipped (devices pad with them). With `start` (e.g. b"$"), a frame begins at
    the last start marker of its line (NMEA reserves "$" for that): what comes before it is garbage (power-up
    noise, or a sentence whose terminator was damaged), and a line without a marker is garbage as a whole. A
    checksum here must be hex text: a binary one could contain the terminator."""

    def __init__(
        self,
        terminator: bytes = b"\n",
        *,
        max_frame_bytes: int = 4096,
        checksum: Checksum | None = None,
        start: bytes = b"",
    ) -> None:
        super().__init__(terminator, max_frame_bytes)
        if checksum is not None and checksum.encoding != "hex":
            raise ValueError("line framing takes a hex checksum (a binary one could contain the terminator)")
        if checksum is not None and terminator in checksum.separator:
            raise ValueError("the checksum separator must not contain the terminator")
        self.checksum = checksum
        self.start = start

    def encode(self, payload: bytes) -> bytes:
        if self.checksum is not None:
            payload = self.checksum.append(payload)
        if self.delimiter in payload:
            raise ValueError("a line payload must not contain the terminator")
        return payload + self.delimiter

    def _chunk(self, chunk: bytes, out: list[Event]) -> None:
        if not chunk:
            return
        if self.start:
            idx = chunk.rfind(self.start)
            if idx < 0:
                out.append(
                    FramingError("garbage", f"line without start marker {self.start!r}", data=chunk[:SAMPLE_BYTES])
                )
                return
            if idx:
                out.append(
                    FramingError(
                        "garbage",
                        f"{idx} bytes before the start marker",
                        data=chunk[: min(idx, SAMPLE_BYTES)],
                    )
                )
                chunk = chunk[idx:]
        if self.checksum is not None:
            payload, why = self.checksum.split(chunk)
            if why:
                out.append(FramingError("checksum", why, data=chunk[:SAMPLE_BYTES]))
                return
            chunk = payload
        out.append(Frame(chunk))


# ------------------------------------------------------------------------------------------------------------
# Hunting framings: length-prefixed and fixed size.


class _HuntingFraming:
    """Frames located by their own header, with an optional sync marker in front and checksum behind."""

    def __init__(self, *, sync: bytes, checksum: Checksum | None) -> None:
        if checksum is not None and checksum.encoding != "binary":
            raise ValueError("length-prefixed and fixed-size framing take a binary checksum")
        self.sync = sync
        self.checksum = checksum
        self._ck = checksum.wire_size if checksum is not None else 0
        self._buf = bytearray()
        self._dropped = _Dropped()

    def _measure(self, buf: bytearray, pos: int) -> int | None:
        """Total wire size of the candidate frame at `pos`; None if more bytes are needed to know; 0 if the
        header is impossible. Sets `self._why` when it returns 0."""
        raise NotImplementedError

    def _body(self, frame: bytes) -> bytes:
        """The payload plus checksum field, given the whole frame."""
        raise NotImplementedError

    _why = ""

    def _run(self, final: bool) -> list[Event]:
        out: list[Event] = []
        buf = self._buf
        dropped = self._dropped
        sync = self.sync
        pos = 0
        while pos < len(buf):
            if sync:
                idx = buf.find(sync, pos)
                if idx < 0:
                    keep = len(buf) if final else max(pos, len(buf) - len(sync) + 1)
                    dropped.add(buf, pos, keep, "no sync marker")
                    pos = keep
                    break
                if idx > pos:
                    dropped.add(buf, pos, idx, "no sync marker")
                    pos = idx
            total = self._measure(buf, pos)
            if total is None or pos + (total or 0) > len(buf):
                if not final:
                    break
                dropped.add(buf, pos, pos + 1, "incomplete frame at end of stream", suspect=-1)
                pos += 1
                continue
            if total == 0:
                dropped.add(buf, pos, pos + 1, self._why)
                pos += 1
                continue
            body = self._body(bytes(buf[pos : pos + total]))
            if self.checksum is not None:
                payload, why = self.checksum.split(body)
                if why:
                    dropped.add(buf, pos, pos + 1, why, suspect=total)
                    pos += 1
                    continue
            else:
                payload = body
            if not payload and dropped.count:
                # While hunting, an empty frame is no proof of sync: a run of 0x00 (a line break condition
                # reads as zeros) is a valid empty frame under CRC-32, whose check value of nothing is 0.
                dropped.add(buf, pos, pos + 1, "empty frame while hunting")
                pos += 1
                continue
            dropped.take(out)
            out.append(Frame(payload))
            pos += total
        if pos:
            del buf[:pos]
        if final:
            dropped.take(out)
        return out

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        return self._run(final=False)

    def flush(self) -> list[Event]:
        """End of stream: whatever can still be framed is, the rest is reported (as truncated if it is the
        start of a frame that never finished)."""
        out = self._run(final=True)
        self._buf.clear()
        return out


class LengthPrefixFraming(_HuntingFraming):
    """[sync] length payload [checksum]. `length` counts the payload, plus the checksum field if
    `length_includes_checksum`. A length above `max_frame_bytes` is treated as loss of sync."""

    def __init__(
        self,
        *,
        length_bytes: Literal[1, 2, 4] = 2,
        byteorder: Literal["big", "little"] = "big",
        max_frame_bytes: int = 4096,
        sync: bytes = b"",
        checksum: Checksum | None = None,
        length_includes_checksum: bool = False,
    ) -> None:
        super().__init__(sync=sync, checksum=checksum)
        if length_bytes not in (1, 2, 4):
            raise ValueError("length_bytes must be 1, 2 or 4")
        self.length_bytes = length_bytes
        self.byteorder: Literal["big", "little"] = byteorder
        self.max_frame_bytes = min(max_frame_bytes, (1 << (8 * length_bytes)) - 1)
        self.length_includes_checksum = length_includes_checksum
        self._header = len(sync) + length_bytes

    def encode(self, payload: bytes) -> bytes:
        if len(payload) > self.max_frame_bytes:
            raise ValueError(f"payload of {len(payload)} bytes over max_frame_bytes {self.max_frame_bytes}")
        body = self.checksum.append(payload) if self.checksum is not None else payload
        length = len(body) if self.length_includes_checksum else len(payload)
        return self.sync + length.to_bytes(self.length_bytes, self.byteorder) + body

    def _measure(self, buf: bytearray, pos: int) -> int | None:
        header = self._header
        if len(buf) - pos < header:
            return None
        length = int.from_bytes(buf[pos + len(self.sync) : pos + header], self.byteorder)
        payload = length - self._ck if self.length_includes_checksum else length
        if payload < 0 or payload > self.max_frame_bytes:
            self._why = f"length {length} out of range"
            return 0
        return header + payload + self._ck

    def _body(self, frame: bytes) -> bytes:
        return frame[self._header :]


class FixedSizeFraming(_HuntingFraming):
    """[sync] payload of exactly `size` bytes [checksum]."""

    def __init__(self, size: int, *, sync: bytes = b"", checksum: Checksum | None = None) -> None:
        super().__init__(sync=sync, checksum=checksum)
        if size < 1:
            raise ValueError("a fixed frame size must be positive")
        self.size = size
        self._total = len(sync) + size + self._ck

    def encode(self, payload: bytes) -> bytes:
        if len(payload) != self.size:
            raise ValueError(f"payload of {len(payload)} bytes, the fixed frame size is {self.size}")
        return self.sync + (self.checksum.append(payload) if self.checksum is not None else payload)

    def _measure(self, buf: bytearray, pos: int) -> int | None:
        return self._total

    def _body(self, frame: bytes) -> bytes:
        return frame[len(self.sync) :]
