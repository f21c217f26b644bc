"""`edgestream produce TOPIC`: append stdin lines as records.

Lines are read in chunks and handed to the log as batches, so a pipe of millions of lines shares fsyncs; a line
typed by hand is appended at once. With `--report-offsets`, `<partition> <offset>` is printed for each record, in
input order, only once that record is acknowledged (durable in `fsync` mode): a caller that saw the line may
count on the record.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import sys
import threading

import click

from ...store import RecordIn
from ...store.errors import RecordTooLargeError, StoreError
from .common import fail, open_log

_CHUNK = 1 << 16  # 64 KiB reads: big enough to batch a fast pipe, small enough not to delay a slow one
_MAX_IN_FLIGHT = 256  # batches waiting for their ack before reading more stdin (bounded memory)


class _Reporter(threading.Thread):
    """Prints offsets in input order as batches are acknowledged; stops at the first failure."""

    def __init__(self, report: bool) -> None:
        super().__init__(name="produce-reporter", daemon=True)
        self.report = report
        self.queue: collections.deque[tuple[concurrent.futures.Future[int], int, int] | None] = collections.deque()
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.acked = 0

    def put(self, item: tuple[concurrent.futures.Future[int], int, int] | None) -> None:
        with self.cond:
            self.cond.wait_for(lambda: len(self.queue) < _MAX_IN_FLIGHT or self.error is not None)
            self.queue.append(item)
            self.cond.notify_all()

    def run(self) -> None:
        out = sys.stdout
        while True:
            with self.cond:
                self.cond.wait_for(lambda: bool(self.queue))
                item = self.queue[0]
            if item is None:
                return
            fut, partition, count = item
            try:
                base = fut.result()
            except BaseException as exc:
                with self.cond:
                    self.error = exc
                    self.cond.notify_all()
                return
            if self.report:
                out.write("".join(f"{partition} {base + i}\n" for i in range(count)))
                out.flush()
            with self.cond:
                self.queue.popleft()
                self.acked += count
                self.cond.notify_all()


@click.command(
    epilog="Examples:\n\n  printf 'a\\nb\\n' | edgestream produce sensors --report-offsets\n\n"
    "  edgestream simulate mqtt ... | edgestream produce raw --key line3 --partition 2"
)
@click.argument("topic")
@click.option("--key", help="Key for every record (also chooses the partition by hash, unless --partition).")
@click.option("--partition", "-p", type=int, help="Partition; default: by key hash, else round robin per batch.")
@click.option("--report-offsets", is_flag=True, help="Print '<partition> <offset>' per record once it is durable.")
@click.option("--separator", default="\\n", show_default=True, help="Record separator in the input.")
@click.option("--timeout", type=float, default=None,
              help="Give up after this many seconds blocked (e.g. on a full disk with on_full=block).")
@click.pass_context
def produce(ctx: click.Context, topic: str, key: str | None, partition: int | None, report_offsets: bool,
            separator: str, timeout: float | None) -> None:
    """Append each line of stdin to TOPIC as one record."""
    sep = separator.encode().decode("unicode_escape").encode()
    if not sep:
        raise click.BadParameter("must not be empty", param_hint="--separator")
    log = open_log(ctx, block_timeout_ms=int(timeout * 1000) if timeout else None)
    reporter = _Reporter(report_offsets)
    reporter.start()
    key_b = key.encode() if key is not None else None
    try:
        parts = len(log.topic(topic).partitions)
        limit = log.topic(topic).config.max_record_bytes
        klen = len(key_b) if key_b else 0
        fixed = log.partition_for(topic, key_b, partition) if (partition is not None or key_b is not None) else None
        rr = 0
        fd = sys.stdin.fileno()
        rest = b""
        while reporter.error is None:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            data = rest + chunk
            lines = data.split(sep)
            rest = lines.pop()
            if not lines:
                continue
            now = log.wall_ms()
            too_big = next((i for i, line in enumerate(lines) if len(line) + klen > limit), None)
            recs = [RecordIn(now, key_b, line, ()) for line in lines[:too_big]]
            p = fixed if fixed is not None else rr % parts
            rr += 1
            if recs:
                reporter.put((log.append_batch(topic, p, recs), p, len(recs)))
            if too_big is not None:  # keep every record before it, then stop with a clear error
                reporter.put(None)
                reporter.join()
                raise RecordTooLargeError(len(lines[too_big]) + klen, limit)
        if rest and reporter.error is None:
            p = fixed if fixed is not None else rr % parts
            reporter.put((log.append_batch(topic, p, [RecordIn(log.wall_ms(), key_b, rest, ())]), p, 1))
        reporter.put(None)
        reporter.join()
        if reporter.error is not None:
            raise reporter.error
    except StoreError:
        log.close(timeout=5)
        raise
    except BaseException:
        log.close(timeout=5)
        raise
    log.close()
    if not report_offsets:
        click.echo(f"appended {reporter.acked} records to {topic}", err=True)
    if reporter.error is not None:  # pragma: no cover - raised above
        fail(str(reporter.error))
