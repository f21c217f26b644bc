"""Keeping the listener's sessions in a `SessionStorage`: which changes to save, when, and which output waits.

The rule: nothing a client receives may describe session state that is not durable yet. Why each part of it:
- a PUBREC sent before its packet id is saved: after a crash the client, if it missed the PUBREC, redelivers
  (MQTT 3.1.1 with DUP; paho does so even with a session), the restarted listener does not know the id and
  stores the message a second time;
- a PUBCOMP sent before the release is saved: after a crash the id is still "awaiting release", the client,
  which got its PUBCOMP, reuses the id for a new message, and that one is taken for a redelivery and LOST;
- a CONNACK of a clean start sent before the old session's removal is saved: the same stale ids come back;
- a SUBACK sent before the subscription is saved: session_present=1 after a restart, subscription missing.

Protocol:
1. a connection's session changes (accepted with a session that has an expiry or replaces a stored one;
   SUBSCRIBE/UNSUBSCRIBE; a QoS 2 id added when its record became durable, or released by PUBREL): the
   listener calls `changed(client_id, connection)`; the client id is marked dirty, the generation goes up and
   the connection holds everything it would send (`hold_until` = that generation), in order;
2. a single writer task snapshots the current session of every dirty client id (on the loop, so later
   changes wait for the next save), saves the snapshot in a worker thread, then marks that generation
   durable and releases every connection that waited for it or an earlier one;
3. changes made while a save runs go into the next one. So the records of one group commit cost one session
   save for all their PUBRECs (one file write, two fsyncs), however many messages, and a sustained QoS 2
   stream costs at most one save in flight at any time. Sessions without expiry that were never stored cost
   nothing: QoS 0/1 traffic and clean sessions never wait for a save.
4. a save that fails is counted and logged, and the output is released anyway: the storage removed its file
   (SessionFileWriteError), so a restart before the next successful save finds no sessions, which costs
   duplicates at worst, never a loss; the sessions stay in memory and the next save writes them all.

What this cannot close: a crash after a QoS 2 record became durable and before the save of its id (the one
save between them). The client did not get its PUBREC, redelivers, and the message is stored twice. Closing
that would need the id written in the same fsync as the record; the log's at-least-once rule covers it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from ..clock import Clock
from .listener_stats import SessionCounts
from .packets import Subscription
from .session import PacketIds, SessionState, SessionStore
from .session_store import SessionStorage, SessionStorageError, StoredSession, StoredSubscription
from .topics import TopicFilter

log = logging.getLogger(__name__)


class Holder(Protocol):
    """A connection whose output can wait for a save (`ListenerProtocol`)."""

    hold_until: int

    def release(self) -> None: ...


def to_stored(session: SessionState) -> StoredSession:
    subs = tuple(
        StoredSubscription(s.topic_filter, s.qos, s.no_local, s.retain_as_published, s.retain_handling)
        for _, s in session.subscriptions.values()
    )
    return StoredSession(session.client_id, session.expiry_s, session.disconnected_ms, subs,
                         tuple(sorted(session.awaiting_release)))


def from_stored(stored: StoredSession) -> SessionState:
    subs = {
        s.topic_filter: (
            TopicFilter.parse(s.topic_filter),
            Subscription(s.topic_filter, s.qos, s.no_local, s.retain_as_published, s.retain_handling),
        )
        for s in stored.subscriptions
    }
    return SessionState(stored.client_id, stored.expiry_s, subs, PacketIds(stored.awaiting_release),
                        stored.disconnected_ms)


class SessionKeeper:
    """Saves the sessions of one listener through `storage`. `lookup(client_id)` is the client's current
    session (its connection's, else the stored one of a disconnected client) or None."""

    def __init__(self, storage: SessionStorage, sessions: SessionStore,
                 lookup: Callable[[str], SessionState | None], *, name: str,
                 on_saved: Callable[[], None]) -> None:
        self.storage = storage
        self._sessions = sessions
        self._lookup = lookup
        self._name = name
        self._on_saved = on_saved
        self.generation = 0  # bumped by every change
        self.durable = 0  # every change up to this generation is saved (or its save failed)
        self._dirty: set[str] = set()
        self._persisted: set[str] = set()  # client ids the storage holds (or will, once the dirty are saved)
        self._waiting: set[Holder] = set()
        self._writer: asyncio.Task[None] | None = None
        self._failing = 0  # consecutive failed saves: the first is logged as an error, the rest quietly
        self.restored = 0
        self.writes = 0
        self.write_errors = 0

    @property
    def idle(self) -> bool:
        return self._writer is None and not self._dirty

    async def restore(self, clock: Clock, expiry_max_s: int) -> int:
        """Load the stored sessions into the in-memory store of disconnected sessions, each with the time it
        has left by the wall clock. Returns how many were restored."""
        stored = await asyncio.to_thread(self.storage.load)
        now_ms, now = clock.wall_ms(), clock.monotonic()
        for entry in stored:
            session = from_stored(entry)
            session.expiry_s = min(session.expiry_s, expiry_max_s)  # the limit may have been lowered since
            elapsed_s = max(0.0, (now_ms - (entry.disconnected_ms or now_ms)) / 1000)
            self._persisted.add(session.client_id)
            self._sessions.put(session, now, deadline=now + max(0.0, session.expiry_s - elapsed_s))
            if self._sessions.peek(session.client_id) is None:
                self.changed(session.client_id)  # not kept after all: remove it from the storage too
            else:
                self.restored += 1
        return self.restored

    def changed(self, client_id: str, connection: Holder | None = None) -> None:
        """The session of `client_id` changed (or ended); `connection`'s output waits until it is saved."""
        session = self._lookup(client_id)
        if session is None or session.expiry_s <= 0:
            if client_id not in self._persisted:
                return  # a session that ends with its connection and was never stored
            self._persisted.discard(client_id)
        else:
            self._persisted.add(client_id)
        self.generation += 1
        self._dirty.add(client_id)
        if connection is not None:
            connection.hold_until = self.generation
            self._waiting.add(connection)
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write())

    def forget(self, connection: Holder) -> None:
        """The connection is gone: nothing to release to it."""
        self._waiting.discard(connection)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    def counts(self) -> SessionCounts:
        s = self.storage.statistics()
        return SessionCounts(restored=self.restored, expired_at_load=s.expired_at_load,
                             not_persisted=s.over_limit, corrupt=s.corrupt_files, writes=self.writes,
                             write_errors=self.write_errors)

    async def _write(self) -> None:
        try:
            while self._dirty:
                await asyncio.sleep(0)  # callbacks queued in this loop pass (reads, acks) join this save
                target = self.generation
                changes = {cid: self._snapshot(cid) for cid in self._dirty}
                self._dirty = set()
                await self._save(changes)
                self.durable = target
                for connection in [c for c in self._waiting if c.hold_until <= target]:
                    self._waiting.discard(connection)
                    connection.release()
        finally:
            self._writer = None
            self._on_saved()

    async def _save(self, changes: dict[str, StoredSession | None]) -> None:
        try:
            await asyncio.to_thread(self.storage.save, changes)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever the storage raises, the listener goes on (rule 4)
            self.write_errors += 1
            self._failing += 1
            if self._failing == 1:  # a traceback only for what is not a storage error: a bug
                log.error("MQTT listener %r: saving sessions failed: %s", self._name, exc,
                          exc_info=not isinstance(exc, SessionStorageError))
            else:
                log.debug("MQTT listener %r: saving sessions failed again (%d in a row): %s", self._name,
                          self._failing, exc)
            return
        self.writes += 1
        if self._failing:
            log.warning("MQTT listener %r: sessions saved again after %d failed saves", self._name,
                        self._failing)
            self._failing = 0

    def _snapshot(self, client_id: str) -> StoredSession | None:
        session = self._lookup(client_id)
        if session is None or session.expiry_s <= 0:
            return None
        return to_stored(session)
