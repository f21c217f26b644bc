"""Sessions that outlive the gateway process: what is kept per client id, the interface the listener saves
them through, and an in-memory implementation (`SessionFile` in session_file.py keeps them on disk).

What MQTT requires a server to keep for a session (MQTT 5.0 section 4.1, 3.1.1 section 4.1), and all that is
kept: the subscriptions with their options, the QoS 2 packet ids received (stored, PUBREC sent) and not yet
released by PUBREL, the session expiry interval, and when the network connection ended. Messages are not
session state here: QoS 1/2 messages are in the log before they are acknowledged, and subscribers only ever
get QoS 0 copies, so nothing outgoing waits for an ack.

`SessionStorage.load()` runs once, before the listener accepts connections; `save(changes)` gets the sessions
that changed since the last save (None: the session is gone) and returns when they are durable. Both block,
so the listener calls them in a worker thread, never two at a time.

Expiry at load uses the wall clock, because a monotonic clock does not survive a reboot:
1. a session whose connection ended at `disconnected_ms` is dropped iff `now - disconnected_ms >= expiry`;
2. a session still connected when the gateway stopped (a crash, a power cut) counts as disconnected at load;
3. a disconnect time in the future (a Raspberry Pi without RTC booting with an old clock) keeps the session
   for its full expiry.
An expired session costs its client a re-subscribe (session_present=0) and at worst one duplicate of a QoS 2
message; never a loss.

Bounds: at most `max_sessions` sessions, `max_subscriptions` subscriptions and `max_session_bytes` encoded
bytes per session. A session over a bound is not kept across restarts (counted in `over_limit`, logged); one
found over a bound at load (the limits were lowered) is dropped the same way, latest-expiring kept first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Protocol

import msgspec

from ..clock import Clock, SystemClock
from ..errors import EdgeError
from .topics import is_valid_topic_filter

log = logging.getLogger(__name__)

PacketId = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class StoredSubscription(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One subscription with its SUBSCRIBE options (MQTT 5.0 section 3.8.3.1)."""

    topic_filter: Annotated[str, msgspec.Meta(min_length=1)]
    qos: Annotated[int, msgspec.Meta(ge=0, le=2)] = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: Annotated[int, msgspec.Meta(ge=0, le=2)] = 0


class StoredSession(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    client_id: str
    expiry_s: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]
    disconnected_ms: int | None = None  # wall time the connection ended; None while connected
    subscriptions: tuple[StoredSubscription, ...] = ()
    awaiting_release: tuple[PacketId, ...] = ()  # QoS 2 ids with PUBREC sent, PUBREL not yet received


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_sessions: int = 1280
    max_subscriptions: int = 32
    # 64 KiB: 32 filters of a few hundred bytes and thousands of QoS 2 ids fit; bounds the file to
    # max_sessions * 64 KiB even for hostile client ids and filters.
    max_session_bytes: int = 65_536


@dataclass(frozen=True, slots=True)
class SessionStorageStatistics:
    loaded: int  # sessions restored by load()
    expired_at_load: int
    over_limit: int  # sessions not kept across restarts: over a bound at save or at load
    corrupt_files: int  # torn or garbled files treated as absent
    writes: int  # durable saves done
    write_errors: int  # saves that failed (the sessions are kept in memory and written by the next save)
    stored: int  # sessions held now
    bytes: int  # size of what the last save wrote


class SessionStorageError(EdgeError):
    """The sessions could not be saved or loaded."""


class SessionFileWriteError(SessionStorageError):
    """Writing the session file failed (disk full, I/O error, read-only file system)."""

    retriable = True  # the next save rewrites the whole file

    def __init__(self, path: str, detail: str, *, removed: bool) -> None:
        state = ("the previous file was removed, so a restart now starts without sessions" if removed else
                 "the previous file could not be removed either: if the gateway restarts before a save "
                 "succeeds, delete it by hand")
        super().__init__(f"cannot write the MQTT session file {path}: {detail}; {state} (free space on the "
                         "data disk or check its health; the next change retries)")
        self.path = path
        self.detail = detail
        self.removed = removed


class SessionStorage(Protocol):
    def load(self) -> list[StoredSession]:
        """The sessions to restore, expired ones dropped. A missing or unreadable store yields none."""

    def save(self, changes: Mapping[str, StoredSession | None]) -> None:
        """Make `changes` durable (None removes the client's session). Raises SessionStorageError."""

    def statistics(self) -> SessionStorageStatistics: ...


# --------------------------------------------------------------------------------------- shared rules


def encode_session(session: StoredSession) -> bytes:
    return msgspec.json.encode(session)


