"""The MQTT packet codec: round trips of every packet in 3.1.1 and 5 (whole and byte by byte), golden bytes
from the spec and from real clients, every validity rule, and properties over arbitrary bytes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgestream.edge.errors import MalformedPacketError
from edgestream.edge.mqtt import properties as P
from edgestream.edge.mqtt import wire
from edgestream.edge.mqtt.codec import encode_packet
from edgestream.edge.mqtt.decoder import PacketDecoder, decode_packet_bytes
from edgestream.edge.mqtt.errors import MalformedPublishError, PacketTooLargeError, UnsupportedProtocolVersionError
from edgestream.edge.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    AuthPacket,
    ConnackPacket,
    ConnectPacket,
    DisconnectPacket,
    OversizedPublish,
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
from edgestream.edge.mqtt.properties import EMPTY, Properties

pytestmark = pytest.mark.timeout(120)  # a decoder that loops forever fails here instead of hanging the run

# ------------------------------------------------------------------------------------------ sample packets

_V5_PUBLISH_PROPS = Properties(
    payload_format_indicator=1, message_expiry_interval=3600, content_type="application/json",
    response_topic="replies/1", correlation_data=b"\x00\x01", topic_alias=3,
    user_properties=(("unit", "degC"), ("unit", "K")),
)


def _packets(version: int) -> list[Packet]:
    """One or more of every packet type, using every field the version can carry."""
    v5 = version == MQTT_5

    def props(**kwargs: object) -> Properties:
        return Properties(**kwargs) if v5 else EMPTY  # type: ignore[arg-type]

    will = Will("status/s1", b"offline", 1, True, props(will_delay_interval=10, content_type="text/plain"))
    return [
        ConnectPacket("sensor-1", version, True, 60),
        ConnectPacket("sensor-2", version, False, 0, "plant", b"pw\x00\xff", will,
                      props(session_expiry_interval=600, receive_maximum=10, maximum_packet_size=4096,
                            topic_alias_maximum=5, request_problem_information=0, user_properties=(("a", "b"),))),
        ConnectPacket("", version, True, 65535, "user-only"),
        ConnackPacket(False, 0),
        ConnackPacket(True, 0, props(receive_maximum=64, maximum_qos=1, maximum_packet_size=262144,
                                     assigned_client_identifier="auto-1", server_keep_alive=120,
                                     topic_alias_maximum=32, retain_available=1, shared_subscription_available=0,
                                     subscription_identifier_available=0, wildcard_subscription_available=1,
                                     reason_string="welcome", response_information="ri",
                                     server_reference="other:1883", session_expiry_interval=60)),
        ConnackPacket(False, 0x86 if v5 else 0x04),
        PublishPacket("a/b", b"", 0),
        PublishPacket("factory/line1/temp", b'{"t":21.5}', 1, True, True, 1),
        PublishPacket("x", bytes(range(256)) * 3, 2, False, False, 65535, _V5_PUBLISH_PROPS if v5 else EMPTY),
        PublishPacket("unicode/\u00e9\u20ac/\U0001f600", b"\xff", 1, packet_id=77),
        PubackPacket(1),
        PubackPacket(2, 0x97 if v5 else 0, props(reason_string="full")),
        PubackPacket(3, 0x99 if v5 else 0),
        PubrecPacket(4),
        PubrecPacket(5, 0x80 if v5 else 0, props(user_properties=(("k", "v"),))),
        PubrelPacket(6),
        PubrelPacket(7, 0x92 if v5 else 0),
        PubcompPacket(8),
        PubcompPacket(9, 0x92 if v5 else 0, props(reason_string="unknown id")),
        SubscribePacket(10, (Subscription("a/+/c", 1), Subscription("#", 2), Subscription("$SYS/x", 0))),
        SubscribePacket(11, (Subscription("t", 1, v5, v5, 2 if v5 else 0),), props(subscription_identifiers=(7,))),
        SubackPacket(10, (0, 1, 2, 0x80)),
        SubackPacket(12, (0x8F if v5 else 0x80, 0), props(reason_string="bad filter")),
        UnsubscribePacket(13, ("a/+/c", "#"), props(user_properties=(("x", "y"),))),
        UnsubackPacket(13, (0, 0x11) if v5 else ()),
        PingreqPacket(),
        PingrespPacket(),
        DisconnectPacket(),
        *(
            [
                DisconnectPacket(0x04),
                DisconnectPacket(0x8E, Properties(reason_string="taken over", session_expiry_interval=0)),
                AuthPacket(),
                AuthPacket(0x18, Properties(authentication_method="SCRAM", authentication_data=b"\x01")),
            ]
            if v5
            else []
        ),
    ]


VERSIONS = [pytest.param(MQTT_3_1_1, id="3.1.1"), pytest.param(MQTT_5, id="5")]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_packet_round_trips_fed_whole(version: int) -> None:
    packets = _packets(version)
    stream = b"".join(encode_packet(p, version) for p in packets)
    decoder = PacketDecoder(version)
    assert decoder.feed(stream) == packets
    assert decoder.buffered == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_every_packet_round_trips_fed_one_byte_at_a_time(version: int) -> None:
    packets = _packets(version)
    stream = b"".join(encode_packet(p, version) for p in packets)
    decoder = PacketDecoder(version)
    out: list[object] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert out == packets


@pytest.mark.parametrize("version", VERSIONS)
def test_each_packet_decodes_alone(version: int) -> None:
    for packet in _packets(version):
        assert decode_packet_bytes(encode_packet(packet, version), version) == packet


@pytest.mark.parametrize("version", VERSIONS)
def test_a_server_decoder_learns_the_version_from_connect(version: int) -> None:
    connect = ConnectPacket("s", version)
    publish = PublishPacket("t", b"p", 1, packet_id=1, properties=EMPTY)
    decoder = PacketDecoder()
    assert decoder.feed(encode_packet(connect, version) + encode_packet(publish, version)) == [connect, publish]
    assert decoder.protocol_version == version


def test_mqtt_3_refuses_to_encode_what_only_mqtt_5_carries() -> None:
    for packet in (PubackPacket(1, 0x97), PublishPacket("t", b"", properties=Properties(topic_alias=1)),
                   DisconnectPacket(0x04), UnsubackPacket(1, (0,)), AuthPacket(),
                   SubscribePacket(1, (Subscription("t", 0, no_local=True),))):
        with pytest.raises(ValueError):
            encode_packet(packet, MQTT_3_1_1)
    with pytest.raises(ValueError, match="password without a user name"):
        encode_packet(ConnectPacket("c", MQTT_3_1_1, password=b"x"), MQTT_3_1_1)
    with pytest.raises(ValueError, match="inconsistent PUBLISH"):
        encode_packet(PublishPacket("t", b"", qos=1), MQTT_3_1_1)


# ---------------------------------------------------------------------------------------------- golden bytes

# MQTT 3.1.1 section 2.2.3, table 2.4: the boundaries of each remaining-length size.
_SPEC_VARINTS = [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01"), (268_435_455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize(("value", "encoded"), _SPEC_VARINTS)
def test_variable_byte_integers_match_the_spec_table(value: int, encoded: bytes) -> None:
    assert wire.encode_varint(value) == encoded
    assert wire.decode_varint(encoded, 0, len(encoded)) == (value, len(encoded))
    assert wire.decode_varint(encoded, 0, len(encoded) - 1) is None  # incomplete, not an error


def test_mqtt_3_connect_matches_the_spec_example() -> None:
    # MQTT 3.1.1 section 3.1.2.10, figure 3.6: "MQTT", level 4, flags 0xCE (user, password, will QoS 1,
    # will, clean session), keep alive 10.
    variable_header = b"\x00\x04MQTT\x04\xce\x00\x0a"
    body = variable_header + b"\x00\x01c" + b"\x00\x01w" + b"\x00\x01m" + b"\x00\x01u" + b"\x00\x01p"
    packet = decode_packet_bytes(b"\x10" + bytes((len(body),)) + body, None)
    assert packet == ConnectPacket("c", MQTT_3_1_1, True, 10, "u", b"p", Will("w", b"m", 1, False))
    assert encode_packet(packet, MQTT_3_1_1)[2:] == body


# Captured on the wire from mosquitto_pub 2.0.11 (Debian mosquitto-clients) and paho-mqtt 2.2.0 talking to a
# socket that answered CONNACK/PUBACK, e.g.
#   mosquitto_pub -V mqttv311 -i sensor-7 -u plant -P s3cret -t factory/line1/temp -m '{"t":21.5}' -q 1
MOSQUITTO_PUB_V311 = (
    b'\x10#\x00\x04MQTT\x04\xc2\x00<\x00\x08sensor-7\x00\x05plant\x00\x06s3cret'
    b'2 \x00\x12factory/line1/temp\x00\x01{"t":21.5}'
    b'\xe0\x00'
)
#   mosquitto_pub -V mqttv5 -i sensor-7 -t factory/line1/temp -m '{"t":21.5}' -q 1
#                 -D publish user-property unit degC -D connect session-expiry-interval 60
MOSQUITTO_PUB_V5 = (
    b'\x10\x1d\x00\x04MQTT\x05\x02\x00<\x08\x11\x00\x00\x00<!\x00\x14\x00\x08sensor-7'
    b'2.\x00\x12factory/line1/temp\x00\x01\r&\x00\x04unit\x00\x04degC{"t":21.5}'
    b'\xe0\x00'
)
#   paho Client(client_id="paho-1", protocol=MQTTv5), keepalive 30, publish("plant/a", b"42", qos=1) with
#   properties UserProperty [("site", "b7")] and ContentType "application/json"
PAHO_V5 = (
    b'\x10\x13\x00\x04MQTT\x05\x02\x00\x1e\x00\x00\x06paho-1'
    b'2,\x00\x07plant/a\x00\x01\x1e\x03\x00\x10application/json&\x00\x04site\x00\x02b742'
    b'\xe0\x00'
)


def test_golden_mosquitto_pub_mqtt_3() -> None:
    packets = PacketDecoder().feed(MOSQUITTO_PUB_V311)
    assert packets == [
        ConnectPacket("sensor-7", MQTT_3_1_1, True, 60, "plant", b"s3cret"),
        PublishPacket("factory/line1/temp", b'{"t":21.5}', 1, packet_id=1),
        DisconnectPacket(),
    ]
    assert b"".join(encode_packet(p, MQTT_3_1_1) for p in packets) == MOSQUITTO_PUB_V311


def test_golden_mosquitto_pub_mqtt_5() -> None:
    packets = PacketDecoder().feed(MOSQUITTO_PUB_V5)
    assert packets == [
        ConnectPacket("sensor-7", MQTT_5, True, 60,
                      properties=Properties(session_expiry_interval=60, receive_maximum=20)),
        PublishPacket("factory/line1/temp", b'{"t":21.5}', 1, packet_id=1,
                      properties=Properties(user_properties=(("unit", "degC"),))),
        DisconnectPacket(),
    ]
    assert b"".join(encode_packet(p, MQTT_5) for p in packets) == MOSQUITTO_PUB_V5


def test_golden_paho_mqtt_5() -> None:
    packets = PacketDecoder().feed(PAHO_V5)
    assert packets == [
        ConnectPacket("paho-1", MQTT_5, True, 30),
        PublishPacket("plant/a", b"42", 1, packet_id=1,
                      properties=Properties(content_type="application/json", user_properties=(("site", "b7"),))),
        DisconnectPacket(),
    ]
    # paho writes the content type before the user property, as the table order does: byte-identical
    assert b"".join(encode_packet(p, MQTT_5) for p in packets) == PAHO_V5


# ----------------------------------------------------------------------------------------- validity rules

_CONNECT_V311 = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c"
_CONNECT_V5 = b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01c"

MALFORMED: list[tuple[str, int | None, bytes, int]] = [
    # (case, version, bytes, expected reason code)
    ("reserved packet type 0", MQTT_3_1_1, b"\x00\x00", 0x81),
    ("AUTH in 3.1.1", MQTT_3_1_1, b"\xf0\x00", 0x81),
    ("wrong fixed flags on PUBACK", MQTT_3_1_1, b"\x41\x02\x00\x01", 0x81),
    ("PUBREL without its 0b0010 flags", MQTT_3_1_1, b"\x60\x02\x00\x01", 0x81),
    ("SUBSCRIBE without its 0b0010 flags", MQTT_3_1_1, b"\x80\x06\x00\x01\x00\x01a\x00", 0x81),
    ("PUBLISH QoS 3", MQTT_3_1_1, b"\x36\x05\x00\x01a\x00\x01", 0x81),
    ("DUP on QoS 0", MQTT_3_1_1, b"\x38\x03\x00\x01a", 0x81),
    ("packet id 0", MQTT_3_1_1, b"\x32\x05\x00\x01a\x00\x00", 0x81),
    ("topic longer than the packet", MQTT_3_1_1, b"\x30\x03\x00\x09a", 0x81),
    ("invalid UTF-8 topic", MQTT_3_1_1, b"\x30\x04\x00\x02\xc3\x28", 0x81),
    ("U+0000 in a topic", MQTT_3_1_1, b"\x30\x04\x00\x02a\x00", 0x81),
    ("UTF-16 surrogate in a topic", MQTT_3_1_1, b"\x30\x05\x00\x03\xed\xa0\x80", 0x81),
    ("remaining length of 5 bytes", MQTT_3_1_1, b"\x30\xff\xff\xff\xff\x7f", 0x81),
    ("remaining length not minimal", MQTT_3_1_1, b"\xc0\x80\x00", 0x81),
    ("PINGREQ with a body", MQTT_3_1_1, b"\xc0\x01\x00", 0x81),
    ("3.1.1 PUBACK with a reason code", MQTT_3_1_1, b"\x40\x03\x00\x01\x00", 0x81),
    ("3.1.1 DISCONNECT with a body", MQTT_3_1_1, b"\xe0\x01\x00", 0x81),
    ("SUBSCRIBE without a filter", MQTT_3_1_1, b"\x82\x02\x00\x01", 0x82),
    ("UNSUBSCRIBE without a filter", MQTT_3_1_1, b"\xa2\x02\x00\x01", 0x82),
    ("subscription QoS 3", MQTT_3_1_1, b"\x82\x06\x00\x01\x00\x01a\x03", 0x81),
    ("3.1.1 subscription option bits", MQTT_3_1_1, b"\x82\x06\x00\x01\x00\x01a\x04", 0x81),
    ("3.1.1 SUBACK code 0x8F", MQTT_3_1_1, b"\x90\x03\x00\x01\x8f", 0x81),
    ("CONNACK reserved flag", MQTT_3_1_1, b"\x20\x02\x02\x00", 0x81),
    ("CONNECT reserved flag", None, b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01c", 0x81),
    ("CONNECT will QoS without will", None, b"\x10\x0d\x00\x04MQTT\x04\x0a\x00\x3c\x00\x01c", 0x81),
    ("CONNECT will QoS 3", None, b"\x10\x0d\x00\x04MQTT\x04\x1e\x00\x3c\x00\x01c", 0x81),
    ("3.1.1 CONNECT password without user", None, b"\x10\x10\x00\x04MQTT\x04\x42\x00\x3c\x00\x01c\x00\x01p",
     0x81),
    ("CONNECT with trailing bytes", None, _CONNECT_V311[:1] + b"\x0e" + _CONNECT_V311[2:] + b"x", 0x81),
    ("CONNECT truncated", None, b"\x10\x0c" + _CONNECT_V311[2:-1], 0x81),
    ("MQTT 3.1 (MQIsdp)", None, b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01c", 0x84),
    ("protocol level 6", None, b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x3c\x00\x01c", 0x84),
    ("PUBLISH before CONNECT", None, b"\x30\x03\x00\x01a", 0x82),
    ("unknown property", MQTT_5, b"\x30\x06\x00\x01a\x02\x7f\x00", 0x81),
    ("property not allowed in PUBLISH", MQTT_5, b"\x30\x06\x00\x01a\x02\x24\x01", 0x81),
    ("property twice", MQTT_5, b"\x30\x08\x00\x01a\x04\x01\x01\x01\x01", 0x82),
    ("payload format indicator 2", MQTT_5, b"\x30\x06\x00\x01a\x02\x01\x02", 0x82),
    ("subscription identifier 0", MQTT_5, b"\x82\x09\x00\x01\x02\x0b\x00\x00\x01a\x00", 0x82),
    ("receive maximum 0", None, b"\x10\x11\x00\x04MQTT\x05\x02\x00\x3c\x03\x21\x00\x00\x00\x01c", 0x82),
    ("property length past the packet", MQTT_5, b"\x30\x05\x00\x01a\x09\x01", 0x81),
    ("5 subscription reserved bits", MQTT_5, b"\x82\x07\x00\x01\x00\x00\x01a\x40", 0x81),
    ("retain handling 3", MQTT_5, b"\x82\x07\x00\x01\x00\x00\x01a\x30", 0x82),
    ("unknown PUBACK reason code", MQTT_5, b"\x40\x03\x00\x01\x05", 0x81),
    ("unknown DISCONNECT reason code", MQTT_5, b"\xe0\x01\x01", 0x81),
]


@pytest.mark.parametrize(("case", "version", "data", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_broken_packets_raise_with_the_right_reason_code(case: str, version: int | None, data: bytes,
                                                          code: int) -> None:
    decoder = PacketDecoder(version)
    with pytest.raises(MalformedPacketError) as whole:
        decoder.feed(data)
    assert whole.value.reason_code == code, whole.value
    # the same error whatever the chunking
    decoder = PacketDecoder(version)
    with pytest.raises(MalformedPacketError) as bytewise:
        for i in range(len(data)):
            decoder.feed(data[i : i + 1])
    assert bytewise.value.reason_code == code
    # and the decoder stays failed: the framing of what follows is unknown
    with pytest.raises(MalformedPacketError):
        decoder.feed(_CONNECT_V5)


def test_unsupported_version_names_the_level() -> None:
    with pytest.raises(UnsupportedProtocolVersionError) as err:
        PacketDecoder().feed(b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01c")
    assert (err.value.protocol_name, err.value.level) == ("MQIsdp", 3)


def test_a_too_large_packet_is_refused_from_its_header_before_the_body_is_buffered() -> None:
    decoder = PacketDecoder(MQTT_3_1_1, max_packet_bytes=1024)
    header = b"\x30" + wire.encode_varint(100_000_000)
    with pytest.raises(PacketTooLargeError) as err:
        decoder.feed(header)
    assert err.value.reason_code == 0x95
    assert (err.value.packet_type, err.value.size, err.value.limit) == (3, 100_000_005, 1024)


def test_the_size_limit_counts_the_whole_packet() -> None:
    fits = encode_packet(PublishPacket("t", b"x" * 95), MQTT_3_1_1)
    assert len(fits) == 100
    assert PacketDecoder(MQTT_3_1_1, max_packet_bytes=100).feed(fits)
    with pytest.raises(PacketTooLargeError):
        PacketDecoder(MQTT_3_1_1, max_packet_bytes=99).feed(fits)


def test_an_oversized_publish_within_the_capture_limit_comes_back_whole_and_decoding_goes_on() -> None:
    big = encode_packet(PublishPacket("big/one", b"x" * 5000, 1, packet_id=9), MQTT_3_1_1)
    after = PublishPacket("small", b"ok")
    decoder = PacketDecoder(MQTT_3_1_1, max_packet_bytes=1000, capture_oversize_bytes=10_000)
    out = decoder.feed(big + encode_packet(after, MQTT_3_1_1))
    assert out == [OversizedPublish(len(big), 1000, big), after]
    assert decode_packet_bytes(big, MQTT_3_1_1) == PublishPacket("big/one", b"x" * 5000, 1, packet_id=9)
    # other packet types are never captured
    decoder = PacketDecoder(MQTT_3_1_1, max_packet_bytes=10, capture_oversize_bytes=10_000)
    with pytest.raises(PacketTooLargeError):
        decoder.feed(encode_packet(SubscribePacket(1, (Subscription("a/long/filter"),)), MQTT_3_1_1))


def test_a_malformed_publish_carries_its_bytes_for_a_dead_letter() -> None:
    bad = b"\x32\x07\x00\x03a\x00b\x00\x01"  # U+0000 in the topic
    decoder = PacketDecoder(MQTT_3_1_1)
    good = PublishPacket("ok", b"1")
    decoder.receive_data(encode_packet(good, MQTT_3_1_1) + bad)
    assert decoder.next_packet() == good  # what came before the bad packet is not lost
    with pytest.raises(MalformedPublishError) as err:
        decoder.next_packet()
    assert err.value.data == bad
    assert err.value.reason_code == 0x81


def test_packets_are_taken_one_at_a_time_and_the_rest_stay_buffered() -> None:
    packets = [PublishPacket(f"t/{i}", b"p" * i, 1, packet_id=i + 1) for i in range(5)]
    stream = b"".join(encode_packet(p, MQTT_3_1_1) for p in packets)
    decoder = PacketDecoder(MQTT_3_1_1)
    decoder.receive_data(stream)
    assert decoder.next_packet() == packets[0]
    assert decoder.buffered == len(stream) - len(encode_packet(packets[0], MQTT_3_1_1))
    assert [decoder.next_packet() for _ in range(4)] == packets[1:]
    assert decoder.next_packet() is None
    assert decoder.buffered == 0


# -------------------------------------------------------------------------------------------- properties

_utf8 = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_u16 = st.integers(0, 0xFFFF)
_u32 = st.integers(0, 0xFFFFFFFF)
_bool01 = st.sampled_from([0, 1])
_pairs = st.lists(st.tuples(_utf8, _utf8), max_size=3).map(tuple)
_publish_props = st.builds(
    Properties, payload_format_indicator=st.none() | _bool01, message_expiry_interval=st.none() | _u32,
    content_type=st.none() | _utf8, response_topic=st.none() | _utf8,
    correlation_data=st.none() | st.binary(max_size=8),
    topic_alias=st.none() | st.integers(1, 0xFFFF), user_properties=_pairs,
    subscription_identifiers=st.lists(st.integers(1, wire.VARINT_MAX), max_size=2).map(tuple),
)


@st.composite
def _any_packet(draw: st.DrawFn, version: int) -> Packet:
    v5 = version == MQTT_5
    props = draw(_publish_props) if v5 else EMPTY
    qos = draw(st.integers(0, 2))
    packet_id = draw(st.integers(1, 0xFFFF)) if qos else None
    choice = draw(st.integers(0, 6))
    if choice == 0:
        return PublishPacket(draw(_utf8), draw(st.binary(max_size=300)), qos, draw(st.booleans()),
                             bool(qos) and draw(st.booleans()), packet_id, props)
    if choice == 1:
        will = None
        if draw(st.booleans()):
            will = Will(draw(_utf8), draw(st.binary(max_size=20)), qos, draw(st.booleans()))
        return ConnectPacket(draw(_utf8), version, draw(st.booleans()), draw(_u16), draw(st.none() | _utf8),
                             None, will)
    if choice == 2:
        cls = draw(st.sampled_from([PubackPacket, PubrecPacket]))
        return cls(draw(st.integers(1, 0xFFFF)), draw(st.sampled_from([0, 0x80, 0x97])) if v5 else 0)  # type: ignore[no-any-return]
    if choice == 3:
        subs = draw(st.lists(st.builds(Subscription, _utf8, st.integers(0, 2)), min_size=1, max_size=4))
        return SubscribePacket(draw(st.integers(1, 0xFFFF)), tuple(subs))
    if choice == 4:
        return UnsubscribePacket(draw(st.integers(1, 0xFFFF)), tuple(draw(st.lists(_utf8, min_size=1, max_size=3))))
    if choice == 5:
        return DisconnectPacket(draw(st.sampled_from([0, 4, 0x81])) if v5 else 0)
    return PingreqPacket()


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_any_packet_stream_round_trips_however_it_is_split(version: int, data: st.DataObject) -> None:
    packets = data.draw(st.lists(_any_packet(version), min_size=1, max_size=8))
    stream = b"".join(encode_packet(p, version) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = PacketDecoder(version)
    out: list[object] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    assert out == packets


@settings(max_examples=400, deadline=timedelta(seconds=2))  # microseconds each: a slow one is a bug
@given(data=st.binary(max_size=200), version=st.sampled_from([None, MQTT_3_1_1, MQTT_5]),
       chunk=st.integers(1, 50))
def test_property_arbitrary_bytes_parse_or_raise_malformed(data: bytes, version: int | None, chunk: int) -> None:
    decoder = PacketDecoder(version, max_packet_bytes=150, capture_oversize_bytes=180)
    try:
        for i in range(0, len(data), chunk):
            for packet in decoder.feed(data[i : i + chunk]):
                assert isinstance(packet, (OversizedPublish, *Packet.__args__))  # type: ignore[attr-defined]
    except MalformedPacketError as exc:
        assert 0x80 <= exc.reason_code <= 0xFF
    assert decoder.buffered <= len(data)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_property_mutated_valid_packets_parse_or_raise_malformed(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from([MQTT_3_1_1, MQTT_5]))
    stream = bytearray(b"".join(encode_packet(p, version) for p in _packets(version)[:12]))
    for _ in range(data.draw(st.integers(1, 4))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    decoder = PacketDecoder(version)
    try:
        decoder.feed(bytes(stream))
    except MalformedPacketError:
        pass


def test_properties_are_encoded_only_when_set() -> None:
    assert P.encode_properties(EMPTY) == b"\x00"
    assert P.encode_properties(Properties(topic_alias=1)) == b"\x03\x23\x00\x01"
    assert repr(Properties(topic_alias=1)) == "Properties(topic_alias=1)"
