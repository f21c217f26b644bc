"""Replay: a range of a topic's history (cold tier + hot log, each offset once) sent to a sink, in offset order
per partition, at a bounded rate, resumable.

The range is the records with `from_offset <= offset < to_offset` and `from_ms <= ts < to_ms` (each bound
optional), partition by partition. Offsets below the manifest's `tiered_upto` come from the Parquet files (only
the row groups whose offset and time statistics overlap), the rest from the hot log, exactly as the query views
split them.

Resuming: after each checkpoint (the sink says everything so far is delivered: Kafka acks, appends durable)
the next offset of every partition is committed to the cursor `replay-<job>` (durable replace). A replay that is
interrupted and run again with the same arguments continues from there; duplicates are possible for what was
sent after the last checkpoint (at least once; the identity headers let the centre drop them), gaps are not. The
cursor is deleted when the replay completes. File sinks are not resumable: they write `<path>.partial` and
rename it when complete, and start over if interrupted.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ..cursors import CursorPosition
from ..errors import OffsetOutOfRangeError
from ..log import Log
from . import layout
from .arrowize import RECORD_COLUMNS, RECORD_SCHEMA, TS_TYPE, slice_arrays
from .errors import ReplayError
from .manifest import Manifest

COLUMNS = [c for c in RECORD_COLUMNS if c != "decode_error"]
SCHEMA = pa.schema([RECORD_SCHEMA.field(c) for c in COLUMNS])
CURSOR_PREFIX = "replay-"
_WINDOW = 262_144  # offsets per read from the cold tier: two default row groups


@dataclass(frozen=True, slots=True)
class ReplayRange:
    from_offset: int | None = None
    to_offset: int | None = None  # exclusive
    from_ms: int | None = None
    to_ms: int | None = None  # exclusive
    partitions: tuple[int, ...] | None = None

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("from_offset", self.from_offset), ("to_offset", self.to_offset),
                                         ("from_ms", self.from_ms), ("to_ms", self.to_ms),
                                         ("partitions", self.partitions)) if v is not None]
        return ",".join(parts) or "all"


class ReplaySink(Protocol):
    """Where replayed records go. `write` gets one partition's records in offset order (an Arrow table with
    SCHEMA's columns); `checkpoint` returns once everything written so far is delivered or durable."""

    resumable: bool

    def write(self, table: pa.Table) -> None: ...

    def checkpoint(self) -> None: ...

    def close(self, complete: bool) -> None: ...


def job_name(topic: str, destination: str, rng: ReplayRange) -> str:
    """Same command, same job: a rerun after an interruption finds its cursor."""
    digest = hashlib.sha1(f"{topic}\0{destination}\0{rng.describe()}".encode()).hexdigest()[:12]
    return f"{CURSOR_PREFIX}{digest}"


# -- reading a range ---------------------------------------------------------------------------------------------------


def _time_filter(table: pa.Table, rng: ReplayRange) -> pa.Table:
    if rng.from_ms is None and rng.to_ms is None:
        return table
    ts = table.column("ts")
    mask = None
    if rng.from_ms is not None:
        mask = pc.greater_equal(ts, pa.scalar(rng.from_ms, TS_TYPE))
    if rng.to_ms is not None:
        upper = pc.less(ts, pa.scalar(rng.to_ms, TS_TYPE))
        mask = upper if mask is None else pc.and_(mask, upper)
    return table.filter(mask)


def cold_tables(data_dir: str, manifest: Manifest, topic: str, partition: int, start: int, end: int,
                rng: ReplayRange) -> Iterator[pa.Table]:
    """Rows of [start, end) from the tier files, in offset order, `_WINDOW` offsets at a time."""
    root = layout.tier_dir(data_dir)
    files = [f for f in manifest.files_of(topic, partition) if f.last_offset >= start and f.first_offset < end
             and (rng.from_ms is None or f.max_ts >= rng.from_ms) and (rng.to_ms is None or f.min_ts < rng.to_ms)]
    if not files:
        return
    dataset = ds.dataset([os.path.join(root, f.path) for f in files], format="parquet", schema=SCHEMA)
    low = start
    while low < end:
        overlapping = [f for f in files if f.last_offset >= low and f.first_offset < low + _WINDOW]
        if not overlapping:
            later = [f.first_offset for f in files if f.first_offset >= low]
            if not later:
                return
            low = min(later)
            continue
        high = min(end, low + _WINDOW)
        expr = (pc.field("offset") >= low) & (pc.field("offset") < high)
        if rng.from_ms is not None:
            expr = expr & (pc.field("ts") >= pa.scalar(rng.from_ms, TS_TYPE))
        if rng.to_ms is not None:
            expr = expr & (pc.field("ts") < pa.scalar(rng.to_ms, TS_TYPE))
        table = dataset.to_table(columns=COLUMNS, filter=expr)
        if table.num_rows:
            yield table.sort_by("offset")
        low = high


def hot_tables(log: Log, topic: str, partition: int, start: int, end: int, rng: ReplayRange,
               chunk: int = 65_536) -> Iterator[pa.Table]:
    offset = start
    while offset < end:
        try:
            slices = log.read_columns(topic, partition, offset, max_records=chunk, upto=end)
        except OffsetOutOfRangeError as exc:
            raise ReplayError(f"{topic}/{partition}: offsets from {offset} are gone from the hot log (it now "
                              f"starts at {exc.start}) and were not tiered; replay from {exc.start} on") from None
        if not slices:
            return
        table = _time_filter(pa.Table.from_arrays(slice_arrays(slices, partition), schema=SCHEMA), rng)
        offset = slices[-1].next_offset
        if table.num_rows:
            yield table


