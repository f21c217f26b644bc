"""SQL over the hot log and the cold tier: one DuckDB view per topic, read-only, bounded.

Each topic becomes a view named after it:

    CREATE VIEW "<topic>" AS
        SELECT * FROM read_parquet([<the manifest's files>], union_by_name = true)   -- cold: offsets < tiered_upto
        UNION ALL BY NAME SELECT * FROM <Arrow table of the hot records from tiered_upto on>

Only files the manifest lists are read (never a glob: a file left by an interrupted tiering must not count), and
the hot side starts where the manifest says the cold side ends, so each offset appears exactly once. Schema
evolution is resolved here, at read time, by name: a field missing from older files reads as NULL, an int64 that
became a float64 reads as DOUBLE, anything mixed with text as VARCHAR; no file is ever rewritten for it.

Locking down, after the views exist (DuckDB 2.0):
    SET allowed_paths = [<those files>]; SET enable_external_access = false; SET lock_configuration = true
so no other file can be read or written (`read_csv('/etc/passwd')`, `COPY ... TO`, `ATTACH`, `INSTALL`, `LOAD`
all fail), and the settings (memory_limit, threads) cannot be raised again. Before anything runs, the statement
must parse as exactly one SELECT (or EXPLAIN of one): writes, DDL, SET, PRAGMA, CALL and friends are refused by
statement type, with a message that says so.

A session is a snapshot: the manifest and the hot records as they were when it opened. If the gateway's tierer
compacts or expires a file the snapshot lists before the query reads it, the query is run again on a fresh
snapshot (`run_query`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from ..log import Log
from . import layout
from . import manifest as mf
from .errors import QueryFailedError, QueryRefusedError
from .hot import empty_table, hot_tables
from .manifest import DecoderSpec, Manifest, TopicDecoder

DecoderFactory = Callable[[DecoderSpec], TopicDecoder | None]
_ALLOWED = {duckdb.StatementType.SELECT}


@dataclass(frozen=True, slots=True)
class QuerySettings:
    memory_limit: str = "256MB"  # a Pi 4 with 1-2 GB shares it with the gateway
    threads: int = 2
    hot: bool = True  # include the hot records not tiered yet
    batch_rows: int = 8192


def check_sql(sql: str) -> str:
    """The statement, if it is one read-only SELECT (or EXPLAIN [ANALYZE] of one); else QueryRefusedError."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryFailedError(type(exc).__name__, _first_line(exc) + _reserved_hint(sql)) from None
    if not statements:
        raise QueryRefusedError("the SQL holds no statement")
    if len(statements) > 1:
        raise QueryRefusedError(f"{len(statements)} statements; send one at a time")
    st = statements[0]
    if st.type == duckdb.StatementType.EXPLAIN:
        words = st.query.split()
        inner_at = 2 if len(words) > 1 and words[1].lower() == "analyze" else 1
        inner = sql.strip().split(None, inner_at)[-1] if len(words) > inner_at else ""
        check_sql(inner)
        return sql
    if st.type not in _ALLOWED:
        kind = "INSTALL and LOAD" if st.type.name == "LOAD" else st.type.name
        raise QueryRefusedError(f"{kind} statements are not allowed")
    return sql


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class QuerySession:
    def __init__(self, log: Log, *, decoders: Mapping[str, TopicDecoder] | None = None,
                 decoder_factory: DecoderFactory | None = None, settings: QuerySettings | None = None,
                 topics: list[str] | None = None) -> None:
        self.log = log
        self.decoders = dict(decoders or {})
        self.decoder_factory = decoder_factory
        self.settings = settings or QuerySettings()
        self.topic_filter = topics
        self.manifest = Manifest()
        self.con: duckdb.DuckDBPyConnection | None = None
        self.views: dict[str, tuple[int, int]] = {}  # topic -> (cold files, hot rows)

    def _decoder(self, topic: str) -> TopicDecoder | None:
        if topic in self.decoders:
            return self.decoders[topic]
        spec = self.manifest.decoder(topic)
        if spec is None or self.decoder_factory is None:
            return None
        return self.decoder_factory(spec)

    def open(self) -> QuerySession:
        s = self.settings
        self.manifest = mf.load(self.log.fs, self.log.data_dir)
        root = layout.tier_dir(self.log.data_dir)
        con = duckdb.connect(":memory:", config={
            "threads": max(1, s.threads),
            "memory_limit": s.memory_limit,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        })
        try:
            allowed: list[str] = []
            names = [t for t in self.log.topic_names() if self.topic_filter is None or t in self.topic_filter]
            for i, topic in enumerate(names):
                allowed += self._create_view(con, i, topic, root)
            con.execute(f"SET allowed_paths = [{', '.join(map(_quote_str, allowed))}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        self.con = con
        return self

    def _create_view(self, con: duckdb.DuckDBPyConnection, i: int, topic: str, root: str) -> list[str]:
        import os

        files = [os.path.join(root, f.path) for f in self.manifest.files_of(topic)]
        files = [f for f in files if os.path.exists(f)]
        parts = []
        if files:
            listing = ", ".join(map(_quote_str, files))
            parts.append(f"SELECT * FROM read_parquet([{listing}], union_by_name = true, hive_partitioning = false)")
        hot_rows = 0
        if self.settings.hot:
            for j, table in enumerate(hot_tables(self.log, self.manifest, topic, self._decoder(topic))):
                name = f"__hot_{i}_{j}"
                con.register(name, table)
                parts.append(f"SELECT * FROM {name}")
                hot_rows += table.num_rows
        if not parts:
            con.register(f"__empty_{i}", empty_table())
            parts.append(f"SELECT * FROM __empty_{i}")
        con.execute(f"CREATE VIEW {_quote_ident(topic)} AS {' UNION ALL BY NAME '.join(parts)}")
        self.views[topic] = (len(files), hot_rows)
        return files

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def __enter__(self) -> QuerySession:
        return self.open() if self.con is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def interrupt(self) -> None:
        if self.con is not None:
            self.con.interrupt()

    def batches(self, sql: str, *, timeout: float | None = None) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Run one read-only statement: (result schema, record batches). Errors map to QueryRefusedError
        (forbidden) or QueryFailedError (anything else DuckDB says)."""
        check_sql(sql)
        assert self.con is not None, "open() the session first"
        timer = threading.Timer(timeout, self.interrupt) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            rel = self.con.sql(sql)
            # DuckDB 2.0 names it to_arrow_reader, 1.x fetch_record_batch (the extra allows both).
            to_reader = getattr(rel, "to_arrow_reader", None) or rel.fetch_record_batch
            reader = to_reader(self.settings.batch_rows)
        except duckdb.Error as exc:
            if timer is not None:
                timer.cancel()
            raise map_error(exc) from None
        return reader.schema, self._iterate(reader, timer)

    def _iterate(self, reader: pa.RecordBatchReader, timer: threading.Timer | None) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                yield batch
        except (duckdb.Error, pa.ArrowException) as exc:
            raise map_error(exc) from None
        finally:
            if timer is not None:
                timer.cancel()

    def fetch(self, sql: str, *, timeout: float | None = None) -> pa.Table:
        schema, batches = self.batches(sql, timeout=timeout)
        return pa.Table.from_batches(list(batches), schema=schema)

    def describe(self, topic: str) -> list[tuple[str, str]]:
        assert self.con is not None
        return [(r[0], r[1]) for r in self.con.execute(f"DESCRIBE {_quote_ident(topic)}").fetchall()]


_OFFSET = re.compile(r'(?<!["\w.])offset(?!["\w])\s*(?:[,)=<>!]|from\b|as\b|\+|-)', re.IGNORECASE)


def _reserved_hint(sql: str) -> str:
    """A syntax error from the column `offset` (a reserved word in SQL) used bare: say how to write it."""
    return '; the column offset must be quoted: "offset" (OFFSET is an SQL keyword)' if _OFFSET.search(sql) else ""


def map_error(exc: BaseException) -> Exception:
    kind = type(exc).__name__
    text = _first_line(exc)
    if isinstance(exc, duckdb.PermissionException) or "disabled by configuration" in text or "locked" in text:
        return QueryRefusedError(f"{text.removeprefix('Permission Error: ')}")
    if isinstance(exc, duckdb.InterruptException):
        return QueryFailedError("Interrupted", "the query was cancelled (time limit or Ctrl-C)")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return QueryFailedError(kind, f"{text}; narrow the query (a time range, fewer columns) or raise "
                                      "the memory limit (--memory-limit)")
    return QueryFailedError(kind, text)


def missing_file(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, QueryFailedError) and exc.kind == "IOException" and (
        "No such file" in text or "No files found" in text)


def run_query(open_session: Callable[[], QuerySession], sql: str, *, attempts: int = 3,
              timeout: float | None = None) -> tuple[QuerySession, pa.Schema, Iterator[pa.RecordBatch]]:
    """Open a session and start the query; if a file of the snapshot vanished (compaction, cold retention by
    the gateway's tierer), try again on a fresh snapshot. The caller closes the returned session."""
    check_sql(sql)
    for attempt in range(attempts):
        session = open_session()
        try:
            schema, batches = session.batches(sql, timeout=timeout)
            first = next(batches, None)
        except QueryFailedError as exc:
            session.close()
            if missing_file(exc) and attempt < attempts - 1:
                continue
            raise
        except BaseException:
            session.close()
            raise

        def chained(first: pa.RecordBatch | None = first, rest: Iterator[pa.RecordBatch] = batches
                    ) -> Iterator[pa.RecordBatch]:
            if first is not None:
                yield first
            yield from rest

        return session, schema, chained()
    raise AssertionError("unreachable")
