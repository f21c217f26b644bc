"""The cold tier: tiering rate and size, GROUP BY and time-range queries over 10 M rows, peak RSS.

- Tiering: sealed 4 MiB segments of simulated sensor JSON (edge.simulate.telemetry, ~120 B) -> Parquet through
  the real Tierer on one thread (as inside the gateway, cpu_share 1.0), and on two (as `edgestream tier run`).
  Baseline: pyarrow alone turning the same payloads, as a JSON Lines file, into one Parquet file (read_json on one
  thread, write_table with zstd): the conversion without the log, the record columns, the key sort, the manifest
  or any fsync.
- Size: Parquet bytes per raw JSON byte (the raw payload is kept in the `value` column).
- Queries: 10 M rows in the tier (the tiered files repeated with new offsets and times through the tier's own
  writer), through `QuerySession` (DuckDB 2 threads, memory limit 256 MB). Baseline: DuckDB over the same
  payloads as JSON Lines.
- Peak RSS: child processes that only tier, or only query (ru_maxrss).

    python tests/bench/run.py --only tier --runs 3
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

from edgestream.edge.decoders import decode_json
from edgestream.edge.simulate import telemetry
from edgestream.store import Log, LogConfig, TopicConfig
from edgestream.store.tier.manifest import DecoderSpec, TopicDecoder
from edgestream.store.tier.testing import append_payloads
from tests.bench.common import BenchContext, Row, median_runs

AREA = "tier"
CMD = "python tests/bench/run.py --only tier --runs 3"
TS = 1_767_225_600_000  # 2026-01-01
JSON = {"telemetry": TopicDecoder(DecoderSpec("json"), decode_json)}


def _payloads(n: int) -> list[bytes]:
    gen = telemetry.stream(telemetry.fleet(200, seed=1), TS, 1000)
    return [next(gen)[1] for _ in range(n)]


def _make_log(path: str, payloads: list[bytes], segment_bytes: int = 4 << 20) -> None:
    log = Log.open(path, LogConfig(min_free_bytes=0))
    log.create_topic("telemetry", TopicConfig(partitions=1, segment_bytes=segment_bytes, retention_ms=None))
    append_payloads(log, "telemetry", 0, payloads, ts0=TS, step_ms=5, batch=5000,
                    key=lambda i, v: v[11:v.index(b'"', 11)])
    log.close()


def _tier(path: str, threads: bool = False) -> tuple[float, int, int, int]:
    """(seconds, rows, parquet bytes, payload bytes) of one full tiering pass on a fresh copy."""
    from edgestream.store.tier.tierer import Tierer, TierSettings

    log = Log.open(path, LogConfig(min_free_bytes=0))
    try:
        with Tierer(log, JSON, TierSettings(cpu_share=1.0, compact=False, threads=threads)) as tierer:
            t0 = time.perf_counter()
            tierer.run_once()
            took = time.perf_counter() - t0
            st = tierer.statistics()
    finally:
        log.close()
    return took, st.rows_tiered, st.bytes_written, st.payload_bytes_read


def _pyarrow_jsonl_to_parquet(jsonl: str, out: str) -> tuple[float, int]:
    """(seconds, rows) of the baseline: one JSON Lines file -> one Parquet file, pyarrow on one thread."""
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    table = pa_json.read_json(jsonl, read_options=pa_json.ReadOptions(use_threads=False, block_size=16 << 20))
    pq.write_table(table, out, compression="zstd")
    return time.perf_counter() - t0, table.num_rows


def _grow_tier(src: str, dst: str, rows: int) -> int:
    """A tier of `rows` rows at `dst`: the tiered files of `src`, repeated with new offsets and later times,
    written by the tier's own Parquet writer and listed in a manifest. Returns the JSONL baseline's row count."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from edgestream.store.tier import layout
    from edgestream.store.tier import manifest as mf
    from edgestream.store.tier.parquet import ParquetOptions, PendingFile, publish, sort_for_compression

    log = Log.open(dst, LogConfig(min_free_bytes=0))
    log.create_topic("telemetry", TopicConfig(partitions=1, retention_ms=None))
    log.close()
    m = mf.load(Log.open(src, readonly=True).fs, src)
    base = pa.concat_tables([pq.read_table(os.path.join(layout.tier_dir(src), f.path)) for f in m.files])
    base = base.sort_by("offset")
    span = pc.max(base.column("ts").cast(pa.int64())).as_py() - TS + 5
    root = layout.tier_dir(dst)
    files = []
    offset = 0
    rep = 0
    while offset < rows:
        part = base.slice(0, rows - offset)
        n = part.num_rows
        part = part.set_column(part.schema.get_field_index("offset"), "offset",
                               pc.add(part.column("offset"), offset - base.column("offset")[0].as_py()))
        ts = pc.add(part.column("ts").cast(pa.int64()), rep * span).cast(pa.timestamp("ms"))
        part = part.set_column(part.schema.get_field_index("ts"), "ts", ts)
        f = PendingFile(root, layout.file_relpath("telemetry", "2026-01-01", 0, offset), "telemetry", 0,
                        part.schema, ParquetOptions())
        for i in range(0, n, 131_072):
            f.write(sort_for_compression(part.slice(i, 131_072)))
        files.append(f.finish(0))
        offset += n
        rep += 1
    publish(root, [f.path for f in files])
    mf.Manifest().with_topic("telemetry", DecoderSpec("json")).with_segment(
        "telemetry", 0, "", files, offset).save(Log.open(dst, readonly=True).fs, dst)
    return offset


# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork+exec, so a child would report the bench's own peak.
PEAK = textwrap.dedent("""
    def peak_mib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
""")

QUERY_CHILD = PEAK + textwrap.dedent("""
    import json, sys, time
    from edgestream.store import Log
    from edgestream.store.tier.query import QuerySession, QuerySettings
    path, sql = sys.argv[1], sys.argv[2]
    log = Log.open(path, readonly=True)
    with QuerySession(log, settings=QuerySettings(memory_limit="256MB", threads=2)) as s:
        s.fetch(sql)
    print(json.dumps({"rss_mb": peak_mib()}))
""")

TIER_CHILD = PEAK + textwrap.dedent("""
    import json, sys
    from edgestream.edge.decoders import decode_json
    from edgestream.store import Log, LogConfig
    from edgestream.store.tier.manifest import DecoderSpec, TopicDecoder
    from edgestream.store.tier.tierer import Tierer, TierSettings
    log = Log.open(sys.argv[1], LogConfig(min_free_bytes=0))
    with Tierer(log, {"telemetry": TopicDecoder(DecoderSpec("json"), decode_json)},
                TierSettings(cpu_share=1.0, compact=False)) as t:
        t.run_once()
    log.close()
    print(json.dumps({"rss_mb": peak_mib()}))
""")


def _child(script: str, *args: str) -> float:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"])


