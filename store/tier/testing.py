"""Helpers for tests and benchmarks of the tier: fill a log with payloads, and read back the ground truth
(every record of a topic, straight from the hot log) to compare the tier and the views against."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..frame import RecordIn
from ..log import Log
from ..record import Record


def append_payloads(log: Log, topic: str, partition: int, payloads: Sequence[bytes], *, ts0: int, step_ms: int = 1,
                    key: Callable[[int, bytes], bytes | None] = lambda i, v: None, batch: int = 2000,
                    headers: tuple[tuple[str, bytes], ...] = ()) -> None:
    """Append `payloads` in order with timestamps ts0, ts0 + step_ms, ...; waits until all are acknowledged."""
    futures = []
    for start in range(0, len(payloads), batch):
        chunk = payloads[start:start + batch]
        recs = [RecordIn(ts0 + (start + j) * step_ms, key(start + j, v), v, headers) for j, v in enumerate(chunk)]
        futures.append(log.append_batch(topic, partition, recs))
    for f in futures:
        f.result(60)


def all_records(log: Log, topic: str) -> list[Record]:
    """Every record the hot log holds for `topic`, partition by partition, in offset order."""
    out: list[Record] = []
    for p in log.topic(topic).partitions:
        offset = p.log_start
        while offset < p.high_watermark:
            recs = log.read(topic, p.index, offset, max_records=50_000, max_bytes=1 << 30)
            if not recs:
                break
            out.extend(recs)
            offset = recs[-1].offset + 1
    return out
