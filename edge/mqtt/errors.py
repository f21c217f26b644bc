"""Errors of the MQTT listener and its codec, under edge's root `EdgeError`.

Codec errors derive from `MalformedPacketError` and carry the MQTT 5 reason code the server answers with, so
the connection can close with the right DISCONNECT without knowing which check failed.
"""

from __future__ import annotations

from ..errors import EdgeError, MalformedPacketError
from . import reasons


class PacketTooLargeError(MalformedPacketError):
    """A packet whose declared size exceeds the configured maximum (MQTT 5 reason 0x95)."""

    def __init__(self, packet_type: int, size: int, limit: int) -> None:
        super().__init__(
            f"packet of type {packet_type} is {size} bytes, over the limit of {limit}",
            reason_code=reasons.PACKET_TOO_LARGE,
        )
        self.packet_type = packet_type
        self.size = size
        self.limit = limit


class UnsupportedProtocolVersionError(MalformedPacketError):
    """A CONNECT for a protocol level other than 4 (3.1.1) or 5. The server answers CONNACK 0x01 / 0x84."""

    def __init__(self, protocol_name: str, level: int) -> None:
        super().__init__(
            f"unsupported MQTT protocol {protocol_name!r} level {level}: only 3.1.1 (4) and 5 are spoken",
            reason_code=reasons.UNSUPPORTED_PROTOCOL_VERSION,
        )
        self.protocol_name = protocol_name
        self.level = level


class MalformedPublishError(MalformedPacketError):
    """A PUBLISH that was delimited but cannot be decoded. `data` is the whole packet, for a dead letter."""

    def __init__(self, message: str, *, reason_code: int, data: bytes) -> None:
        super().__init__(message, reason_code=reason_code)
        self.data = data


class ListenerBindError(EdgeError):
    """The listener cannot bind its address (port in use, address not local, no permission)."""

    retriable = True  # a port held by a process that is exiting frees up without an operator

    def __init__(self, host: str, port: int, detail: str) -> None:
        super().__init__(
            f"MQTT listener cannot listen on {host}:{port}: {detail} "
            "(stop the other process on that port or change the listener's `port`/`host`)"
        )
        self.host = host
        self.port = port
        self.detail = detail
