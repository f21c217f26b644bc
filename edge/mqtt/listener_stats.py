"""What the MQTT listener counts, and the frozen snapshot `MqttListener.statistics()` returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_MAX_LABELS = 64  # reasons come from bounded vocabularies; this guards the counters against a sink that lies


@dataclass(frozen=True, slots=True)
class MqttListenerStatistics:
    connections_current: int
    connections_total: int  # accepted TCP/TLS connections since start
    connections_refused: int  # over max_connections, or while stopping
    publishes_received: Mapping[int, int]  # by QoS (0, 1, 2)
    bytes_in: int
    acks_sent: int  # PUBACK and PUBREC, each sent once its record was durable (or rejected)
    rejected: Mapping[str, int]  # RecordRejectedError from the sink, by its reason
    malformed: Mapping[str, int]  # connections closed for breaking the protocol, by reason code name
    dead_letters: int
    auth_failures: int
    keepalive_timeouts: int
    connect_timeouts: int
    takeovers: int  # a client id connected again while still connected
    sink_closed: int  # submissions refused because the sink was shutting down (not acknowledged)
    sink_errors: int  # submissions that failed with an unexpected error (not acknowledged)
    wills_published: int
    forwarded: int  # live-tail messages sent to subscribers
    subscriber_drops: int  # live-tail messages a slow (or size-limited) subscriber missed
    inflight: int  # submissions not yet resolved, all connections
    sessions_stored: int  # sessions of disconnected clients kept in memory
    subscribers: int
    sessions_restored: int  # sessions loaded from the session storage at start
    sessions_expired_at_load: int  # stored sessions whose expiry passed while the gateway was down
    sessions_not_persisted: int  # sessions over a bound of the storage: not kept across restarts
    session_store_corrupt: int  # torn or garbled session files, treated as absent
    session_store_writes: int  # durable saves of changed sessions
    session_store_write_errors: int  # failed saves (sessions stay in memory; the next save retries)


@dataclass(frozen=True, slots=True)
class SessionCounts:
    """What the session keeper and its storage counted, for the snapshot."""

    restored: int = 0
    expired_at_load: int = 0
    not_persisted: int = 0
    corrupt: int = 0
    writes: int = 0
    write_errors: int = 0


@dataclass(slots=True)
class Counters:
    connections_total: int = 0
    connections_refused: int = 0
    publishes: list[int] = field(default_factory=lambda: [0, 0, 0])
    bytes_in: int = 0
    acks_sent_closed: int = 0  # acks of connections that are gone (live ones are summed at snapshot time)
    rejected: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    auth_failures: int = 0
    keepalive_timeouts: int = 0
    connect_timeouts: int = 0
    takeovers: int = 0
    sink_closed: int = 0
    sink_errors: int = 0
    wills_published: int = 0
    forwarded: int = 0
    subscriber_drops: int = 0

    def count_rejected(self, reason: str) -> None:
        _bump(self.rejected, reason)

    def count_malformed(self, reason: str) -> None:
        _bump(self.malformed, reason)

    def snapshot(
        self, *, connections_current: int, acks_sent: int, inflight: int, sessions_stored: int,
        subscribers: int, sessions: SessionCounts,
    ) -> MqttListenerStatistics:
        return MqttListenerStatistics(
            connections_current=connections_current,
            connections_total=self.connections_total,
            connections_refused=self.connections_refused,
            publishes_received=MappingProxyType(dict(enumerate(self.publishes))),
            bytes_in=self.bytes_in,
            acks_sent=acks_sent,
            rejected=MappingProxyType(dict(self.rejected)),
            malformed=MappingProxyType(dict(self.malformed)),
            dead_letters=self.dead_letters,
            auth_failures=self.auth_failures,
            keepalive_timeouts=self.keepalive_timeouts,
            connect_timeouts=self.connect_timeouts,
            takeovers=self.takeovers,
            sink_closed=self.sink_closed,
            sink_errors=self.sink_errors,
            wills_published=self.wills_published,
            forwarded=self.forwarded,
            subscriber_drops=self.subscriber_drops,
            inflight=inflight,
            sessions_stored=sessions_stored,
            subscribers=subscribers,
            sessions_restored=sessions.restored,
            sessions_expired_at_load=sessions.expired_at_load,
            sessions_not_persisted=sessions.not_persisted,
            session_store_corrupt=sessions.corrupt,
            session_store_writes=sessions.writes,
            session_store_write_errors=sessions.write_errors,
        )


def _bump(counts: dict[str, int], label: str) -> None:
    if label not in counts and len(counts) >= _MAX_LABELS:
        label = "other"
    counts[label] = counts.get(label, 0) + 1
