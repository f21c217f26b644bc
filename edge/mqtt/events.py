"""What a `ServerConnection` asks its listener to do, and the limits it enforces for it.

Events are facts about one connection that need the world outside the protocol: a password check, the sink,
the subscription index, the socket. Everything else the connection answers itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from .listener_settings import MqttListenerSettings
from .packets import ConnectPacket, PublishPacket


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_packet_bytes: int = 262_144
    oversize_capture_bytes: int = 0
    receive_maximum: int = 64
    max_inflight_bytes: int = 1_048_576
    keepalive_max_s: int = 300
    session_expiry_max_s: int = 3600
    topic_alias_maximum: int = 32
    max_qos: int = 2
    allow_subscribe: bool = True
    max_subscriptions: int = 32

    @classmethod
    def from_settings(cls, s: MqttListenerSettings) -> ConnectionLimits:
        return cls(
            s.max_packet_bytes, s.oversize_capture_bytes, s.receive_maximum, s.max_inflight_bytes,
            s.keepalive_max_s, s.session_expiry_max_s, s.topic_alias_maximum, s.max_qos, s.allow_subscribe,
            s.max_subscriptions,
        )


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """Authenticate, find the session, then call `accept` or `refuse`. `client_id` may have been assigned."""

    packet: ConnectPacket
    client_id: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """Store this message, then call `complete(ticket)`. The topic is resolved (no alias left)."""

    ticket: int
    publish: PublishPacket


@dataclass(frozen=True, slots=True)
class DeadLetterRequested:
    """Keep these bytes as a dead letter; then `complete(ticket)` if there is a ticket."""

    ticket: int | None
    reason: str  # "too_large" or "malformed_packet"
    detail: str
    topic: str | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class SubscriptionsChanged:
    """The session's subscriptions changed: re-read `session.subscriptions`."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The protocol is over; send `data_to_send()`, then close the socket."""

    reason: str  # counter label: "client_disconnect", or the reason code's name
    reason_code: int | None
    detail: str = ""
    violation: bool = False  # the client broke the protocol


Event = ConnectRequested | MessageReceived | DeadLetterRequested | SubscriptionsChanged | ConnectionClosed
