"""MQTT control packets as values: one frozen dataclass per packet type, the same for 3.1.1 and 5.

Fields that only MQTT 5 carries (reason codes on acks, properties) keep their defaults in 3.1.1 packets; the
codec (`codec.py`) refuses to encode a 3.1.1 packet that would lose information. Byte layouts and validity
rules live with the reader and writer in `codec.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .properties import EMPTY, Properties

MQTT_3_1_1 = 4
MQTT_5 = 5


@dataclass(frozen=True, slots=True)
class Will:
    """The message a server publishes for a client whose connection ends without a normal DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class ConnectPacket:
    client_id: str
    protocol_version: int = MQTT_3_1_1
    clean_start: bool = True  # "clean session" in 3.1.1
    keepalive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class ConnackPacket:
    session_present: bool = False
    reason_code: int = 0  # the 3.1.1 return code for 3.1.1
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class PublishPacket:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # present iff qos > 0
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class PubackPacket:
    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class PubrecPacket:
    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class PubrelPacket:
    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class PubcompPacket:
    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (MQTT 5.0 section 3.8.3.1)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False  # MQTT 5 only
    retain_as_published: bool = False  # MQTT 5 only
    retain_handling: int = 0  # MQTT 5 only


@dataclass(frozen=True, slots=True)
class SubscribePacket:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class SubackPacket:
    packet_id: int
    reason_codes: tuple[int, ...]  # granted QoS (0..2) or a failure code, one per filter
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class UnsubscribePacket:
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class UnsubackPacket:
    packet_id: int
    reason_codes: tuple[int, ...] = ()  # MQTT 5 only; 3.1.1 UNSUBACK carries none
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class PingreqPacket:
    pass


@dataclass(frozen=True, slots=True)
class PingrespPacket:
    pass


@dataclass(frozen=True, slots=True)
class DisconnectPacket:
    reason_code: int = 0  # MQTT 5 only
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class AuthPacket:
    """MQTT 5 enhanced authentication. The listener does not offer any method and refuses it."""

    reason_code: int = 0
    properties: Properties = EMPTY


@dataclass(frozen=True, slots=True)
class OversizedPublish:
    """Not an MQTT packet: a PUBLISH over the decoder's size limit that it was told to keep for a dead letter.

    `data` is the whole packet (fixed header included); `decoder.decode_packet_bytes` decodes it, no limit.
    """

    size: int
    limit: int
    data: bytes


Packet = (
    ConnectPacket
    | ConnackPacket
    | PublishPacket
    | PubackPacket
    | PubrecPacket
    | PubrelPacket
    | PubcompPacket
    | SubscribePacket
    | SubackPacket
    | UnsubscribePacket
    | UnsubackPacket
    | PingreqPacket
    | PingrespPacket
    | DisconnectPacket
    | AuthPacket
)
