"""Compaction: several small tier files of one topic, partition and day -> one file, row group by row group.

The merged file's schema is the union of the inputs' (a field missing from a file reads as null there; int64 and
float64 of one field become float64). Inputs whose types cannot be unified that way (a field that is a number in
one file and text in another) are left as they are: compaction is an optimisation, never a rewrite of meaning.
Commit order: write `<merged>.tmp`, fsync, rename; manifest swap (the inputs out, the merged file in); then the
inputs are deleted. A crash before the swap leaves an unlisted merged file (deleted at the next start); after it,
unlisted inputs (same).
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from . import layout
from .coldplan import day_of_path
from .manifest import TierFile
from .parquet import ParquetOptions, PendingFile


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema | None:
    fields: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            old = fields.get(f.name)
            if old is None or pa.types.is_null(old):
                fields[f.name] = f.type
            elif old == f.type or pa.types.is_null(f.type):
                continue
            elif {str(old), str(f.type)} == {"int64", "double"}:
                fields[f.name] = pa.float64()
            else:
                return None
    return pa.schema(list(fields.items()))


def compact(root: str, group: list[TierFile], opts: ParquetOptions, now_ms: int) -> TierFile | None:
    """Write the merged file of `group` (renamed into place, not yet in the manifest). None if the inputs'
    schemas do not unify."""
    paths = [os.path.join(root, f.path) for f in group]
    schema = unified_schema([pq.read_schema(p) for p in paths])
    if schema is None:
        return None
    first = min(f.first_offset for f in group)
    last = max(f.last_offset for f in group)
    f0 = group[0]
    rel = layout.file_relpath(f0.topic, day_of_path(f0.path), f0.partition, first, last)
    out = PendingFile(root, rel, f0.topic, f0.partition, schema, opts)
    try:
        for p in paths:
            pf = pq.ParquetFile(p)
            for i in range(pf.num_row_groups):
                table = out.fits(pf.read_row_group(i))
                if table is None:  # unified_schema said it would fit
                    raise AssertionError(f"{p}: row group {i} does not fit the merged schema")
                out.write(table)
        entry = out.finish(now_ms)
    except BaseException:
        out.abandon()
        raise
    return entry
