"""Settings of the MQTT client source: which broker, which session, which topics, how much in flight.

Typed with msgspec and validated when loaded: an unknown key, a wrong type or an impossible value becomes a
`ConfigError` that names the key and says what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from ..errors import ConfigError

MAX_SESSION_EXPIRY_S = 0xFFFF_FFFF  # MQTT 5 four-byte integer; this value means "never expires"


def check_topic_filter(text: str) -> None:
    """Raise ValueError unless `text` is a valid MQTT topic filter, optionally `$share/<group>/<filter>`."""
    if text.startswith("$share/"):
        parts = text.split("/", 2)
        if len(parts) < 3 or not parts[1] or not parts[2]:
            raise ValueError(f"shared subscription {text!r} must look like $share/<group>/<filter>")
        if any(c in parts[1] for c in "+#"):
            raise ValueError(f"share group {parts[1]!r} in {text!r} must not contain '+' or '#'")
        text = parts[2]
    if not text:
        raise ValueError("a topic filter must not be empty")
    if "\x00" in text:
        raise ValueError(f"topic filter {text!r} contains a NUL character")
    if len(text.encode()) > 65535:
        raise ValueError("a topic filter must be at most 65535 bytes of UTF-8")
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"in {text!r}, '#' must be a whole level and the last one (e.g. factory/#)")
        if "+" in level and level != "+":
            raise ValueError(f"in {text!r}, '+' must be a whole level (e.g. factory/+/temperature)")


class TopicFilter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    filter: str
    qos: Literal[0, 1] = 1  # QoS 2 adds a round trip and buys nothing here: the log deduplicates nothing

    def __post_init__(self) -> None:
        check_topic_filter(self.filter)


class TlsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    ca_file: str | None = None  # None: the system's trusted CAs
    cert_file: str | None = None  # client certificate (PEM), for brokers with require_certificate
    key_file: str | None = None
    insecure: bool = False  # skip certificate and host name checks: for tests only, never in production

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together: give both or neither")


class MqttClientSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One subscription to one broker with a persistent session.

    `client_id` must be fixed and unique per gateway: the broker keys the session (subscriptions and queued
    QoS 1 messages) by it, and two clients with one id knock each other off in a loop.
    """

    client_id: str
    topics: tuple[TopicFilter, ...]
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal["3.1.1", "5"] = "5"
    session_expiry_s: int = 7 * 24 * 3600  # MQTT 5: how long the broker keeps the session while we are away
    keepalive_s: int = 60
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None
    max_inflight: int = 1000  # QoS 1 messages received and not yet acked; MQTT 5 Receive Maximum
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    connect_timeout_s: float = 10.0  # TCP + TLS handshake, then again for CONNACK and SUBACK
    drain_timeout_s: float = 5.0  # at stop: how long in-flight records may take to become durable and acked

    def __post_init__(self) -> None:
        if not self.client_id or len(self.client_id.encode()) > 65535:
            raise ValueError("client_id must be a non-empty string (unique per gateway, e.g. gw-<site>-<n>)")
        if re.search(r"[+#\x00]", self.client_id):
            raise ValueError(f"client_id {self.client_id!r} must not contain '+', '#' or NUL")
        if not self.topics:
            raise ValueError("topics must list at least one topic filter, e.g. [{filter = \"factory/#\"}]")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1..65535, got {self.port}")
        if not 1 <= self.session_expiry_s <= MAX_SESSION_EXPIRY_S:
            raise ValueError(
                f"session_expiry_s must be 1..{MAX_SESSION_EXPIRY_S}: a session that expires at once loses "
                f"the messages queued while the gateway is away (got {self.session_expiry_s})"
            )
        if self.keepalive_s != 0 and not 5 <= self.keepalive_s <= 65535:
            raise ValueError(f"keepalive_s must be 0 (off) or 5..65535, got {self.keepalive_s}")
        if not 1 <= self.max_inflight <= 65535:
            raise ValueError(f"max_inflight must be 1..65535 (MQTT packet ids are 16 bits), "
                             f"got {self.max_inflight}")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError("backoff needs 0 < backoff_min_s <= backoff_max_s, got "
                             f"{self.backoff_min_s} and {self.backoff_max_s}")
        if self.connect_timeout_s <= 0 or self.drain_timeout_s < 0:
            raise ValueError("connect_timeout_s must be > 0 and drain_timeout_s >= 0")
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username (MQTT does not send a password alone)")

    @property
    def is_v5(self) -> bool:
        return self.protocol == "5"

    @classmethod
    def load(cls, data: Mapping[str, Any], *, where: str = "mqtt_client") -> MqttClientSettings:
        """Validate a mapping (from the config file). Errors name `where` and the offending key."""
        try:
            return msgspec.convert(data, type=cls)
        except msgspec.ValidationError as exc:
            message, _, path = str(exc).partition(" - at `")
            key = path.rstrip("`").removeprefix("$").lstrip(".")
            location = f"{where}.{key}" if key else where
            raise ConfigError(f"{location}: {message}", key=location) from None
