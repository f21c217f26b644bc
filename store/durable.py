"""Durable replace and the envelope of every small state file.

Durable replace (the one helper used for every small file: partition state, cursors, indexes, topic config):
  1. write the new content to `<path>.tmp` in the same directory;
  2. fdatasync it;
  3. `os.replace` it over `<path>` (atomic on POSIX);
  4. fsync the directory, so the rename itself survives a power cut.
After a crash a reader finds either the old file or the new one, never a mix; a left-over `.tmp` is deleted at
start-up.

Envelope, little-endian: magic `ESF1` | payload length u32 | CRC-32 of the payload u32 | payload. A file that is
short, has the wrong magic or a CRC mismatch is torn or garbled: `read_enveloped` raises CorruptStateError and
callers treat the file as absent and rebuild what it held from the segments.
"""

from __future__ import annotations

import os
import struct

from .checksum import crc32
from .errors import CorruptStateError
from .fs import FileSystem

ENVELOPE = struct.Struct("<4sII")
ENVELOPE_MAGIC = b"ESF1"
TMP_SUFFIX = ".tmp"


def durable_replace(fs: FileSystem, path: str, data: bytes) -> None:
    tmp = path + TMP_SUFFIX
    handle = fs.open_new(tmp)
    try:
        handle.write(data)
        handle.sync()
    finally:
        handle.close()
    fs.replace(tmp, path)
    fs.sync_dir(os.path.dirname(path) or ".")


def ensure_dir(fs: FileSystem, path: str) -> None:
    """Create `path` and any missing parents, each one durable (its parent directory fsync'ed) when this returns."""
    if fs.isdir(path):
        return
    parent = os.path.dirname(path.rstrip("/"))
    if parent and parent != path:
        ensure_dir(fs, parent)
    fs.makedirs(path)
    fs.sync_dir(parent or ".")


def envelope(payload: bytes) -> bytes:
    return ENVELOPE.pack(ENVELOPE_MAGIC, len(payload), crc32(payload)) + payload


def open_envelope(path: str, data: bytes) -> bytes:
    if len(data) < ENVELOPE.size:
        raise CorruptStateError(path, f"{len(data)} bytes, shorter than the {ENVELOPE.size}-byte envelope")
    magic, length, crc = ENVELOPE.unpack_from(data, 0)
    if magic != ENVELOPE_MAGIC:
        raise CorruptStateError(path, f"bad magic {magic!r}")
    payload = data[ENVELOPE.size :]
    if len(payload) != length:
        raise CorruptStateError(path, f"payload is {len(payload)} bytes, envelope says {length}")
    if crc32(payload) != crc:
        raise CorruptStateError(path, "CRC mismatch")
    return payload


def write_enveloped(fs: FileSystem, path: str, payload: bytes) -> None:
    durable_replace(fs, path, envelope(payload))


def read_enveloped(fs: FileSystem, path: str) -> bytes:
    """The payload of an enveloped file. FileNotFoundError if absent, CorruptStateError if torn or garbled."""
    return open_envelope(path, fs.read_bytes(path))