def partition_range(log: Log, manifest: Manifest, topic: str, partition: int, rng: ReplayRange) -> tuple[int, int]:
    """[first, end) offsets of the range in this partition (before the time filter)."""
    p = log.partition(topic, partition)
    cold_start = min((f.first_offset for f in manifest.files_of(topic, partition)), default=None)
    lowest = p.log_start if cold_start is None else min(cold_start, p.log_start)
    first = max(lowest, rng.from_offset or 0)
    end = p.high_watermark if rng.to_offset is None else min(p.high_watermark, rng.to_offset)
    return first, max(first, end)


def read_range(log: Log, manifest: Manifest, topic: str, partition: int, start: int, end: int,
               rng: ReplayRange) -> Iterator[pa.Table]:
    """Every record of the range from `start`, cold then hot, each offset once, in offset order."""
    upto = manifest.tiered_upto(topic, partition)
    if start < min(upto, end):
        yield from cold_tables(log.data_dir, manifest, topic, partition, start, min(upto, end), rng)
    hot_start = max(start, upto, log.partition(topic, partition).log_start)
    if hot_start < end:
        yield from hot_tables(log, topic, partition, hot_start, end, rng)


# -- the replay loop ---------------------------------------------------------------------------------------------------


class TokenBucket:
    """`rate` records per second with a burst of one second's worth; the clock is injected."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = rate
        self.last = clock()

    def wait_for(self, n: int) -> float:
        """Take n tokens; the seconds to wait before sending them (0 when there are enough)."""
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass
class ReplayProgress:
    records: int = 0
    total: int = 0  # an upper bound when a time range is given
    partition: int = -1
    offset: int = -1
    resumed: bool = False


class Replayer:
    def __init__(self, log: Log, manifest: Manifest, topic: str, rng: ReplayRange, sink: ReplaySink, *,
                 job: str, rate: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, checkpoint_records: int = 50_000,
                 on_progress: Callable[[ReplayProgress], None] | None = None) -> None:
        self.log = log
        self.manifest = manifest
        self.topic = topic
        self.rng = rng
        self.sink = sink
        self.job = job
        self.bucket = TokenBucket(rate, clock) if rate else None
        self.sleep = sleep
        self.checkpoint_records = checkpoint_records
        self.on_progress = on_progress or (lambda p: None)
        self.progress = ReplayProgress()
        self._slice = max(1, int(rate // 10)) if rate else 10_000

    def partitions(self) -> list[int]:
        all_parts = [p.index for p in self.log.topic(self.topic).partitions]
        if self.rng.partitions is None:
            return all_parts
        bad = [p for p in self.rng.partitions if p not in all_parts]
        if bad:
            raise ReplayError(f"topic {self.topic} has partitions 0..{len(all_parts) - 1}, not {bad}")
        return list(self.rng.partitions)

    def run(self) -> ReplayProgress:
        parts = self.partitions()
        cur = self.log.cursors.get(self.job) if self.sink.resumable else None
        plan = {}
        for p in parts:
            first, end = partition_range(self.log, self.manifest, self.topic, p, self.rng)
            pos = cur.get(self.topic, p) if cur is not None else None
            if pos is not None:
                first = max(first, pos.offset)
                self.progress.resumed = True
            plan[p] = (first, end)
            self.progress.total += max(0, end - first)
        since_checkpoint = 0
        positions: dict[int, int] = {p: first for p, (first, _end) in plan.items()}
        try:
            for p, (first, end) in plan.items():
                self.progress.partition = p
                for table in read_range(self.log, self.manifest, self.topic, p, first, end, self.rng):
                    for start in range(0, table.num_rows, self._slice):
                        part = table.slice(start, self._slice)
                        if self.bucket is not None:
                            wait = self.bucket.wait_for(part.num_rows)
                            if wait > 0:
                                self.sleep(wait)
                        self.sink.write(part)
                        last = part.column("offset")[-1].as_py()
                        positions[p] = last + 1
                        self.progress.records += part.num_rows
                        self.progress.offset = last
                        since_checkpoint += part.num_rows
                        if since_checkpoint >= self.checkpoint_records:
                            self._checkpoint(positions)
                            since_checkpoint = 0
                        self.on_progress(self.progress)
                positions[p] = end
            self._checkpoint(positions)
        except BaseException:
            self.sink.close(complete=False)
            raise
        self.sink.close(complete=True)
        if self.sink.resumable:
            self.log.cursors.delete(self.job)
        self.on_progress(self.progress)
        return self.progress

    def _checkpoint(self, positions: dict[int, int]) -> None:
        self.sink.checkpoint()
        if not self.sink.resumable:
            return
        log_ids = {p.index: p for p in self.log.topic(self.topic).partitions}
        self.log.cursors.commit(self.job, {
            (self.topic, p): CursorPosition(off, log_ids[p].log_id.hex(), log_ids[p].epoch)
            for p, off in positions.items()
        })
