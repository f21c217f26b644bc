"""The hot side of the union view: records the hot log holds that the tier does not, as Arrow tables.

Per partition that is `[max(log_start, tiered_upto), high watermark)`: everything below `tiered_upto` belongs to
the cold tier (even where cold retention has expired it), everything from it on to the hot log, so each offset is
read from exactly one side. The records go through the same `slices_to_table` as tiering, so hot and cold rows have the
same columns and types for the same payloads.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from ..errors import OffsetOutOfRangeError
from ..log import Log
from .arrowize import RECORD_SCHEMA, slices_to_table
from .manifest import Manifest, TopicDecoder

CHUNK = 65_536


def hot_ranges(log: Log, manifest: Manifest, topic: str) -> list[tuple[int, int, int]]:
    """(partition, first offset, end offset) of the hot records not yet tiered."""
    out = []
    for p in log.topic(topic).partitions:
        start = max(p.log_start, manifest.tiered_upto(topic, p.index))
        if start < p.high_watermark:
            out.append((p.index, start, p.high_watermark))
    return out


def hot_batches(log: Log, manifest: Manifest, topic: str, decoder: TopicDecoder | None,
                *, chunk: int = CHUNK) -> Iterator[pa.Table]:
    """Tables of at most `chunk` rows each, partition by partition, in offset order."""
    for partition, start, end in hot_ranges(log, manifest, topic):
        offset = start
        while offset < end:
            try:
                slices = log.read_columns(topic, partition, offset, max_records=chunk, upto=end)
            except OffsetOutOfRangeError as exc:
                if exc.start > offset:  # retention moved the start: those offsets were tiered meanwhile
                    raise
                break
            if not slices:
                break
            yield slices_to_table(slices, partition, decoder)
            offset = slices[-1].next_offset


def hot_tables(log: Log, manifest: Manifest, topic: str, decoder: TopicDecoder | None) -> list[pa.Table]:
    """The hot rows of `topic`, merged into as few tables as their types allow (usually one)."""
    tables = list(hot_batches(log, manifest, topic, decoder))
    if len(tables) <= 1:
        return tables
    try:
        return [pa.concat_tables(tables, promote_options="permissive")]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return tables  # a field changed kind (number -> text): DuckDB unifies them by name instead


def empty_table() -> pa.Table:
    return RECORD_SCHEMA.empty_table()
