"""Operations: the cost of /metrics, and the HTTP API's produce and fetch against the direct CLI path.

- `/metrics` of a gateway with 16 topics x 4 partitions (plus their 16 dead-letter topics) under load: scrape
  time (goal <= 20 ms) and size (goal <= 100 KB); baseline: GET /healthz on the same server (the HTTP round trip
  without the metrics).
- HTTP produce (JSON batches of 1000 records, durability fsync) against `edgestream produce` piping the same
  records into a data dir of its own; HTTP fetch (pages of 10,000) against `edgestream consume --format jsonl`
  reading the same records. All four in the same run, the same records, the same machine.

    python tests/bench/run.py --only ops --runs 3
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgestream.edge.simulate import telemetry
from tests.bench.common import BenchContext, Row
from tests.cli import EDGESTREAM
from tests.harness.gateway import running_gateway, simple_config

AREA = "ops"
CMD = "python tests/bench/run.py --only ops --runs 3"
TS = 1_700_000_000_000
CLIENTS = 4


def _payloads(n: int) -> list[str]:
    gen = telemetry.stream(telemetry.fleet(200, seed=1), TS, 1000)
    return [next(gen)[1].decode() for _ in range(n)]


def _request(port: int, method: str, path: str, body: bytes | None = None) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as resp:
        data: bytes = resp.read()
        return data


def _scrape(port: int, path: str, n: int) -> tuple[float, int]:
    """Median wall time of `n` GETs (ms) and the body size."""
    times = []
    size = 0
    for _ in range(n):
        t0 = time.perf_counter()
        size = len(_request(port, "GET", path))
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), size


def _metrics_rows(ctx: BenchContext) -> list[Row]:
    work = ctx.tempdir("ops-metrics")
    topics = [{"name": f"t{i:02d}", "partitions": 4, "linger_ms": 5} for i in range(16)]
    sources = [{"name": f"sim{i}", "type": "simulated", "topic": f"t{i:02d}", "key": "{sensor}", "sensors": 20,
                "rate": 50} for i in range(4)]
    with running_gateway(work, simple_config(os.path.join(work, "data"), topics=topics, sources=sources)) as gw:
        assert gw.port is not None
        time.sleep(2)  # some load on the log and the routes before measuring: the series are all there
        n = 10 if ctx.quick else 50
        scrape_runs, base_runs, sizes = [], [], []
        for _ in range(ctx.runs):
            ms, size = _scrape(gw.port, "/metrics", n)
            scrape_runs.append(ms)
            sizes.append(size / 1000)
            base_runs.append(_scrape(gw.port, "/healthz", n)[0])
    scrape = statistics.median(scrape_runs)
    size_kb = statistics.median(sizes)
    return [
        Row(AREA, "GET /metrics, 16 topics x 4 partitions, under load", scrape, "ms", scrape_runs, CMD,
            baseline="GET /healthz (same server)", baseline_value=statistics.median(base_runs),
            target="<= 20 ms", met=scrape <= 20,
            notes=f"median of {n} scrapes per run; 32 topics counting the dead-letter ones, 4 simulated sources"),
        Row(AREA, "/metrics size, 16 topics x 4 partitions", size_kb, "KB", sizes, CMD, target="<= 100 KB",
            met=size_kb <= 100),
    ]


def _cli(args: list[str], data_dir: str, stdin: bytes | None = None, stdout: Any = subprocess.DEVNULL) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([EDGESTREAM, "--data-dir", data_dir, *args], input=stdin, stdout=stdout, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise RuntimeError(f"edgestream {' '.join(args)}: {p.stderr.decode(errors='replace')}")
    return time.perf_counter() - t0


def _throughput_rows(ctx: BenchContext) -> list[Row]:
    n = 20_000 if ctx.quick else 200_000
    payloads = _payloads(n)
    batch = 1000
    bodies = [json.dumps({"records": [{"value": p} for p in payloads[i:i + batch]]}).encode()
              for i in range(0, n, batch)]
    lines = ("\n".join(payloads) + "\n").encode()
    http_in, http_par, http_out, cli_in, cli_out = [], [], [], [], []
    for run in range(ctx.runs):
        # The direct path: `edgestream produce` into its own data dir, then `edgestream consume` of it.
        cli_dir = ctx.tempdir(f"ops-cli-{run}")
        _cli(["topics", "create", "bench", "--partitions", "1"], cli_dir)
        cli_in.append(n / _cli(["produce", "bench"], cli_dir, stdin=lines))
        cli_out.append(n / _cli(["consume", "bench", "--from-offset", "0", "--format", "jsonl"], cli_dir))
        # The HTTP path: the gateway (no sources), one topic of one partition, the same records.
        work = ctx.tempdir(f"ops-http-{run}")
        cfg = simple_config(os.path.join(work, "data"), sources=[],
                            topics=[{"name": "bench", "partitions": 1}])
        with running_gateway(work, cfg) as gw:
            port = gw.port
            assert port is not None
            t0 = time.perf_counter()
            for body in bodies:
                _request(port, "POST", "/v1/topics/bench/records", body)
            http_in.append(n / (time.perf_counter() - t0))
            with ThreadPoolExecutor(CLIENTS) as pool:  # several producers: requests share fsyncs
                t0 = time.perf_counter()
                list(pool.map(functools.partial(_request, port, "POST", "/v1/topics/bench/records"), bodies))
                http_par.append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            offset = got = 0
            while got < n:
                page = json.loads(_request(port, "GET", f"/v1/topics/bench/partitions/0/records?offset={offset}"
                                                       "&max_records=10000&max_bytes=16000000"))
                got += len(page["records"])
                offset = page["next_offset"]
            http_out.append(n / (time.perf_counter() - t0))
    med = statistics.median
    return [
        Row(AREA, f"HTTP produce, JSON batches of {batch} (fsync)", med(http_in), "records/s", http_in, CMD,
            baseline="edgestream produce (stdin lines, same records)", baseline_value=med(cli_in),
            notes=f"{n:,} telemetry records of ~{len(lines) // n} bytes; one request at a time; the CLI figure "
                  "includes its process start"),
        Row(AREA, f"HTTP produce, JSON batches of {batch}, {CLIENTS} clients at once", med(http_par), "records/s",
            http_par, CMD, baseline="edgestream produce (stdin lines, same records)", baseline_value=med(cli_in)),
        Row(AREA, "HTTP fetch, pages of 10,000", med(http_out), "records/s", http_out, CMD,
            baseline="edgestream consume --format jsonl (same records)", baseline_value=med(cli_out)),
    ]


def run(ctx: BenchContext) -> list[Row]:
    return [*_metrics_rows(ctx), *_throughput_rows(ctx)]
