"""Where the cold tier lives inside a data dir, and the names of its files. The only module that knows them:

    <data_dir>/tier/
      .lock                                              one tierer per data dir (fcntl, released on death)
      manifest                                           which files hold which offsets (store.tier.manifest)
      <topic>/date=YYYY-MM-DD/part-<p>-<first>.parquet    written from one sealed segment (first = its first offset)
      <topic>/date=YYYY-MM-DD/part-<p>-<first>-<last>.parquet   a compaction of several small files of that day
      ...*.parquet.tmp                                   being written; deleted at start-up

`date=` is the UTC day of the records' timestamps (hive style, so other tools can prune by it). A segment whose
records span midnight becomes one file per day. Only files listed in the manifest exist as far as readers care: a
file on disk that the manifest does not name is the leftover of an interrupted tiering and is deleted at start-up.
"""

from __future__ import annotations

import datetime as dt
import os
import re

from .. import files

TIER = files.TIER
MANIFEST = "manifest"
LOCK = ".lock"
PARQUET = ".parquet"
TMP = ".tmp"
DAY_MS = 86_400_000

_FILE_RE = re.compile(r"^part-(\d+)-(\d+)(?:-(\d+))?\.parquet$")


def tier_dir(data_dir: str) -> str:
    return os.path.join(data_dir, TIER)


def manifest_path(data_dir: str) -> str:
    return os.path.join(data_dir, TIER, MANIFEST)


def day_of(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms // DAY_MS * 86_400, dt.UTC).strftime("%Y-%m-%d")


def file_relpath(topic: str, day: str, partition: int, first: int, last: int | None = None) -> str:
    """Path relative to the tier dir: `<topic>/date=<day>/part-<p>-<first>[-<last>].parquet`."""
    name = f"part-{partition}-{first}" + (f"-{last}" if last is not None else "") + PARQUET
    return f"{topic}/date={day}/{name}"


def parse_file_name(name: str) -> tuple[int, int, int | None] | None:
    """(partition, first offset, last offset or None) of a tier file name, None if it is not one."""
    m = _FILE_RE.match(name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3)) if m.group(3) else None


def walk_files(root: str) -> list[str]:
    """Every file under the tier dir (relative paths), except the manifest and the lock."""
    out: list[str] = []
    if not os.path.isdir(root):
        return out
    for dirpath, _dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if rel_dir == "." and (name == LOCK or name.startswith(MANIFEST)):
                continue
            out.append(name if rel_dir == "." else os.path.join(rel_dir, name))
    return sorted(out)
