"""Errors raised by edgestream.store: the durable log and its tiers.

One root, `StoreError`. Subclasses are named after the object and the failure, carry structured fields
(`path`, `offset`, ...) and a `retriable` class attribute that callers (the mirror, sources) read instead of
matching strings. Every message an operator can see says what to do next.
"""

from __future__ import annotations


class StoreError(Exception):
    """Root of every error raised by edgestream.store."""

    retriable: bool = False


class LogClosedError(StoreError):
    """The log (or partition) was closed; appends and reads are refused."""


class LogBrokenError(StoreError):
    """A previous I/O failure left the log unable to guarantee durability; it refuses further appends.

    Restart the process: recovery will truncate to the last durable frame.
    """


class DataDirLockedError(StoreError):
    def __init__(self, path: str, holder: str = "") -> None:
        who = f" (held by {holder})" if holder else ""
        super().__init__(
            f"data dir {path} is in use by another edgestream process{who}; stop it first "
            "(systemctl stop edgestream) or pass a different --data-dir"
        )
        self.path = path
        self.holder = holder


class TopicNotFoundError(StoreError):
    def __init__(self, topic: str) -> None:
        super().__init__(f"unknown topic {topic!r}; list topics with `edgestream topics list`")
        self.topic = topic


class TopicExistsError(StoreError):
    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} already exists")
        self.topic = topic


class PartitionNotFoundError(StoreError):
    def __init__(self, topic: str, partition: int, count: int) -> None:
        super().__init__(f"topic {topic!r} has partitions 0..{count - 1}; there is no partition {partition}")
        self.topic = topic
        self.partition = partition


class InvalidConfigError(StoreError):
    """A topic or log setting is out of range. `key` names it, `allowed` says what is accepted."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"invalid {key} = {value!r}: allowed {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


class RecordTooLargeError(StoreError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"record of {size} bytes is over the limit of {limit} bytes (max_record_bytes)")
        self.size = size
        self.limit = limit


class OffsetOutOfRangeError(StoreError):
    def __init__(self, topic: str, partition: int, offset: int, start: int, end: int) -> None:
        super().__init__(
            f"offset {offset} is outside {topic}/{partition}: records {start}..{end - 1} are available"
            if end > start
            else f"offset {offset} is outside {topic}/{partition}: the partition holds no records (next is {end})"
        )
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.start = start
        self.end = end


class DiskFullError(StoreError):
    """The disk (or the topic's cap) has no room and the topic's policy is `block` or `reject_new`.

    Retriable: with `block` the append waits and this is raised only when the caller's deadline passes.
    """

    retriable = True

    def __init__(self, path: str, free_bytes: int, needed_bytes: int, *, policy: str = "block") -> None:
        super().__init__(
            f"no room in {path}: {free_bytes} bytes free, {needed_bytes} needed (on_full={policy}); free space, "
            "raise retention or lower min_free_bytes"
        )
        self.path = path
        self.free_bytes = free_bytes
        self.needed_bytes = needed_bytes
        self.policy = policy


class CorruptFrameError(StoreError):
    """A frame fails its checks. Recovery truncates at it (tail) or quarantines the segment (sealed)."""

    def __init__(self, path: str, position: int, reason: str) -> None:
        super().__init__(f"corrupt frame in {path} at byte {position}: {reason}")
        self.path = path
        self.position = position
        self.reason = reason


class CorruptSegmentError(StoreError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt segment {path}: {reason}; run `edgestream check --repair`")
        self.path = path
        self.reason = reason


class CorruptStateError(StoreError):
    """A small state file fails its CRC; callers treat it as absent and rebuild it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"corrupt state file {path}: {reason}")
        self.path = path
        self.reason = reason
