"""MQTT 5 reason codes (OASIS MQTT 5.0, section 2.4) and the short names used as counter labels.

MQTT 3.1.1 has no reason codes on most packets; its CONNACK return codes are listed separately because they
are the only codes a 3.1.1 client ever sees from us.
"""

from __future__ import annotations

SUCCESS = 0x00  # also: normal disconnection, granted QoS 0
GRANTED_QOS_1 = 0x01
GRANTED_QOS_2 = 0x02
DISCONNECT_WITH_WILL = 0x04
NO_SUBSCRIPTION_EXISTED = 0x11
UNSPECIFIED_ERROR = 0x80
MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
IMPLEMENTATION_SPECIFIC_ERROR = 0x83
UNSUPPORTED_PROTOCOL_VERSION = 0x84
CLIENT_IDENTIFIER_NOT_VALID = 0x85
BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
SERVER_UNAVAILABLE = 0x88
SERVER_BUSY = 0x89
BAD_AUTHENTICATION_METHOD = 0x8C
KEEP_ALIVE_TIMEOUT = 0x8D
SESSION_TAKEN_OVER = 0x8E
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
PACKET_IDENTIFIER_NOT_FOUND = 0x92
RECEIVE_MAXIMUM_EXCEEDED = 0x93
TOPIC_ALIAS_INVALID = 0x94
PACKET_TOO_LARGE = 0x95
QUOTA_EXCEEDED = 0x97
PAYLOAD_FORMAT_INVALID = 0x99
QOS_NOT_SUPPORTED = 0x9B
SERVER_SHUTTING_DOWN = 0x8B
SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1

# MQTT 3.1.1 CONNACK return codes (section 3.2.2.3).
V3_UNACCEPTABLE_PROTOCOL_VERSION = 0x01
V3_IDENTIFIER_REJECTED = 0x02
V3_SERVER_UNAVAILABLE = 0x03
V3_BAD_USER_NAME_OR_PASSWORD = 0x04
V3_NOT_AUTHORIZED = 0x05

NAMES: dict[int, str] = {
    UNSPECIFIED_ERROR: "unspecified_error",
    MALFORMED_PACKET: "malformed_packet",
    PROTOCOL_ERROR: "protocol_error",
    IMPLEMENTATION_SPECIFIC_ERROR: "implementation_specific_error",
    UNSUPPORTED_PROTOCOL_VERSION: "unsupported_protocol_version",
    CLIENT_IDENTIFIER_NOT_VALID: "client_identifier_not_valid",
    BAD_USER_NAME_OR_PASSWORD: "bad_user_name_or_password",
    NOT_AUTHORIZED: "not_authorized",
    SERVER_UNAVAILABLE: "server_unavailable",
    SERVER_BUSY: "server_busy",
    SERVER_SHUTTING_DOWN: "server_shutting_down",
    BAD_AUTHENTICATION_METHOD: "bad_authentication_method",
    KEEP_ALIVE_TIMEOUT: "keep_alive_timeout",
    SESSION_TAKEN_OVER: "session_taken_over",
    TOPIC_FILTER_INVALID: "topic_filter_invalid",
    TOPIC_NAME_INVALID: "topic_name_invalid",
    PACKET_IDENTIFIER_NOT_FOUND: "packet_identifier_not_found",
    RECEIVE_MAXIMUM_EXCEEDED: "receive_maximum_exceeded",
    TOPIC_ALIAS_INVALID: "topic_alias_invalid",
    PACKET_TOO_LARGE: "packet_too_large",
    QUOTA_EXCEEDED: "quota_exceeded",
    PAYLOAD_FORMAT_INVALID: "payload_format_invalid",
    QOS_NOT_SUPPORTED: "qos_not_supported",
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: "shared_subscriptions_not_supported",
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: "subscription_identifiers_not_supported",
}


def name(code: int) -> str:
    """A bounded label for a reason code: its spec name, or `reason_0xNN` for codes we never send."""
    return NAMES.get(code) or f"reason_0x{code:02x}"
