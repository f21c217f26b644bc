"""edgestream.store: the durable, partitioned, checksummed log and its tiers. No network, no asyncio server."""

from .aio import AsyncLog
from .config import Durability, LogConfig, TopicConfig
from .cursors import Cursor, CursorPosition
from .errors import (
    CorruptFrameError,
    CorruptSegmentError,
    CorruptStateError,
    DataDirLockedError,
    DiskFullError,
    InvalidConfigError,
    LogBrokenError,
    LogClosedError,
    OffsetOutOfRangeError,
    PartitionNotFoundError,
    RecordTooLargeError,
    StoreError,
    TopicExistsError,
    TopicNotFoundError,
)
from .frame import RecordIn
from .log import Log
from .record import Record
from .recovery import RecoveryReport
from .topic import partition_for_key

__all__ = [
    "AsyncLog",
    "CorruptFrameError",
    "CorruptSegmentError",
    "CorruptStateError",
    "Cursor",
    "CursorPosition",
    "DataDirLockedError",
    "DiskFullError",
    "Durability",
    "InvalidConfigError",
    "Log",
    "LogBrokenError",
    "LogClosedError",
    "LogConfig",
    "OffsetOutOfRangeError",
    "PartitionNotFoundError",
    "Record",
    "RecordIn",
    "RecordTooLargeError",
    "RecoveryReport",
    "StoreError",
    "TopicConfig",
    "TopicExistsError",
    "TopicNotFoundError",
    "partition_for_key",
]
