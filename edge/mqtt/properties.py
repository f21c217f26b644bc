"""MQTT 5 properties (MQTT 5.0 section 2.2.2): a variable byte integer length, then (identifier, value) pairs.

| id   | property                          | type        | allowed in                                  |
|------|-----------------------------------|-------------|---------------------------------------------|
| 0x01 | payload_format_indicator          | byte 0/1    | PUBLISH, will                               |
| 0x02 | message_expiry_interval           | four byte   | PUBLISH, will                               |
| 0x03 | content_type                      | string      | PUBLISH, will                               |
| 0x08 | response_topic                    | string      | PUBLISH, will                               |
| 0x09 | correlation_data                  | binary      | PUBLISH, will                               |
| 0x0B | subscription_identifier           | varint > 0  | PUBLISH (repeatable), SUBSCRIBE             |
| 0x11 | session_expiry_interval           | four byte   | CONNECT, CONNACK, DISCONNECT                |
| 0x12 | assigned_client_identifier        | string      | CONNACK                                     |
| 0x13 | server_keep_alive                 | two byte    | CONNACK                                     |
| 0x15 | authentication_method             | string      | CONNECT, CONNACK, AUTH                      |
| 0x16 | authentication_data               | binary      | CONNECT, CONNACK, AUTH                      |
| 0x17 | request_problem_information       | byte 0/1    | CONNECT                                     |
| 0x18 | will_delay_interval               | four byte   | will                                        |
| 0x19 | request_response_information      | byte 0/1    | CONNECT                                     |
| 0x1A | response_information              | string      | CONNACK                                     |
| 0x1C | server_reference                  | string      | CONNACK, DISCONNECT                         |
| 0x1F | reason_string                     | string      | every ack, CONNACK, DISCONNECT, AUTH        |
| 0x21 | receive_maximum                   | two byte >0 | CONNECT, CONNACK                            |
| 0x22 | topic_alias_maximum               | two byte    | CONNECT, CONNACK                            |
| 0x23 | topic_alias                       | two byte    | PUBLISH                                     |
| 0x24 | maximum_qos                       | byte 0/1    | CONNACK                                     |
| 0x25 | retain_available                  | byte 0/1    | CONNACK                                     |
| 0x26 | user_property                     | string pair | every packet but PINGREQ/PINGRESP, will     |
| 0x27 | maximum_packet_size               | four byte>0 | CONNECT, CONNACK                            |
| 0x28 | wildcard_subscription_available   | byte 0/1    | CONNACK                                     |
| 0x29 | subscription_identifier_available | byte 0/1    | CONNACK                                     |
| 0x2A | shared_subscription_available     | byte 0/1    | CONNACK                                     |

A property block is valid iff every identifier is known and allowed in its packet, none but user_property (and
subscription_identifier in PUBLISH) appears twice, every value decodes inside the block and the block ends
exactly at its declared length. An unknown or misplaced identifier is malformed (0x81); a repeated one or an
out-of-range value is a protocol error (0x82).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from . import wire

# Packet type numbers (MQTT fixed header), plus a pseudo-type for the will properties inside CONNECT.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15
WILL = 16


@dataclass(frozen=True, slots=True, repr=False)
class Properties:
    """The properties of one MQTT 5 packet; None (or empty) means absent. 3.1.1 packets always carry EMPTY."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __repr__(self) -> str:
        present = (f"{f}={getattr(self, f)!r}" for f in _FIELD_ORDER if getattr(self, f) not in (None, ()))
        return f"Properties({', '.join(present)})"


EMPTY = Properties()

_BYTE, _U16, _U32, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_ACKS = frozenset({PUBACK, PUBREC, PUBREL, PUBCOMP})
_ALL = frozenset({CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE,
                  UNSUBACK, DISCONNECT, AUTH, WILL})
_MESSAGE = frozenset({PUBLISH, WILL})

