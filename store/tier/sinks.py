"""Replay sinks that stay on this machine: files (.parquet, .jsonl, .csv) and another topic of the log.

Files hold the record as stored: partition, offset, epoch, timestamp, key, value, headers. Text formats write a
key or value that is valid UTF-8 as text and anything else as base64 in `<name>_b64` (JSON Lines, like
`edgestream consume --format jsonl`) or with a `base64:` prefix (CSV). A file sink writes `<path>.partial` and
renames it into place only when the replay completes, so a file at `<path>` is always whole.
"""

from __future__ import annotations

import base64
import csv
import json
import os
from concurrent.futures import Future

import pyarrow as pa
import pyarrow.parquet as pq

from ..frame import RecordIn
from ..log import Log
from .errors import ReplayError
from .replay import SCHEMA

PARTIAL = ".partial"


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rows(table: pa.Table) -> list[dict[str, object]]:
    table = table.set_column(table.schema.get_field_index("ts"), "ts", table.column("ts").cast(pa.int64()))
    rows: list[dict[str, object]] = table.to_pylist()
    return rows


def _text(data: bytes | None) -> tuple[str | None, bool]:
    """(text, is_base64)."""
    if data is None:
        return None, False
    try:
        return data.decode(), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), True


class _FileSink:
    resumable = False

    def __init__(self, path: str) -> None:
        self.path = path
        self.partial = path + PARTIAL
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ReplayError(f"cannot write {path}: directory {directory} does not exist")

    def _finish(self, complete: bool) -> None:
        if complete:
            os.replace(self.partial, self.path)


class ParquetFileSink(_FileSink):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._writer = pq.ParquetWriter(self.partial, SCHEMA, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table.select(SCHEMA.names).cast(SCHEMA))

    def checkpoint(self) -> None:
        pass

    def close(self, complete: bool) -> None:
        self._writer.close()
        self._finish(complete)


class JsonlFileSink(_FileSink):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._f = open(self.partial, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, table: pa.Table) -> None:
        out = []
        for r in _rows(table):
            obj: dict[str, object] = {"partition": r["partition"], "offset": r["offset"], "epoch": r["epoch"],
                                      "timestamp_ms": r["ts"], "timestamp": _iso(r["ts"])}  # type: ignore[arg-type]
            for name in ("key", "value"):
                text, b64 = _text(r[name])  # type: ignore[arg-type]
                obj[name] = None if b64 else text
                if b64:
                    obj[name + "_b64"] = text
            headers: dict[str, object] = {}
            for h in r["headers"] or []:  # type: ignore[attr-defined]
                text, b64 = _text(h["value"])
                headers[h["name"] + ("_b64" if b64 else "")] = text
            obj["headers"] = headers
            out.append(json.dumps(obj, separators=(",", ":")))
        self._f.write("\n".join(out) + "\n")

    def checkpoint(self) -> None:
        self._f.flush()

    def close(self, complete: bool) -> None:
        self._f.close()
        self._finish(complete)


class CsvFileSink(_FileSink):
    HEADER = ("partition", "offset", "epoch", "timestamp_ms", "key", "value", "headers")

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._f = open(self.partial, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
        self._csv = csv.writer(self._f)
        self._csv.writerow(self.HEADER)

    @staticmethod
    def _cell(data: bytes | None) -> str:
        text, b64 = _text(data)
        if text is None:
            return ""
        return f"base64:{text}" if b64 or text.startswith("base64:") else text

    def write(self, table: pa.Table) -> None:
        rows = []
        for r in _rows(table):
            hdrs = {h["name"]: self._cell(h["value"]) for h in r["headers"] or []}  # type: ignore[attr-defined]
            rows.append((r["partition"], r["offset"], r["epoch"], r["ts"], self._cell(r["key"]),  # type: ignore[arg-type]
                         self._cell(r["value"]), json.dumps(hdrs) if hdrs else ""))  # type: ignore[arg-type]
        self._csv.writerows(rows)

    def checkpoint(self) -> None:
        self._f.flush()

    def close(self, complete: bool) -> None:
        self._f.close()
        self._finish(complete)


def file_sink(path: str) -> ParquetFileSink | JsonlFileSink | CsvFileSink:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        return ParquetFileSink(path)
    if ext in (".jsonl", ".ndjson"):
        return JsonlFileSink(path)
    if ext == ".csv":
        return CsvFileSink(path)
    raise ReplayError(f"file:{path}: the file name must end in .parquet, .jsonl or .csv")


class TopicSink:
    """Append to another topic of the same (writable) log: same key, value, headers and timestamp; the same
    partition number when the target has it, else by key hash. Checkpoints wait until the appends are durable."""

    resumable = True

    def __init__(self, log: Log, target: str) -> None:
        self.log = log
        self.target = target
        self.partitions = len(log.topic(target).partitions)
        self._pending: list[Future[int]] = []

    def write(self, table: pa.Table) -> None:
        by_partition: dict[int, list[RecordIn]] = {}
        for r in _rows(table):
            key = r["key"]
            src = int(r["partition"])  # type: ignore[call-overload]
            part = src if src < self.partitions else self.log.partition_for(self.target, key)  # type: ignore[arg-type]
            headers = tuple((h["name"], h["value"]) for h in r["headers"] or [])  # type: ignore[attr-defined]
            by_partition.setdefault(part, []).append(RecordIn(int(r["ts"]), key, r["value"], headers))  # type: ignore[arg-type, call-overload]
        for part, recs in by_partition.items():
            self._pending.append(self.log.append_batch(self.target, part, recs))

    def checkpoint(self) -> None:
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.result()

    def close(self, complete: bool) -> None:
        self.checkpoint()


__all__ = ["CsvFileSink", "JsonlFileSink", "ParquetFileSink", "TopicSink", "file_sink"]