class SessionTable:
    """The sessions a storage holds, encoded, with the bounds and the expiry rules above; the counters of
    `SessionStorageStatistics` live here so both storages count alike. Not thread-safe: a storage calls it
    from one thread at a time (statistics() reads plain ints, which is safe from any thread)."""

    def __init__(self, limits: SessionLimits, clock: Clock) -> None:
        self.limits = limits
        self.clock = clock
        self.encoded: dict[str, bytes] = {}
        self.loaded = 0
        self.expired_at_load = 0
        self.over_limit = 0
        self.corrupt_files = 0
        self.writes = 0
        self.write_errors = 0
        self.bytes = 0

    def restore(self, sessions: Iterable[StoredSession]) -> list[StoredSession]:
        """Rules 1-3 and the bounds applied to what was read; the survivors become the table."""
        now_ms = self.clock.wall_ms()
        limits = self.limits
        kept: list[tuple[int, StoredSession, bytes]] = []
        for session in sessions:
            if session.disconnected_ms is None:
                session = msgspec.structs.replace(session, disconnected_ms=now_ms)
            elapsed_ms = max(0, now_ms - session.disconnected_ms)  # type: ignore[operator]
            if elapsed_ms >= session.expiry_s * 1000:
                self.expired_at_load += 1
                continue
            encoded = encode_session(session)
            problem = self._over(session, encoded)
            if problem:
                self.over_limit += 1
                log.warning("MQTT session of client %r not restored: %s", session.client_id, problem)
                continue
            kept.append((session.expiry_s * 1000 - elapsed_ms, session, encoded))
        if len(kept) > limits.max_sessions:
            kept.sort(key=lambda entry: entry[0], reverse=True)
            dropped = len(kept) - limits.max_sessions
            self.over_limit += dropped
            log.warning("MQTT sessions: %d stored, max_sessions is %d: the %d expiring soonest are dropped",
                        len(kept), limits.max_sessions, dropped)
            del kept[limits.max_sessions:]
        self.encoded = {s.client_id: encoded for _, s, encoded in kept}
        self.loaded += len(kept)
        return [s for _, s, _ in kept]

    def apply(self, changes: Mapping[str, StoredSession | None]) -> None:
        """Bring the table up to date; a session over a bound is removed rather than kept stale."""
        encoded = self.encoded
        for client_id, session in changes.items():
            if session is None:
                encoded.pop(client_id, None)
                continue
            data = encode_session(session)
            problem = self._over(session, data)
            if problem is None and client_id not in encoded and len(encoded) >= self.limits.max_sessions:
                problem = f"max_sessions ({self.limits.max_sessions}) sessions are stored already"
            if problem:
                self.over_limit += 1
                encoded.pop(client_id, None)
                log.warning("MQTT session of client %r is not kept across restarts: %s", client_id, problem)
                continue
            encoded[client_id] = data

    def _over(self, session: StoredSession, encoded: bytes) -> str | None:
        limits = self.limits
        if len(session.subscriptions) > limits.max_subscriptions:
            return (f"{len(session.subscriptions)} subscriptions, over max_subscriptions "
                    f"({limits.max_subscriptions})")
        if len(encoded) > limits.max_session_bytes:
            return f"{len(encoded)} bytes encoded, over the {limits.max_session_bytes}-byte limit per session"
        return None

    def body(self) -> bytes:
        """The table as one JSON array (what `SessionFile` writes)."""
        return b"[" + b",".join(self.encoded.values()) + b"]"

    def statistics(self) -> SessionStorageStatistics:
        return SessionStorageStatistics(
            loaded=self.loaded, expired_at_load=self.expired_at_load, over_limit=self.over_limit,
            corrupt_files=self.corrupt_files, writes=self.writes, write_errors=self.write_errors,
            stored=len(self.encoded), bytes=self.bytes,
        )


def decode_sessions(body: bytes) -> list[StoredSession]:
    """The sessions of a JSON array written by `SessionTable.body`; ValueError if it is not one."""
    try:
        sessions = msgspec.json.decode(body, type=list[StoredSession])
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ValueError(str(exc)) from None
    seen: set[str] = set()
    for session in sessions:
        if session.client_id in seen:
            raise ValueError(f"client id {session.client_id!r} stored twice")
        seen.add(session.client_id)
        for sub in session.subscriptions:
            if not is_valid_topic_filter(sub.topic_filter):
                raise ValueError(f"invalid topic filter {sub.topic_filter!r} of client {session.client_id!r}")
    return sessions


# ------------------------------------------------------------------------------------------ in memory


class MemorySessionStorage:
    """Sessions kept in this process: a listener restarted in-process (tests, a config reload) finds them, a
    restarted gateway does not. Saves round-trip through the encoding, like the file's."""

    def __init__(self, *, clock: Clock | None = None, limits: SessionLimits | None = None) -> None:
        self._table = SessionTable(limits or SessionLimits(), clock or SystemClock())
        self._lock = threading.Lock()

    def load(self) -> list[StoredSession]:
        with self._lock:
            return self._table.restore(decode_sessions(self._table.body()))

    def save(self, changes: Mapping[str, StoredSession | None]) -> None:
        with self._lock:
            self._table.apply(changes)
            self._table.writes += 1
            self._table.bytes = len(self._table.body())

    def statistics(self) -> SessionStorageStatistics:
        return self._table.statistics()

    def reopen(self, limits: SessionLimits | None = None) -> MemorySessionStorage:
        """A new storage holding what this one holds, as a restarted listener with `limits` finds it."""
        with self._lock:
            other = MemorySessionStorage(clock=self._table.clock, limits=limits)
            other._table.encoded = dict(self._table.encoded)
            return other
