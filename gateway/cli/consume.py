"""`edgestream consume TOPIC`: print records, from an offset, a time or a named cursor; optionally follow.

Opens the data dir read-only, so it works beside a running gateway and never changes the log. With `--cursor`
the position is read from and committed to `cursors/<name>` (durable replace) as records are printed.
"""

from __future__ import annotations

import json
import signal
import sys

import click

from ...store import CursorPosition, Log
from ...store.errors import OffsetOutOfRangeError
from ..api_codec import record_json
from .common import iso_ms, open_log, parse_time_ms


@click.command(
    epilog="Examples:\n\n  edgestream consume sensors --from-offset 0 --format jsonl\n\n"
    "  edgestream consume sensors --from-time 2026-11-27T08:00:00Z --follow\n\n"
    "  edgestream consume sensors --cursor dashboard --max 100"
)
@click.argument("topic")
@click.option("--partition", "-p", type=int, help="Only this partition (default: all).")
@click.option("--from-offset", type=int, help="Start at this offset (default: the log start).")
@click.option("--from-time", help="Start at the first record at or after this time (ISO 8601, UTC if no zone).")
@click.option("--cursor", help="Start where cursor NAME stopped, and commit it as records are printed.")
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new records (Ctrl-C to stop).")
@click.option("--format", "fmt", type=click.Choice(["raw", "jsonl"]), default="raw", show_default=True,
              help="raw: the value and a newline; jsonl: one JSON object per record.")
@click.option("--max", "max_records", type=int, default=None, help="Stop after this many records.")
@click.pass_context
def consume(ctx: click.Context, topic: str, partition: int | None, from_offset: int | None, from_time: str | None,
            cursor: str | None, follow: bool, fmt: str, max_records: int | None) -> None:
    """Print the records of TOPIC."""
    if sum(x is not None for x in (from_offset, from_time, cursor)) > 1:
        raise click.UsageError("give at most one of --from-offset, --from-time, --cursor")
    signal.signal(signal.SIGINT, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    log = open_log(ctx, readonly=True)
    try:
        _consume(log, topic, partition, from_offset, from_time, cursor, follow, fmt, max_records)
    except KeyboardInterrupt:
        pass
    finally:
        log.close()


def _consume(log: Log, topic: str, partition: int | None, from_offset: int | None, from_time: str | None,
             cursor: str | None, follow: bool, fmt: str, max_records: int | None) -> None:
    t = log.topic(topic)
    parts = [t.partition(partition).index] if partition is not None else [p.index for p in t.partitions]
    ts = parse_time_ms(from_time) if from_time else None
    positions: dict[int, int] = {}
    cur = log.cursors.get(cursor) if cursor else None
    for i in parts:
        p = t.partition(i)
        if from_offset is not None:
            if not p.log_start <= from_offset <= p.high_watermark:
                raise OffsetOutOfRangeError(topic, i, from_offset, p.log_start, p.high_watermark)
            positions[i] = from_offset
        elif ts is not None:
            positions[i] = p.offset_for_time(ts)
        elif cur is not None and cur.get(topic, i) is not None:
            pos = cur.get(topic, i)
            assert pos is not None
            positions[i] = max(pos.offset, p.log_start)
        else:
            positions[i] = p.log_start
    out = sys.stdout.buffer
    printed = 0
    while True:
        progressed = False
        for i in parts:
            recs = log.read(topic, i, positions[i], max_records=1000)
            if not recs:
                continue
            if max_records is not None:
                recs = recs[: max_records - printed]
            chunks = []
            for r in recs:
                if fmt == "raw":
                    chunks.append(r.value + b"\n")
                else:
                    obj = record_json(r)  # the same shape as the HTTP API's fetch
                    obj["timestamp"] = iso_ms(r.timestamp_ms)
                    chunks.append(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
            out.write(b"".join(chunks))
            out.flush()
            positions[i] = recs[-1].offset + 1
            printed += len(recs)
            progressed = True
            if cursor:
                p = t.partition(i)
                log.cursors.commit(cursor, {(topic, i): CursorPosition(positions[i], p.log_id.hex(), p.epoch)})
            if max_records is not None and printed >= max_records:
                return
        if not progressed:
            if not follow:
                return
            # Wait on one partition at a time with a short timeout, so every partition is looked at often.
            for i in parts:
                if log.wait_for(topic, i, positions[i], timeout=0.5 / len(parts)):
                    break
