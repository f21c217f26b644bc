"""What cold retention deletes and what compaction merges. Pure: the tierer passes the manifest's files and
carries out the answer.

Cold retention (independent of the hot log's): per topic, by `retention_ms` against a file's newest record and by
`retention_bytes` over the topic's files, oldest first (by newest record, then offset). Whole files only.

Compaction: small files (< `small_bytes`) of one topic, partition and day are merged into one, in offset order,
at most `max_bytes` of input per merge. Only days before `today` are compacted: the current day still grows by a
file per segment roll, and merging it each time would rewrite the same rows again and again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .manifest import TierFile


@dataclass(frozen=True, slots=True)
class ColdRetention:
    retention_ms: int | None = None
    retention_bytes: int | None = None


def retention_plan(files: Sequence[TierFile], policy: ColdRetention, now_ms: int) -> list[TierFile]:
    """Files of one topic to delete, oldest first."""
    ordered = sorted(files, key=lambda f: (f.max_ts, f.partition, f.first_offset))
    doomed: list[TierFile] = []
    total = sum(f.bytes for f in ordered)
    for f in ordered:
        too_old = policy.retention_ms is not None and f.max_ts < now_ms - policy.retention_ms
        too_big = policy.retention_bytes is not None and total > policy.retention_bytes
        if not (too_old or too_big):
            break
        doomed.append(f)
        total -= f.bytes
    return doomed


def day_of_path(path: str) -> str:
    """The YYYY-MM-DD of `<topic>/date=YYYY-MM-DD/<file>`."""
    part = path.split("/")[-2]
    return part[len("date="):] if part.startswith("date=") else ""


def compaction_plan(files: Sequence[TierFile], *, small_bytes: int, max_bytes: int, today: str
                    ) -> list[list[TierFile]]:
    """Groups of small files to merge, each of 2+ files of one (topic, partition, day), in offset order."""
    groups: dict[tuple[str, int, str], list[TierFile]] = {}
    for f in files:
        day = day_of_path(f.path)
        if f.bytes < small_bytes and day and day < today:
            groups.setdefault((f.topic, f.partition, day), []).append(f)
    plans: list[list[TierFile]] = []
    for key in sorted(groups):
        run: list[TierFile] = []
        size = 0
        for f in sorted(groups[key], key=lambda f: f.first_offset):
            if run and size + f.bytes > max_bytes:
                if len(run) > 1:
                    plans.append(run)
                run, size = [], 0
            run.append(f)
            size += f.bytes
        if len(run) > 1:
            plans.append(run)
    return plans