def run(ctx: BenchContext) -> list[Row]:
    import duckdb

    from edgestream.store.tier.query import QuerySession, QuerySettings

    n_tier = 200_000 if ctx.quick else 1_000_000
    n_query = 1_000_000 if ctx.quick else 10_000_000
    runs = max(1, ctx.runs)
    rows: list[Row] = []
    work = ctx.tempdir("tier-")
    payloads = _payloads(n_tier)
    src = os.path.join(work, "src")
    _make_log(src, payloads, (1 << 20) if ctx.quick else (4 << 20))  # quick: small enough to seal segments

    # -- tiering rate and size -----------------------------------------------------------------------------------
    results = []

    def tier_once(threads: bool = False) -> float:
        d = os.path.join(work, "tiering")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(src, d)
        took, n, pbytes, raw = _tier(d, threads)
        results.append((n, pbytes, raw))
        return n / took

    tier_once()  # warm-up, not counted: first imports (pyarrow.parquet, compute kernels), page cache
    rate2, rate2_runs = median_runs(lambda: tier_once(threads=True), runs)
    results.clear()
    rate, rate_runs = median_runs(tier_once, runs)
    n, pbytes, raw = results[-1]
    same = os.path.join(work, "tiered.jsonl")
    with open(same, "wb") as f:
        f.write(b"\n".join(payloads[:n]) + b"\n")
    base_rate, _ = median_runs(lambda: (lambda t, k: k / t)(*_pyarrow_jsonl_to_parquet(same, same + ".parquet")),
                               runs)
    rows.append(Row(AREA, f"tiering rate, {n:,} sensor JSON rows (~{raw // max(1, n)} B), one thread", rate,
                    "rows/s", rate_runs, CMD, "pyarrow alone: the same payloads as JSONL -> Parquet, one thread",
                    base_rate, ">= 500,000 rows/s", rate >= 500_000))
    rows.append(Row(AREA, "tiering rate, the same rows, two threads (`edgestream tier run`)", rate2, "rows/s",
                    rate2_runs, CMD, "pyarrow alone: the same payloads as JSONL -> Parquet, one thread", base_rate,
                    notes="`tier run` builds the next chunk while it writes this one; inside the gateway the "
                          "tierer keeps to one thread at its cpu_share"))
    rows.append(Row(AREA, "Parquet size / raw JSON size (raw payload kept)", pbytes / raw, "bytes/byte",
                    [r[1] / r[2] for r in results], CMD, target="<= 0.10", met=pbytes / raw <= 0.10,
                    notes=f"{pbytes / n:.1f} B/row in Parquet for {raw / n:.0f} B of JSON"))
    tiered = os.path.join(work, "tiering")  # the last run's result: reused to build the query data

    # -- queries over n_query rows -------------------------------------------------------------------------------
    qdir = os.path.join(work, "query")
    total = _grow_tier(tiered, qdir, n_query)
    jsonl = os.path.join(work, "same.jsonl")
    with open(jsonl, "wb") as f:
        for i in range(0, total, len(payloads)):
            f.write(b"\n".join(payloads[: total - i]) + b"\n")
    log = Log.open(qdir, readonly=True)
    group_by = ("SELECT sensor, count(*), avg(payload_value), min(payload_value), max(payload_value) "
                "FROM telemetry GROUP BY sensor")
    span = 5 * total
    lo = TS + span // 2
    time_range = (f"SELECT count(*), avg(payload_value) FROM telemetry "
                  f"WHERE ts >= epoch_ms({lo}) AND ts < epoch_ms({lo + span // 100})")
    with QuerySession(log, settings=QuerySettings(memory_limit="256MB", threads=2, hot=False)) as s:
        s.fetch(group_by)  # warm: footers and page cache, as for the JSONL baseline below

        def timed(sql: str) -> float:
            t0 = time.perf_counter()
            s.fetch(sql)
            return time.perf_counter() - t0

        gb, gb_runs = median_runs(lambda: timed(group_by), runs)
        tr, tr_runs = median_runs(lambda: timed(time_range), runs)
        matched = s.fetch(time_range).column(0)[0].as_py()
    log.close()
    con = duckdb.connect(config={"threads": 2, "memory_limit": "256MB"})
    base_sql = (f"SELECT sensor, count(*), avg(value), min(value), max(value) FROM read_json('{jsonl}', "
                "format = 'newline_delimited') GROUP BY sensor")
    con.execute(base_sql).fetchall()

    def base_once() -> float:
        t0 = time.perf_counter()
        con.execute(base_sql).fetchall()
        return time.perf_counter() - t0

    base, _ = median_runs(base_once, max(1, runs // 2))
    rows.append(Row(AREA, f"GROUP BY sensor over {total:,} tier rows", gb, "s", gb_runs, CMD,
                    "DuckDB over the same payloads as JSONL", base, "<= 0.5 s", gb <= 0.5))
    rows.append(Row(AREA, f"1% time range over {total:,} tier rows ({matched:,} matched)", tr * 1000, "ms",
                    [x * 1000 for x in tr_runs], CMD, target="<= 50 ms", met=tr <= 0.05))

    # -- peak RSS ------------------------------------------------------------------------------------------------
    d = os.path.join(work, "rss")
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(src, d)
    rss_tier = _child(TIER_CHILD, d)
    rss_query = _child(QUERY_CHILD, qdir, group_by)
    rss_idle = _child(QUERY_CHILD, qdir, "SELECT 1")
    rows.append(Row(AREA, f"peak RSS while tiering {n:,} rows", rss_tier, "MiB", [rss_tier], CMD))
    rows.append(Row(AREA, f"peak RSS of the GROUP BY over {total:,} rows (memory_limit 256MB)", rss_query, "MiB",
                    [rss_query], CMD, "the same process running SELECT 1", rss_idle))
    shutil.rmtree(work, ignore_errors=True)
    return rows
