"""PartitionState: the partition's small `state` file (enveloped, durable replace; see store.durable).

    version u16 | log_id 16 bytes | epoch u32 | log_start u64 | recovery_point u64 | clean u8

- `log_id` is made once when the partition is created; with the epoch and the offset it names a record for good.
- `epoch` is raised after every unclean stop (and by a clamped mirror cursor), so an offset that recovery had to
  reuse never carries the same identity twice. Every frame also records the epoch it was written in.
- `log_start`: the first offset still kept (retention advances it before deleting segment files).
- `recovery_point`: every segment below the one holding this offset is sealed and durable: trusted at start-up.
- `clean`: the last stop flushed everything and wrote this file last. Anything else means "scan the tail".

A missing or garbled state file is rebuilt from the segments: the log id from a segment header, the epoch from the
frames, the recovery point 0 (scan everything), and the stop counted as unclean.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from . import durable
from .errors import CorruptStateError
from .fs import FileSystem

_FORMAT = struct.Struct("<H16sIQQB")
_VERSION = 1


@dataclass(frozen=True, slots=True)
class PartitionState:
    log_id: bytes
    epoch: int
    log_start: int
    recovery_point: int
    clean: bool

    def encode(self) -> bytes:
        return _FORMAT.pack(_VERSION, self.log_id, self.epoch, self.log_start, self.recovery_point, self.clean)

    @classmethod
    def decode(cls, path: str, payload: bytes) -> PartitionState:
        if len(payload) != _FORMAT.size:
            raise CorruptStateError(path, f"state payload is {len(payload)} bytes, expected {_FORMAT.size}")
        version, log_id, epoch, log_start, recovery_point, clean = _FORMAT.unpack(payload)
        if version != _VERSION:
            raise CorruptStateError(path, f"state format version {version}, expected {_VERSION}")
        if clean not in (0, 1) or recovery_point < log_start:
            raise CorruptStateError(path, "inconsistent fields")
        return cls(log_id, epoch, log_start, recovery_point, bool(clean))

    def write(self, fs: FileSystem, path: str) -> None:
        durable.write_enveloped(fs, path, self.encode())

    @classmethod
    def read(cls, fs: FileSystem, path: str) -> PartitionState:
        return cls.decode(path, durable.read_enveloped(fs, path))

    def with_(self, **changes: object) -> PartitionState:
        return replace(self, **changes)  # type: ignore[arg-type]
