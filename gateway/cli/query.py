"""`edgestream query "SQL"`: read-only SQL (DuckDB) over one view per topic: the cold tier plus the hot records
not tiered yet, each offset once. `--shell` opens a prompt on the same views.

Opens the data dir read-only, so it runs beside a running gateway and changes nothing. See docs/query.md.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click

from ...store import tier as tierpkg
from .. import tiering
from .common import fail, open_log
from .tier import config_option, decoders_for, load_config

FORMATS = ("table", "csv", "json", "parquet")
_CELL_MAX = 60


def _text(v: Any) -> str:
    """A value as one table or CSV cell."""
    v = tiering.json_value(v)
    if v is None:
        return ""
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _rows(schema: Any, batches: Iterator[Any]) -> Iterator[list[Any]]:
    for batch in batches:
        cols = batch.to_pydict()
        for i in range(batch.num_rows):
            yield [cols[name][i] for name in schema.names]


def write_table(schema: Any, batches: Iterator[Any], out: TextIO) -> int:
    rows = [[_text(v) for v in r] for r in _rows(schema, batches)]
    rows = [[c if len(c) <= _CELL_MAX else c[: _CELL_MAX - 1] + "…" for c in r] for r in rows]
    headers = list(schema.names)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    out.write("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    return len(rows)


def write_csv(schema: Any, batches: Iterator[Any], out: TextIO) -> int:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(schema.names)
    n = 0
    for r in _rows(schema, batches):
        w.writerow([_text(v) for v in r])
        n += 1
    return n


def write_json(schema: Any, batches: Iterator[Any], out: TextIO) -> int:
    """JSON Lines: one object per row."""
    n = 0
    for r in _rows(schema, batches):
        out.write(json.dumps(dict(zip(schema.names, map(tiering.json_value, r), strict=True)),
                             separators=(",", ":")) + "\n")
        n += 1
    return n


def write_parquet(schema: Any, batches: Iterator[Any], path: str) -> int:
    import pyarrow.parquet as pq

    n = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)
            n += batch.num_rows
    return n


def emit(schema: Any, batches: Iterator[Any], fmt: str, output: str | None) -> int:
    if fmt == "parquet":
        if not output:
            raise click.UsageError("--format parquet needs --output FILE")
        return write_parquet(schema, batches, output)
    if output:
        with open(output, "w", encoding="utf-8", newline="") as f:
            return _WRITERS[fmt](schema, batches, f)
    return _WRITERS[fmt](schema, batches, sys.stdout)


_WRITERS = {"table": write_table, "csv": write_csv, "json": write_json}


@click.command(epilog="Examples (the column `offset` is an SQL keyword: quote it):\n\n"
               "  edgestream query \"SELECT sensor, avg(payload_value) FROM telemetry GROUP BY sensor\"\n\n"
               "  edgestream query \"SELECT * FROM telemetry WHERE ts >= now() - INTERVAL 1 HOUR\" "
               "--format csv --output last-hour.csv\n\n"
               "  edgestream query --shell -c /etc/edgestream/gateway.toml")
@click.argument("sql", required=False)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="json is JSON Lines (one object per row); parquet needs --output.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the result to FILE, not stdout.")
@click.option("--shell", is_flag=True, help="An interactive prompt on the same views.")
@click.option("--memory-limit", default=None, help="DuckDB memory limit (default: [tier] query_memory_limit, 256MB).")
@click.option("--threads", type=click.IntRange(1, 64), default=None, help="DuckDB threads (default 2).")
@click.option("--no-hot", is_flag=True, help="Only the cold tier: skip reading the hot records (faster start).")
@config_option
@click.pass_context
def query(ctx: click.Context, sql: str | None, fmt: str, output: str | None, shell: bool, memory_limit: str | None,
          threads: int | None, no_hot: bool, config_path: str | None) -> None:
    """Run one read-only SQL statement over the topics (one view per topic: cold tier + hot log)."""
    if not shell and not sql:
        raise click.UsageError("give the SQL to run, or --shell")
    if sql == "-":
        sql = sys.stdin.read()
    tierpkg.require()
    from ...store.tier.query import QuerySession, run_query

    cfg, tcfg = load_config(ctx, config_path)
    settings = tiering.query_settings(tcfg, memory_limit=memory_limit, threads=threads, hot=not no_hot)
    log = open_log(ctx, readonly=True)
    decoders = decoders_for(log, cfg)

    def open_session() -> QuerySession:
        return QuerySession(log, decoders=decoders, decoder_factory=tiering.make_decoder, settings=settings).open()

    try:
        if shell:
            run_shell(open_session, fmt if fmt != "parquet" else "table")
            return
        assert sql is not None
        session, schema, batches = run_query(open_session, sql)
        try:
            n = emit(schema, batches, fmt, output)
        finally:
            session.close()
        if output:
            click.echo(f"wrote {n} rows to {output}", err=True)
    finally:
        log.close()


HELP = """Enter SQL ending with ';'. Commands:
  .tables             the topic views (cold files, hot rows)
  .schema TOPIC       the columns of a view
  .format table|csv|json
  .refresh            a new snapshot (files tiered and records written since the shell started)
  .quit               leave (Ctrl-D works too)"""


def run_shell(open_session: Any, fmt: str, stdin: TextIO | None = None) -> None:
    from ...store.tier.errors import TierError

    stdin = stdin or sys.stdin
    interactive = stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    session = open_session()
    if interactive:
        click.echo(f"edgestream query shell: {len(session.views)} topic views. .help for help.")
    buf: list[str] = []
    try:
        while True:
            try:
                line = input("sql> " if not buf else "...> ") if interactive else stdin.readline()
            except EOFError:
                break
            if not interactive and line == "":
                break
            line = line.rstrip("\n")
            if not buf and line.strip().startswith("."):
                cmd, _, arg = line.strip().partition(" ")
                if cmd in (".quit", ".exit"):
                    break
                if cmd == ".help":
                    click.echo(HELP)
                elif cmd == ".tables":
                    for topic, (files, hot) in sorted(session.views.items()):
                        click.echo(f"{topic}  ({files} cold files, {hot} hot rows)")
                elif cmd == ".schema" and arg.strip():
                    try:
                        for name, typ in session.describe(arg.strip()):
                            click.echo(f"  {name}  {typ}")
                    except Exception as exc:  # duckdb's catalog error for an unknown view
                        click.echo(f"error: no view {arg.strip()!r} ({type(exc).__name__})")
                elif cmd == ".format" and arg.strip() in _WRITERS:
                    fmt = arg.strip()
                elif cmd == ".refresh":
                    session.close()
                    session = open_session()
                    click.echo(f"{len(session.views)} topic views, new snapshot")
                else:
                    click.echo(f"unknown command {line.strip()!r}; .help lists them")
                continue
            buf.append(line)
            text = "\n".join(buf).strip()
            if not text.endswith(";"):
                if not text:
                    buf = []
                continue
            buf = []
            try:
                schema, batches = session.batches(text)
                out = io.StringIO()
                _WRITERS[fmt](schema, batches, out)
                click.echo(out.getvalue(), nl=False)
            except TierError as exc:
                click.echo(f"error: {exc}")
            except KeyboardInterrupt:
                click.echo("cancelled")
    finally:
        session.close()


__all__ = ["emit", "fail", "query", "run_shell"]
