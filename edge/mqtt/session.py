"""MQTT sessions: what the listener keeps for a client between its connections (MQTT 5.0 section 4.1).

A session holds the client's live-tail subscriptions and the QoS 2 packet ids acknowledged with PUBREC but not
yet released by PUBREL (so a redelivered PUBLISH of one is not stored twice). The QoS 1/2 messages themselves
are never session state here: they are in the log before they are acknowledged. `SessionStore` keeps the
sessions of disconnected clients in memory until they expire; `listener_sessions.SessionKeeper` writes every
session with an expiry through a `session_store.SessionStorage`, so they also survive a restart. Pure: callers
pass the time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableSet
from dataclasses import dataclass, field

from .packets import Subscription
from .topics import TopicFilter


class PacketIds(MutableSet[int]):
    """A set of packet ids that counts its changes: the listener compares `version` to see, without copying
    the set, that QoS 2 state changed and must be saved before the ack that reveals it leaves. Every mutation
    of a `MutableSet` goes through `add` and `discard`."""

    __slots__ = ("_ids", "version")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._ids = set(ids)
        self.version = 0

    def __contains__(self, packet_id: object) -> bool:
        return packet_id in self._ids

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"PacketIds({sorted(self._ids)})"

    def add(self, packet_id: int) -> None:
        if packet_id not in self._ids:
            self._ids.add(packet_id)
            self.version += 1

    def discard(self, packet_id: int) -> None:
        if packet_id in self._ids:
            self._ids.discard(packet_id)
            self.version += 1


@dataclass(slots=True)
class SessionState:
    client_id: str
    expiry_s: int = 0  # kept this long after the connection ends; 0 = ends with the connection
    subscriptions: dict[str, tuple[TopicFilter, Subscription]] = field(default_factory=dict)
    awaiting_release: PacketIds = field(default_factory=PacketIds)
    disconnected_ms: int | None = None  # wall time the connection ended; None while connected


class SessionStore:
    """Sessions of clients that are not connected, each until its expiry; at most `max_sessions` of them,
    dropping the one that would expire first when full. `on_drop(client_id)` hears of every session that
    leaves other than by `take` or `discard` (expired, evicted)."""

    def __init__(self, max_sessions: int, *, on_drop: Callable[[str], None] | None = None) -> None:
        self._max = max_sessions
        self._sessions: dict[str, tuple[SessionState, float]] = {}
        self._on_drop = on_drop
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def put(self, session: SessionState, now: float, *, deadline: float | None = None) -> None:
        """Keep `session` until `deadline` (default: `now` plus its expiry)."""
        if session.expiry_s <= 0:
            self._sessions.pop(session.client_id, None)
            return
        until = now + session.expiry_s if deadline is None else deadline
        self._sessions[session.client_id] = (session, until)
        if len(self._sessions) > self._max:
            self.expire(now)
        while len(self._sessions) > self._max:
            soonest = min(self._sessions, key=lambda cid: self._sessions[cid][1])
            del self._sessions[soonest]
            self.evicted += 1
            self._dropped(soonest)

    def peek(self, client_id: str) -> SessionState | None:
        entry = self._sessions.get(client_id)
        return None if entry is None else entry[0]

    def take(self, client_id: str, now: float) -> SessionState | None:
        """The client's session, removed from the store (it belongs to the connection now), unless expired."""
        entry = self._sessions.pop(client_id, None)
        if entry is None:
            return None
        if entry[1] <= now:
            self.expired += 1
            self._dropped(client_id)
            return None
        return entry[0]

    def discard(self, client_id: str) -> None:
        self._sessions.pop(client_id, None)

    def expire(self, now: float) -> int:
        gone = [cid for cid, (_, deadline) in self._sessions.items() if deadline <= now]
        for cid in gone:
            del self._sessions[cid]
            self._dropped(cid)
        self.expired += len(gone)
        return len(gone)

    def _dropped(self, client_id: str) -> None:
        if self._on_drop is not None:
            self._on_drop(client_id)
