"""Splitting a byte stream into MQTT packets: `PacketDecoder`, the streaming side of `codec`.

The decoder reads the fixed header (type/flags byte, remaining-length varint), checks the total size against
its limit before buffering the body, waits for the whole packet, then hands the body to `codec.decode_body`.
A stream is valid iff every packet in it is (see `codec`); at the first invalid packet the decoder raises and
stays failed, since the framing of everything after it is unknown.
"""

from __future__ import annotations

from ..errors import MalformedPacketError
from . import properties as P
from . import wire
from .codec import MAX_PACKET_BYTES, check_fixed_header, decode_body
from .errors import MalformedPublishError, PacketTooLargeError
from .packets import MQTT_3_1_1, MQTT_5, ConnectPacket, OversizedPublish, Packet


def decode_packet_bytes(data: bytes, protocol_version: int | None) -> Packet:
    """Decode exactly one whole packet (fixed header included), with no size limit."""
    got = wire.decode_varint(data, 1, len(data)) if data else None
    if got is None:
        raise wire.malformed("incomplete fixed header")
    remaining, start = got
    if start + remaining != len(data):
        given = len(data) - start
        raise wire.malformed(f"remaining length {remaining} does not match the {given} bytes given")
    return decode_body(data[0], data, start, len(data), protocol_version)


class PacketDecoder:
    """Splits a byte stream into packets. Feed it with `receive_data`, take packets with `next_packet`.

    Packets are decoded one at a time, so the caller can stop taking them (backpressure) while the rest stay
    buffered as bytes. Bytes that arrive in small pieces are joined only once the whole packet is there, so a
    slow sender costs linear time. `protocol_version=None` (a server) learns the version from the CONNECT.

    A packet larger than `max_packet_bytes` raises `PacketTooLargeError`, unless it is a PUBLISH no larger
    than `capture_oversize_bytes`: then it is read whole and returned as `OversizedPublish` (for a dead
    letter) and decoding goes on after it.
    """

    def __init__(
        self,
        protocol_version: int | None = None,
        *,
        max_packet_bytes: int = MAX_PACKET_BYTES,
        capture_oversize_bytes: int = 0,
    ) -> None:
        if protocol_version not in (None, MQTT_3_1_1, MQTT_5):
            raise ValueError(f"protocol_version must be None, 4 or 5, not {protocol_version!r}")
        if max_packet_bytes < 2:
            raise ValueError("max_packet_bytes must be at least 2")
        self.protocol_version = protocol_version
        self.max_packet_bytes = max_packet_bytes
        self.capture_oversize_bytes = capture_oversize_bytes
        self._buf = b""
        self._pos = 0
        self._chunks: list[bytes] = []
        self._chunk_bytes = 0
        self._need = 0  # bytes needed before parsing is worth trying again
        self._error: MalformedPacketError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as packets."""
        return len(self._buf) - self._pos + self._chunk_bytes

    def receive_data(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._chunk_bytes += len(data)

    def feed(self, data: bytes) -> list[Packet | OversizedPublish]:
        """Buffer `data` and return every packet now complete."""
        self.receive_data(data)
        out = []
        while (packet := self.next_packet()) is not None:
            out.append(packet)
        return out

    def next_packet(self) -> Packet | OversizedPublish | None:
        """The next complete packet, or None until more bytes arrive. Raises for a packet that breaks the spec
        (and again on every later call: the stream has lost its framing or its peer its trust)."""
        if self._error is not None:
            raise self._error
        available = len(self._buf) - self._pos + self._chunk_bytes
        if available < 2 or available < self._need:
            return None
        if self._chunks:
            if self._pos == len(self._buf) and len(self._chunks) == 1:
                self._buf = self._chunks[0]  # the common case: whole packets in one read, no copy
            else:
                self._buf = b"".join([self._buf[self._pos :], *self._chunks])
            self._pos = 0
            self._chunks.clear()
            self._chunk_bytes = 0
        try:
            return self._parse()
        except MalformedPacketError as exc:
            self._error = exc
            raise

    def _parse(self) -> Packet | OversizedPublish | None:
        buf, pos = self._buf, self._pos
        check_fixed_header(buf[pos], self.protocol_version)
        got = wire.decode_varint(buf, pos + 1, len(buf))
        if got is None:
            self._need = len(buf) - pos + 1
            return None
        remaining, start = got
        end = start + remaining
        size = end - pos
        first = buf[pos]
        too_large = size > self.max_packet_bytes
        if too_large and (first >> 4 != P.PUBLISH or size > self.capture_oversize_bytes):
            raise PacketTooLargeError(first >> 4, size, self.max_packet_bytes)
        if end > len(buf):
            self._need = size
            return None
        self._need = 0
        self._pos = end
        if end == len(buf):
            self._buf, self._pos = b"", 0
        if too_large:
            return OversizedPublish(size, self.max_packet_bytes, buf[pos:end])
        try:
            packet = decode_body(first, buf, start, end, self.protocol_version)
        except MalformedPacketError as exc:
            if first >> 4 == P.PUBLISH and type(exc) is MalformedPacketError:
                data = buf[pos:end]
                raise MalformedPublishError(str(exc), reason_code=exc.reason_code, data=data) from None
            raise
        if self.protocol_version is None and type(packet) is ConnectPacket:
            self.protocol_version = packet.protocol_version
        return packet


