"""Names and places of everything in a data dir. The only module that knows the layout:

    <data_dir>/
      .lock                                  one process per data dir (store.lock)
      topics/<topic>/config                  the topic's settings (enveloped JSON, durable replace)
      topics/<topic>/<partition>/
        00000000000000000000.log             segment, named by its base offset (%020d)
        00000000000000000000.idx             its sparse offset+time index, written at seal
        00000000000000000000.log.quarantined a sealed segment that failed its checks: kept, never read
        state                                log id, epoch, log start, recovery point, clean flag
      cursors/<name>                         a consumer's or mirror's committed offsets
      tier/...                               the Parquet cold tier (store.tier)
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fs import FileSystem

LOCK = ".lock"
TOPICS = "topics"
CURSORS = "cursors"
TIER = "tier"
TOPIC_CONFIG = "config"
STATE = "state"
LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".idx"
QUARANTINE_SUFFIX = ".quarantined"

# Topic and cursor names become directory and file names: keep them portable and unambiguous.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SEGMENT_RE = re.compile(r"^(\d{20})\.log$")


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name)) and name not in (".", "..")


def topics_dir(data_dir: str) -> str:
    return os.path.join(data_dir, TOPICS)


def topic_dir(data_dir: str, topic: str) -> str:
    return os.path.join(data_dir, TOPICS, topic)


def partition_dir(data_dir: str, topic: str, partition: int) -> str:
    return os.path.join(data_dir, TOPICS, topic, str(partition))


def cursors_dir(data_dir: str) -> str:
    return os.path.join(data_dir, CURSORS)


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}{LOG_SUFFIX}"


def index_name(base_offset: int) -> str:
    return f"{base_offset:020d}{INDEX_SUFFIX}"


def quarantine_path(fs: FileSystem, path: str) -> str:
    """A free name for quarantining `path`: `<name>.quarantined`, then `.quarantined.1`, ... (never overwrite one)."""
    target = path + QUARANTINE_SUFFIX
    n = 0
    while fs.exists(target):
        n += 1
        target = f"{path}{QUARANTINE_SUFFIX}.{n}"
    return target


def parse_segment_name(name: str) -> int | None:
    m = _SEGMENT_RE.match(name)
    return int(m.group(1)) if m else None
