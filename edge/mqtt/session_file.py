"""`SessionFile`: the MQTT listener's persistent sessions in one file, rewritten whole by durable replace.

Layout, little-endian:

    offset  size  field
    0       4     magic b"EMQS"
    4       2     format version (1)
    6       2     flags (0)
    8       8     saved at, wall ms (informational)
    16      4     body length
    20      4     body CRC-32 (zlib)
    24      4     header CRC-32 over bytes 0..23
    28      n     body: a JSON array of sessions, each
                  [client_id, expiry_s, disconnected_ms|null, [[filter, qos, no_local, rap, rh], ...], [ids]]

A file is valid iff the magic and version match, the header CRC matches, the file is exactly 28 + body length
bytes long, the body CRC matches and the body decodes to the schema of `session_store.StoredSession` (unique
client ids, valid topic filters, packet ids 1..65535). Anything else (a torn write on a file system that
does not order it, a flipped bit, a file from a newer version) is treated as no file: logged, counted in
`corrupt_files`, and renamed to `<name>.corrupt` for an operator to look at. It never stops the listener.

Crash story: a save writes `<name>.tmp`, fdatasyncs it, renames it over `<name>` and fsyncs the directory, so
after a power cut the file is the previous save or the new one, never a mix; a left-over `.tmp` is deleted at
load. A save that fails removes `<name>` (a stale file could hold a QoS 2 id the client has since reused for a
new message, which would then be taken for a redelivery and lost); the sessions stay in memory and the next
save writes them all.

Why one file rewritten whole, not a journal: it stays small (a sensor's session is ~60-200 bytes, so a few
hundred sensors make a few tens of KiB), a save re-encodes only the sessions that changed (the others are
kept encoded), and its cost is the two fsyncs, which a journal would pay as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zlib
from collections.abc import Mapping

from ..clock import Clock, SystemClock
from .session_store import (
    SessionFileWriteError,
    SessionLimits,
    SessionStorageStatistics,
    SessionTable,
    StoredSession,
    decode_sessions,
)

log = logging.getLogger(__name__)

MAGIC = b"EMQS"
VERSION = 1
HEADER = struct.Struct("<4sHHqII")
HEADER_CRC = struct.Struct("<I")
HEADER_SIZE = HEADER.size + HEADER_CRC.size  # 28
TMP_SUFFIX = ".tmp"
CORRUPT_SUFFIX = ".corrupt"


def render(body: bytes, saved_at_ms: int) -> bytes:
    header = HEADER.pack(MAGIC, VERSION, 0, saved_at_ms, len(body), zlib.crc32(body))
    return header + HEADER_CRC.pack(zlib.crc32(header)) + body


def parse(data: bytes) -> list[StoredSession]:
    """The sessions of a session file's bytes; ValueError saying what is wrong if the file is not valid."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"{len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, _flags, _saved_at, length, body_crc = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError(f"bad magic {magic!r}")
    (header_crc,) = HEADER_CRC.unpack_from(data, HEADER.size)
    if zlib.crc32(data[: HEADER.size]) != header_crc:
        raise ValueError("header CRC mismatch")
    if version != VERSION:
        raise ValueError(f"format version {version}; this edgestream reads version {VERSION}")
    body = data[HEADER_SIZE:]
    if len(body) != length:
        raise ValueError(f"body is {len(body)} bytes, the header says {length}")
    if zlib.crc32(body) != body_crc:
        raise ValueError("body CRC mismatch")
    return decode_sessions(body)


class SessionFile:
    """A `SessionStorage` in one file, e.g. `<data_dir>/listener/<source>.sessions`. Blocking: call it from a
    worker thread, one call at a time."""

    def __init__(self, path: str, *, clock: Clock | None = None, limits: SessionLimits | None = None) -> None:
        self.path = os.path.abspath(path)
        self._dir = os.path.dirname(self.path)
        self._table = SessionTable(limits or SessionLimits(), clock or SystemClock())
        self._loaded = False

    def load(self) -> list[StoredSession]:
        self._loaded = True
        table = self._table
        try:
            self._ensure_dir()
        except OSError as exc:
            log.error("MQTT sessions: cannot create %s (%s): starting without stored sessions", self._dir,
                      exc)
            return table.restore([])
        try:
            os.unlink(self.path + TMP_SUFFIX)  # a save interrupted before its rename
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("MQTT sessions: cannot remove %s%s: %s", self.path, TMP_SUFFIX, exc)
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return table.restore([])
        except OSError as exc:
            table.corrupt_files += 1
            log.error("MQTT sessions: cannot read %s (%s): starting without stored sessions", self.path, exc)
            return table.restore([])
        try:
            sessions = parse(data)
        except ValueError as exc:
            table.corrupt_files += 1
            log.warning("MQTT sessions: %s is torn or garbled (%s): starting without stored sessions; kept "
                        "as %s%s for inspection", self.path, exc, self.path, CORRUPT_SUFFIX)
            self._quarantine()
            return table.restore([])
        restored = table.restore(sessions)
        log.info("MQTT sessions: %d restored from %s, %d expired", len(restored), self.path,
                 table.expired_at_load)
        return restored

    def save(self, changes: Mapping[str, StoredSession | None]) -> None:
        if not self._loaded:
            raise RuntimeError("SessionFile.save() before load() would drop the stored sessions")
        table = self._table
        table.apply(changes)
        data = render(table.body(), table.clock.wall_ms())
        try:
            self._replace(data)
        except OSError as exc:
            table.write_errors += 1
            raise SessionFileWriteError(self.path, exc.strerror or str(exc), removed=self._remove()) from exc
        table.writes += 1
        table.bytes = len(data)

    def statistics(self) -> SessionStorageStatistics:
        return self._table.statistics()

    # ---------------------------------------------------------------------------------------------- files

    def _replace(self, data: bytes) -> None:
        tmp = self.path + TMP_SUFFIX
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._sync_dir(self._dir)

    def _remove(self) -> bool:
        """Remove the file after a failed save; True if it is gone (or was never there)."""
        with contextlib.suppress(OSError):
            os.unlink(self.path + TMP_SUFFIX)  # what a full disk left of the new file
        try:
            os.unlink(self.path)
            self._sync_dir(self._dir)
        except FileNotFoundError:
            return True
        except OSError as exc:
            log.error("MQTT sessions: cannot remove the outdated %s either: %s", self.path, exc)
            return False
        return True

    def _quarantine(self) -> None:
        try:
            os.replace(self.path, self.path + CORRUPT_SUFFIX)
            self._sync_dir(self._dir)
        except OSError as exc:
            log.error("MQTT sessions: cannot rename %s aside: %s", self.path, exc)

    def _ensure_dir(self) -> None:
        if os.path.isdir(self._dir):
            return
        os.makedirs(self._dir, exist_ok=True)
        self._sync_dir(os.path.dirname(self._dir) or ".")  # the new directory survives a power cut

    @staticmethod
    def _sync_dir(path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
