"""Settings of the built-in MQTT listener, embedded in the gateway's config (`[mqtt_listener]` or similar).

Validated when decoded (msgspec raises `ValidationError` naming the key) and when constructed (`ValueError`):
value ranges by annotation, cross-field rules in `__post_init__`. Files named here are opened at `start()`,
which reports a missing or unreadable one as `ConfigError` with the key.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .auth import parse_password_hash

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class MqttListenerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where sensors connect, who may, and how much each connection may hold in memory."""

    name: str = "mqtt-listener"  # the `Reading.source` of everything received
    host: str = "127.0.0.1"  # "0.0.0.0" or "::" to accept sensors on every interface
    port: Port = 1883  # 0 picks a free port (tests); 8883 is the usual port for TLS
    tls_cert_file: str | None = None  # PEM certificate chain; TLS is on iff this is set
    tls_key_file: str | None = None
    tls_ca_file: str | None = None  # CA that signs client certificates
    require_client_cert: bool = False  # a verified client certificate authenticates without a password
    users: dict[str, str] = {}  # user name -> pbkdf2_sha256 hash (edgestream.edge.mqtt.auth.hash_password)
    allow_anonymous: bool = False
    # 256 KiB: far above telemetry messages, small enough that max_connections of them fit a Pi's memory.
    max_packet_bytes: Annotated[int, msgspec.Meta(ge=64, le=268_435_460)] = 262_144
    # PUBLISHes over max_packet_bytes but up to this size are read whole and kept as dead letters; larger
    # ones only close the connection. 0 keeps none.
    oversize_capture_bytes: NonNegative = 1_048_576
    # Unacknowledged QoS 1/2 messages per connection (MQTT 5 Receive Maximum), and the same bound for 3.1.1
    # and QoS 0: past it the connection is not read until the log catches up.
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 64
    max_inflight_bytes: Positive = 1_048_576  # the same window, in payload bytes
    max_connections: Positive = 256
    keepalive_max_s: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 300  # MQTT 5 clients asking more get this
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0  # TCP/TLS connect to CONNECT
    # Longest a disconnected client's session is kept (MQTT 3.1.1 sessions get exactly this), also across
    # gateway restarts: the gateway keeps sessions in <data_dir>/listener/<source name>.sessions.
    session_expiry_max_s: NonNegative = 3600
    max_sessions: Positive = 1024  # sessions of disconnected clients; the soonest to expire go first
    topic_alias_maximum: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 32
    max_qos: Annotated[int, msgspec.Meta(ge=0, le=2)] = 2
    allow_subscribe: bool = True  # live tails: QoS 0 copies of what the gateway accepted
    max_subscriptions: Positive = 32  # per client
    subscriber_buffer_bytes: Positive = 262_144  # a live tail further behind than this loses messages
    stop_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0  # how long stop() waits for in-flight acks

    def __post_init__(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both for TLS, or neither")
        if (self.tls_ca_file or self.require_client_cert) and not self.tls_cert_file:
            raise ValueError("tls_ca_file and require_client_cert need TLS: set tls_cert_file, tls_key_file")
        if self.require_client_cert and not self.tls_ca_file:
            raise ValueError("require_client_cert needs tls_ca_file, the CA that signs client certificates")
        for user, encoded in self.users.items():
            if not user:
                raise ValueError("users: an empty user name cannot log in; remove it")
            try:
                parse_password_hash(encoded)
            except ValueError as exc:
                raise ValueError(
                    f"users.{user}: {exc}; store the hash that edgestream.edge.mqtt.auth.hash_password() "
                    "makes, never the password itself"
                ) from None
        if not (self.users or self.allow_anonymous or self.require_client_cert):
            raise ValueError(
                "nobody could connect: add users, set allow_anonymous = true, or require_client_cert = true"
            )
        if 0 < self.oversize_capture_bytes < self.max_packet_bytes:
            raise ValueError(
                f"oversize_capture_bytes ({self.oversize_capture_bytes}) is below max_packet_bytes "
                f"({self.max_packet_bytes}): set it to 0 to keep no oversized messages, or above the limit"
            )

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None
