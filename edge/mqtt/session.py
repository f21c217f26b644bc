"""MQTT sessions: what the listener keeps for a client between its connections (MQTT 5.0 section 4.1).

Sessions live in memory only: they survive a reconnect, not a gateway restart. A session holds the client's
live-tail subscriptions and the QoS 2 packet ids acknowledged with PUBREC but not yet released by PUBREL (so a
redelivered PUBLISH of one is not stored twice). The QoS 1/2 messages themselves are never session state
here: they are in the log before they are acknowledged. Pure: callers pass the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .packets import Subscription
from .topics import TopicFilter


@dataclass(slots=True)
class SessionState:
    client_id: str
    expiry_s: int = 0  # kept this long after the connection ends; 0 = ends with the connection
    subscriptions: dict[str, tuple[TopicFilter, Subscription]] = field(default_factory=dict)
    awaiting_release: set[int] = field(default_factory=set)


class SessionStore:
    """Sessions of clients that are not connected, each until its expiry; at most `max_sessions` of them,
    dropping the one that would expire first when full."""

    def __init__(self, max_sessions: int) -> None:
        self._max = max_sessions
        self._sessions: dict[str, tuple[SessionState, float]] = {}
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def put(self, session: SessionState, now: float) -> None:
        if session.expiry_s <= 0:
            self._sessions.pop(session.client_id, None)
            return
        self._sessions[session.client_id] = (session, now + session.expiry_s)
        if len(self._sessions) > self._max:
            self.expire(now)
        while len(self._sessions) > self._max:
            soonest = min(self._sessions, key=lambda cid: self._sessions[cid][1])
            del self._sessions[soonest]
            self.evicted += 1

    def take(self, client_id: str, now: float) -> SessionState | None:
        """The client's session, removed from the store (it belongs to the connection now), unless expired."""
        entry = self._sessions.pop(client_id, None)
        if entry is None:
            return None
        if entry[1] <= now:
            self.expired += 1
            return None
        return entry[0]

    def discard(self, client_id: str) -> None:
        self._sessions.pop(client_id, None)

    def expire(self, now: float) -> int:
        gone = [cid for cid, (_, deadline) in self._sessions.items() if deadline <= now]
        for cid in gone:
            del self._sessions[cid]
        self.expired += len(gone)
        return len(gone)