# identifier -> (attribute, type, packets it may appear in, smallest allowed value, largest allowed value)
_TABLE: dict[int, tuple[str, int, frozenset[int], int, int]] = {
    0x01: ("payload_format_indicator", _BYTE, _MESSAGE, 0, 1),
    0x02: ("message_expiry_interval", _U32, _MESSAGE, 0, 0xFFFFFFFF),
    0x03: ("content_type", _STRING, _MESSAGE, 0, 0),
    0x08: ("response_topic", _STRING, _MESSAGE, 0, 0),
    0x09: ("correlation_data", _BINARY, _MESSAGE, 0, 0),
    0x0B: ("subscription_identifiers", _VARINT, frozenset({PUBLISH, SUBSCRIBE}), 1, wire.VARINT_MAX),
    0x11: ("session_expiry_interval", _U32, frozenset({CONNECT, CONNACK, DISCONNECT}), 0, 0xFFFFFFFF),
    0x12: ("assigned_client_identifier", _STRING, frozenset({CONNACK}), 0, 0),
    0x13: ("server_keep_alive", _U16, frozenset({CONNACK}), 0, 0xFFFF),
    0x15: ("authentication_method", _STRING, frozenset({CONNECT, CONNACK, AUTH}), 0, 0),
    0x16: ("authentication_data", _BINARY, frozenset({CONNECT, CONNACK, AUTH}), 0, 0),
    0x17: ("request_problem_information", _BYTE, frozenset({CONNECT}), 0, 1),
    0x18: ("will_delay_interval", _U32, frozenset({WILL}), 0, 0xFFFFFFFF),
    0x19: ("request_response_information", _BYTE, frozenset({CONNECT}), 0, 1),
    0x1A: ("response_information", _STRING, frozenset({CONNACK}), 0, 0),
    0x1C: ("server_reference", _STRING, frozenset({CONNACK, DISCONNECT}), 0, 0),
    0x1F: ("reason_string", _STRING, frozenset({CONNACK, SUBACK, UNSUBACK, DISCONNECT, AUTH}) | _ACKS, 0, 0),
    0x21: ("receive_maximum", _U16, frozenset({CONNECT, CONNACK}), 1, 0xFFFF),
    0x22: ("topic_alias_maximum", _U16, frozenset({CONNECT, CONNACK}), 0, 0xFFFF),
    0x23: ("topic_alias", _U16, frozenset({PUBLISH}), 0, 0xFFFF),  # 0 is the session's check (0x94)
    0x24: ("maximum_qos", _BYTE, frozenset({CONNACK}), 0, 1),
    0x25: ("retain_available", _BYTE, frozenset({CONNACK}), 0, 1),
    0x26: ("user_properties", _PAIR, _ALL, 0, 0),
    0x27: ("maximum_packet_size", _U32, frozenset({CONNECT, CONNACK}), 1, 0xFFFFFFFF),
    0x28: ("wildcard_subscription_available", _BYTE, frozenset({CONNACK}), 0, 1),
    0x29: ("subscription_identifier_available", _BYTE, frozenset({CONNACK}), 0, 1),
    0x2A: ("shared_subscription_available", _BYTE, frozenset({CONNACK}), 0, 1),
}
_BY_NAME = {attr: (ident, kind) for ident, (attr, kind, _, _, _) in _TABLE.items()}
_FIELD_ORDER = [f.name for f in fields(Properties)]


def decode_properties(reader: wire.Reader, packet_type: int) -> Properties:
    """Read one property block at the reader's position, checked against what `packet_type` allows."""
    length = reader.varint()
    end = reader.pos + length
    if end > reader.end:
        raise wire.malformed("property length runs past the end of the packet")
    if length == 0:
        return EMPTY
    sub = wire.Reader(reader.data, reader.pos, end)
    values: dict[str, Any] = {}
    pairs: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    while sub.pos < end:
        ident = sub.varint()
        entry = _TABLE.get(ident)
        if entry is None:
            raise wire.malformed(f"unknown property identifier 0x{ident:02x}")
        attr, kind, allowed, low, high = entry
        if packet_type not in allowed:
            raise wire.malformed(f"property {attr} (0x{ident:02x}) not allowed in packet type {packet_type}")
        if kind == _PAIR:
            pairs.append((sub.string(), sub.string()))
            continue
        value: Any
        if kind == _BYTE:
            value = sub.u8()
        elif kind == _U16:
            value = sub.u16()
        elif kind == _U32:
            value = sub.u32()
        elif kind == _VARINT:
            value = sub.varint()
        elif kind == _STRING:
            value = sub.string()
        else:
            value = sub.binary()
        if isinstance(value, int) and not low <= value <= high:
            raise wire.protocol_error(f"property {attr} has the out-of-range value {value}")
        if ident == 0x0B:
            if sub_ids and packet_type != PUBLISH:
                raise wire.protocol_error("subscription_identifier appears twice")
            sub_ids.append(value)
            continue
        if attr in values:
            raise wire.protocol_error(f"property {attr} (0x{ident:02x}) appears twice")
        values[attr] = value
    reader.pos = end
    if pairs:
        values["user_properties"] = tuple(pairs)
    if sub_ids:
        values["subscription_identifiers"] = tuple(sub_ids)
    return Properties(**values)


def encode_properties(props: Properties) -> bytes:
    """The property block (length included). Encodes what is set, in table order; EMPTY is one zero byte."""
    if props is EMPTY:
        return b"\x00"
    out = bytearray()
    for attr in _FIELD_ORDER:
        value = getattr(props, attr)
        if value is None or value == ():
            continue
        ident, kind = _BY_NAME[attr]
        if kind == _PAIR:
            for key, val in value:
                out += wire.encode_varint(ident) + wire.encode_string(key) + wire.encode_string(val)
        elif kind == _VARINT:
            for item in value:
                out += wire.encode_varint(ident) + wire.encode_varint(item)
        else:
            out += wire.encode_varint(ident)
            if kind == _BYTE:
                out.append(value)
            elif kind == _U16:
                out += wire.encode_u16(value)
            elif kind == _U32:
                out += wire.encode_u32(value)
            elif kind == _STRING:
                out += wire.encode_string(value)
            else:
                out += wire.encode_binary(value)
    return wire.encode_varint(len(out)) + bytes(out)
