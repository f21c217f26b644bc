"""The MQTT 3.1.1 / 5 packet codec: `encode_packet` (packet -> bytes) and `decode_body` (bytes -> packet).

Every packet is a fixed header then a body of "remaining length" bytes:

| bytes | field                                                                         |
|-------|-------------------------------------------------------------------------------|
| 1     | packet type (high nibble) and flags (low nibble: fixed per type, except       |
|       | PUBLISH's dup/qos/retain)                                                     |
| 1..4  | remaining length, a variable byte integer                                     |
| n     | variable header and payload, laid out per type (see `_DECODERS`)              |

A packet is valid iff its type is known for the protocol version, its flags are the ones fixed for the type,
its total size is within the decoder's limit, every field decodes inside the body, the body is consumed
exactly, and the per-type rules hold (non-zero packet ids, QoS < 3, no DUP on QoS 0, known reason codes,
allowed properties). Anything else raises `MalformedPacketError` with the MQTT 5 reason code to answer with
(0x81 malformed, 0x82 protocol error, 0x95 too large, 0x84 unsupported version); after that the stream cannot
be trusted (`decoder.PacketDecoder` refuses further input). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable

from . import properties as P
from . import wire
from .errors import UnsupportedProtocolVersionError
from .packets import (
    MQTT_3_1_1,
    MQTT_5,
    AuthPacket,
    ConnackPacket,
    ConnectPacket,
    DisconnectPacket,
    Packet,
    PingreqPacket,
    PingrespPacket,
    PubackPacket,
    PubcompPacket,
    PublishPacket,
    PubrecPacket,
    PubrelPacket,
    SubackPacket,
    SubscribePacket,
    Subscription,
    UnsubackPacket,
    UnsubscribePacket,
    Will,
)
from .properties import EMPTY, Properties

MAX_PACKET_BYTES = 1 + 4 + wire.VARINT_MAX  # the largest packet the format can describe

# Reason codes each MQTT 5 packet may carry (MQTT 5.0 sections 3.2.2.2 ... 3.15.2.1).
_CONNACK_CODES = frozenset({0x00, *range(0x80, 0x8B), 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D,
                            0x9F})
_PUB_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_REL_CODES = frozenset({0x00, 0x92})
_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
_UNSUBACK_CODES = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
_DISCONNECT_CODES = frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, *range(0x8D, 0x91),
                               *range(0x93, 0xA3)})
_AUTH_CODES = frozenset({0x00, 0x18, 0x19})
_V3_CONNACK_CODES = frozenset(range(6))
_V3_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80})

_FIXED_FLAGS = {P.PUBREL: 0x2, P.SUBSCRIBE: 0x2, P.UNSUBSCRIBE: 0x2}


# ------------------------------------------------------------------------------------------------ decoding


def _properties(r: wire.Reader, version: int, packet_type: int) -> Properties:
    return P.decode_properties(r, packet_type) if version == MQTT_5 else EMPTY


def _reason(code: int, allowed: frozenset[int], what: str) -> int:
    if code not in allowed:
        raise wire.malformed(f"reason code 0x{code:02x} is not defined for {what}")
    return code


def _packet_id(r: wire.Reader) -> int:
    packet_id = r.u16()
    if packet_id == 0:
        raise wire.malformed("packet identifier 0")
    return packet_id


def _decode_connect(flags: int, r: wire.Reader, version: int) -> ConnectPacket:
    name = r.string()
    level = r.u8()
    if name != "MQTT" or level not in (MQTT_3_1_1, MQTT_5):
        raise UnsupportedProtocolVersionError(name, level)
    connect_flags = r.u8()
    if connect_flags & 0x01:
        raise wire.malformed("reserved CONNECT flag set")
    will_flag = bool(connect_flags & 0x04)
    will_qos = (connect_flags >> 3) & 0x03
    will_retain = bool(connect_flags & 0x20)
    if will_qos == 3:
        raise wire.malformed("will QoS 3")
    if not will_flag and (will_qos or will_retain):
        raise wire.malformed("will QoS or retain set without a will")
    has_user, has_password = bool(connect_flags & 0x80), bool(connect_flags & 0x40)
    if level == MQTT_3_1_1 and has_password and not has_user:
        raise wire.malformed("password without user name (MQTT 3.1.1)")
    keepalive = r.u16()
    props = _properties(r, level, P.CONNECT)
    client_id = r.string()
    will = None
    if will_flag:
        will_props = _properties(r, level, P.WILL)
        will_topic = r.string()
        will = Will(will_topic, r.binary(), will_qos, will_retain, will_props)
    username = r.string() if has_user else None
    password = r.binary() if has_password else None
    r.expect_end("CONNECT")
    clean_start = bool(connect_flags & 0x02)
    return ConnectPacket(client_id, level, clean_start, keepalive, username, password, will, props)


def _decode_connack(flags: int, r: wire.Reader, version: int) -> ConnackPacket:
    ack_flags = r.u8()
    if ack_flags & 0xFE:
        raise wire.malformed("reserved CONNACK flag set")
    if version == MQTT_5:
        code = _reason(r.u8(), _CONNACK_CODES, "CONNACK")
    else:
        code = _reason(r.u8(), _V3_CONNACK_CODES, "CONNACK")
    props = _properties(r, version, P.CONNACK)
    r.expect_end("CONNACK")
    return ConnackPacket(bool(ack_flags), code, props)


def _decode_publish(flags: int, r: wire.Reader, version: int) -> PublishPacket:
    # The hot path: read fields inline rather than through many small calls.
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise wire.malformed("PUBLISH with QoS 3")
    dup = bool(flags & 0x08)
    if dup and not qos:
        raise wire.malformed("DUP set on a QoS 0 PUBLISH")
    topic = r.string()
    packet_id = _packet_id(r) if qos else None
    props = EMPTY
    if version == MQTT_5:
        if r.pos < r.end and r.data[r.pos] == 0:
            r.pos += 1
        else:
            props = P.decode_properties(r, P.PUBLISH)
    return PublishPacket(topic, r.rest(), qos, bool(flags & 0x01), dup, packet_id, props)


_BodyDecoder = Callable[[int, wire.Reader, int], Packet]


def _ack_decoder(cls: type, codes: frozenset[int], packet_type: int) -> _BodyDecoder:
    def decode(flags: int, r: wire.Reader, version: int) -> Packet:
        packet_id = _packet_id(r)
        code, props = 0, EMPTY
        if version == MQTT_5 and r.remaining:
            code = _reason(r.u8(), codes, cls.__name__)
            if r.remaining:
                props = P.decode_properties(r, packet_type)
        r.expect_end(cls.__name__)
        packet: Packet = cls(packet_id, code, props)
        return packet

    return decode


def _decode_subscribe(flags: int, r: wire.Reader, version: int) -> SubscribePacket:
    packet_id = _packet_id(r)
    props = _properties(r, version, P.SUBSCRIBE)
    subs = []
    while r.remaining:
        topic_filter = r.string()
        options = r.u8()
        qos = options & 0x03
        if qos == 3:
            raise wire.malformed("subscription with QoS 3")
        if version == MQTT_5:
            if options & 0xC0:
                raise wire.malformed("reserved subscription option bits set")
            retain_handling = (options >> 4) & 0x03
            if retain_handling == 3:
                raise wire.protocol_error("retain handling 3")
            no_local, retain_as_published = bool(options & 0x04), bool(options & 0x08)
            subs.append(Subscription(topic_filter, qos, no_local, retain_as_published, retain_handling))
        else:
            if options & 0xFC:
                raise wire.malformed("reserved subscription option bits set")
            subs.append(Subscription(topic_filter, qos))
    if not subs:
        raise wire.protocol_error("SUBSCRIBE without a topic filter")
    return SubscribePacket(packet_id, tuple(subs), props)


def _decode_suback(flags: int, r: wire.Reader, version: int) -> SubackPacket:
    packet_id = _packet_id(r)
    props = _properties(r, version, P.SUBACK)
    allowed = _SUBACK_CODES if version == MQTT_5 else _V3_SUBACK_CODES
    codes = tuple(_reason(code, allowed, "SUBACK") for code in r.rest())
    if not codes:
        raise wire.protocol_error("SUBACK without a reason code")
    return SubackPacket(packet_id, codes, props)


def _decode_unsubscribe(flags: int, r: wire.Reader, version: int) -> UnsubscribePacket:
    packet_id = _packet_id(r)
    props = _properties(r, version, P.UNSUBSCRIBE)
    filters = []
    while r.remaining:
        filters.append(r.string())
    if not filters:
        raise wire.protocol_error("UNSUBSCRIBE without a topic filter")
    return UnsubscribePacket(packet_id, tuple(filters), props)


def _decode_unsuback(flags: int, r: wire.Reader, version: int) -> UnsubackPacket:
    packet_id = _packet_id(r)
    if version != MQTT_5:
        r.expect_end("UNSUBACK")
        return UnsubackPacket(packet_id)
    props = P.decode_properties(r, P.UNSUBACK)
    codes = tuple(_reason(code, _UNSUBACK_CODES, "UNSUBACK") for code in r.rest())
    return UnsubackPacket(packet_id, codes, props)


def _decode_empty(cls: type) -> _BodyDecoder:
    def decode(flags: int, r: wire.Reader, version: int) -> Packet:
        r.expect_end(cls.__name__)
        packet: Packet = cls()
        return packet

    return decode


def _decode_disconnect(flags: int, r: wire.Reader, version: int) -> DisconnectPacket:
    if version != MQTT_5 or not r.remaining:
        r.expect_end("DISCONNECT")
        return DisconnectPacket()
    code = _reason(r.u8(), _DISCONNECT_CODES, "DISCONNECT")
    props = P.decode_properties(r, P.DISCONNECT) if r.remaining else EMPTY
    r.expect_end("DISCONNECT")
    return DisconnectPacket(code, props)


def _decode_auth(flags: int, r: wire.Reader, version: int) -> AuthPacket:
    if version != MQTT_5:
        raise wire.malformed("packet type 15 (AUTH) does not exist in MQTT 3.1.1")
    if not r.remaining:
        return AuthPacket()
    code = _reason(r.u8(), _AUTH_CODES, "AUTH")
    props = P.decode_properties(r, P.AUTH) if r.remaining else EMPTY
    r.expect_end("AUTH")
    return AuthPacket(code, props)


_DECODERS: dict[int, _BodyDecoder] = {
    P.CONNECT: _decode_connect,
    P.CONNACK: _decode_connack,
    P.PUBLISH: _decode_publish,
    P.PUBACK: _ack_decoder(PubackPacket, _PUB_CODES, P.PUBACK),
    P.PUBREC: _ack_decoder(PubrecPacket, _PUB_CODES, P.PUBREC),
    P.PUBREL: _ack_decoder(PubrelPacket, _REL_CODES, P.PUBREL),
    P.PUBCOMP: _ack_decoder(PubcompPacket, _REL_CODES, P.PUBCOMP),
    P.SUBSCRIBE: _decode_subscribe,
    P.SUBACK: _decode_suback,
    P.UNSUBSCRIBE: _decode_unsubscribe,
    P.UNSUBACK: _decode_unsuback,
    P.PINGREQ: _decode_empty(PingreqPacket),
    P.PINGRESP: _decode_empty(PingrespPacket),
    P.DISCONNECT: _decode_disconnect,
    P.AUTH: _decode_auth,
}


def check_fixed_header(first: int, version: int | None) -> None:
    """The checks the first byte allows on its own, so garbage fails before its "body" is awaited."""
    packet_type, flags = first >> 4, first & 0x0F
    if packet_type == 0:
        raise wire.malformed("packet type 0 is reserved")
    if packet_type == P.PUBLISH:
        if flags & 0x06 == 0x06:
            raise wire.malformed("PUBLISH with QoS 3")
    elif flags != _FIXED_FLAGS.get(packet_type, 0):
        raise wire.malformed(f"packet type {packet_type} with flags 0x{flags:x}")
    if version is None and packet_type != P.CONNECT:
        raise wire.protocol_error(f"packet type {packet_type} before CONNECT")
    if version == MQTT_3_1_1 and packet_type == P.AUTH:
        raise wire.malformed("packet type 15 (AUTH) does not exist in MQTT 3.1.1")


def decode_body(first: int, data: bytes, start: int, end: int, version: int | None) -> Packet:
    """Decode the packet whose fixed header byte is `first` and whose body is `data[start:end]`."""
    check_fixed_header(first, version)
    return _DECODERS[first >> 4](first & 0x0F, wire.Reader(data, start, end), version or MQTT_3_1_1)


# ------------------------------------------------------------------------------------------------ encoding


def _v5_only(version: int, packet: object, props: Properties, code: int = 0) -> None:
    if version != MQTT_5 and (props != EMPTY or code):
        name = type(packet).__name__
        raise ValueError(f"{name} with a reason code or properties cannot be sent in MQTT 3.1.1")


def _props(version: int, props: Properties) -> bytes:
    return P.encode_properties(props) if version == MQTT_5 else b""


def _encode_connect(p: ConnectPacket, version: int) -> tuple[int, bytes]:
    version = p.protocol_version
    _v5_only(version, p, p.properties)
    flags = 0x02 if p.clean_start else 0
    payload = wire.encode_string(p.client_id)
    if p.will is not None:
        if not 0 <= p.will.qos <= 2:
            raise ValueError(f"will QoS {p.will.qos}")
        _v5_only(version, p.will, p.will.properties)
        flags |= 0x04 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
        payload += _props(version, p.will.properties)
        payload += wire.encode_string(p.will.topic) + wire.encode_binary(p.will.payload)
    if p.username is not None:
        flags |= 0x80
        payload += wire.encode_string(p.username)
    if p.password is not None:
        if version == MQTT_3_1_1 and p.username is None:
            raise ValueError("MQTT 3.1.1 cannot send a password without a user name")
        flags |= 0x40
        payload += wire.encode_binary(p.password)
    header = wire.encode_string("MQTT") + bytes((version, flags)) + wire.encode_u16(p.keepalive)
    return 0x10, header + _props(version, p.properties) + payload


def _encode_connack(p: ConnackPacket, version: int) -> tuple[int, bytes]:
    _v5_only(version, p, p.properties)
    return 0x20, bytes((1 if p.session_present else 0, p.reason_code)) + _props(version, p.properties)


def _encode_publish(p: PublishPacket, version: int) -> tuple[int, bytes]:
    _v5_only(version, p, p.properties)
    if not 0 <= p.qos <= 2 or (p.packet_id is not None) != (p.qos > 0) or (p.dup and not p.qos):
        raise ValueError(f"inconsistent PUBLISH: qos {p.qos}, packet id {p.packet_id}, dup {p.dup}")
    first = 0x30 | (0x08 if p.dup else 0) | (p.qos << 1) | (0x01 if p.retain else 0)
    body = wire.encode_string(p.topic)
    if p.packet_id is not None:
        body += wire.encode_u16(p.packet_id)
    return first, body + _props(version, p.properties) + p.payload


_Ack = PubackPacket | PubrecPacket | PubrelPacket | PubcompPacket


def _ack_encoder(first: int) -> Callable[[_Ack, int], tuple[int, bytes]]:
    def encode(p: _Ack, version: int) -> tuple[int, bytes]:
        _v5_only(version, p, p.properties, p.reason_code)
        body = wire.encode_u16(p.packet_id)
        if p.properties is not EMPTY and p.properties != EMPTY:
            body += bytes((p.reason_code,)) + P.encode_properties(p.properties)
        elif p.reason_code:
            body += bytes((p.reason_code,))
        return first, body

    return encode


def _encode_subscribe(p: SubscribePacket, version: int) -> tuple[int, bytes]:
    _v5_only(version, p, p.properties)
    if not p.subscriptions:
        raise ValueError("SUBSCRIBE needs at least one subscription")
    body = wire.encode_u16(p.packet_id) + _props(version, p.properties)
    for s in p.subscriptions:
        options = s.qos
        if version == MQTT_5:
            options |= (0x04 if s.no_local else 0) | (0x08 if s.retain_as_published else 0)
            options |= s.retain_handling << 4
        elif s.no_local or s.retain_as_published or s.retain_handling:
            raise ValueError("subscription options other than QoS cannot be sent in MQTT 3.1.1")
        body += wire.encode_string(s.topic_filter) + bytes((options,))
    return 0x82, body


def _encode_suback(p: SubackPacket, version: int) -> tuple[int, bytes]:
    _v5_only(version, p, p.properties)
    return 0x90, wire.encode_u16(p.packet_id) + _props(version, p.properties) + bytes(p.reason_codes)


def _encode_unsubscribe(p: UnsubscribePacket, version: int) -> tuple[int, bytes]:
    _v5_only(version, p, p.properties)
    if not p.topic_filters:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter")
    body = wire.encode_u16(p.packet_id) + _props(version, p.properties)
    return 0xA2, body + b"".join(wire.encode_string(f) for f in p.topic_filters)


def _encode_unsuback(p: UnsubackPacket, version: int) -> tuple[int, bytes]:
    _v5_only(version, p, p.properties)
    if version != MQTT_5:
        if p.reason_codes:
            raise ValueError("an MQTT 3.1.1 UNSUBACK has no reason codes")
        return 0xB0, wire.encode_u16(p.packet_id)
    return 0xB0, wire.encode_u16(p.packet_id) + P.encode_properties(p.properties) + bytes(p.reason_codes)


def _encode_disconnect(p: DisconnectPacket, version: int) -> tuple[int, bytes]:
    _v5_only(version, p, p.properties, p.reason_code)
    if p.properties is not EMPTY and p.properties != EMPTY:
        return 0xE0, bytes((p.reason_code,)) + P.encode_properties(p.properties)
    return 0xE0, bytes((p.reason_code,)) if p.reason_code else b""


def _encode_auth(p: AuthPacket, version: int) -> tuple[int, bytes]:
    if version != MQTT_5:
        raise ValueError("AUTH does not exist in MQTT 3.1.1")
    if p.reason_code == 0 and p.properties == EMPTY:
        return 0xF0, b""
    return 0xF0, bytes((p.reason_code,)) + P.encode_properties(p.properties)


_ENCODERS: dict[type, Callable[..., tuple[int, bytes]]] = {
    ConnectPacket: _encode_connect,
    ConnackPacket: _encode_connack,
    PublishPacket: _encode_publish,
    PubackPacket: _ack_encoder(0x40),
    PubrecPacket: _ack_encoder(0x50),
    PubrelPacket: _ack_encoder(0x62),
    PubcompPacket: _ack_encoder(0x70),
    SubscribePacket: _encode_subscribe,
    SubackPacket: _encode_suback,
    UnsubscribePacket: _encode_unsubscribe,
    UnsubackPacket: _encode_unsuback,
    PingreqPacket: lambda p, v: (0xC0, b""),
    PingrespPacket: lambda p, v: (0xD0, b""),
    DisconnectPacket: _encode_disconnect,
    AuthPacket: _encode_auth,
}


def encode_packet(packet: Packet, protocol_version: int) -> bytes:
    """The bytes of `packet` in `protocol_version` (4 = 3.1.1, 5). A CONNECT uses its own version."""
    if protocol_version not in (MQTT_3_1_1, MQTT_5):
        raise ValueError(f"protocol_version must be 4 or 5, not {protocol_version!r}")
    first, body = _ENCODERS[type(packet)](packet, protocol_version)
    return bytes((first,)) + wire.encode_varint(len(body)) + body
