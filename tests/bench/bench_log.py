"""The durable log: append throughput, ack latency, sequential reads, recovery time, bytes on disk, idle RSS.

Every figure has a baseline measured in the same run: a minimal Python loop writing the same bytes with the same
fdatasync cadence, raw fdatasync latency, raw reads of the same segment files, a clean-stop open, zstd-1 of the
raw JSON lines as one blob, a bare `import edgestream.store`.

    python tests/bench/run.py --only log --runs 3
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

import cramjam

from edgestream.edge.simulate import telemetry
from edgestream.store import Log, LogConfig, RecordIn, TopicConfig
from tests.bench.common import BenchContext, Row, median_runs

AREA = "log"
CMD = "python tests/bench/run.py --only log --runs 3"
TS = 1_700_000_000_000


def _json_payloads(n: int, size: int | None = None) -> list[bytes]:
    gen = telemetry.stream(telemetry.fleet(200, seed=1), TS, 1000)
    out = []
    for _ in range(n):
        p = next(gen)[1]
        if size is not None:
            p = (p + b" " * size)[:size]
        out.append(p)
    return out


def _batches(payloads: list[bytes], per: int) -> list[list[RecordIn]]:
    recs = [RecordIn(TS + i, None, p) for i, p in enumerate(payloads)]
    return [recs[i : i + per] for i in range(0, len(recs), per)]


def _append_all(log: Log, batches: list[list[RecordIn]]) -> float:
    t0 = time.perf_counter()
    futs = [log.append_batch("t", 0, b) for b in batches]
    for f in futs:
        f.result()
    return time.perf_counter() - t0


def _fresh(ctx: BenchContext, name: str, topic: TopicConfig) -> tuple[str, Log]:
    d = ctx.tempdir(name)
    log = Log.open(d, LogConfig(min_free_bytes=0))
    log.create_topic("t", topic)
    return d, log


def _raw_loop(path: str, batches: list[list[bytes]], syncs: int) -> float:
    """The ceiling: each batch of record bytes joined and written (one write), `syncs` fdatasyncs spread evenly,
    nothing else: no framing, no checksums, no index, no futures."""
    every = max(1, len(batches) // max(1, syncs))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    t0 = time.perf_counter()
    for i, values in enumerate(batches):
        os.write(fd, b"".join(values))
        if (i + 1) % every == 0:
            os.fdatasync(fd)
    os.fdatasync(fd)
    dt = time.perf_counter() - t0
    os.close(fd)
    return dt


def bench_append(ctx: BenchContext) -> list[Row]:
    n = 60_000 if ctx.quick else 300_000
    rows = []
    small = _batches(_json_payloads(n, 100), 1000)
    rates = []
    for _ in range(ctx.runs):
        d, log = _fresh(ctx, "append100-", TopicConfig())
        rates.append(n / _append_all(log, small))
        log.close()
        shutil.rmtree(d)
    rows.append(Row(AREA, "durable append, 100 B JSON records, fsync mode (append_batch of 1,000)",
                    statistics.median(rates), "records/s", rates, CMD, target=">= 500,000 records/s",
                    met=statistics.median(rates) >= 500_000,
                    notes="RecordIn lists built before timing; zstd-1 frames; one fdatasync per commit round"))

    big_n = n // 5
    rnd = os.urandom(1024 * 1024)
    payloads = [rnd[(i * 997) % (len(rnd) - 1024) :][:1024] for i in range(big_n)]
    big = _batches(payloads, 100)
    log_rates, raw_rates = [], []
    chunks = [[r.value for r in b] for b in big]
    syncs = 0
    for i in range(ctx.runs):
        # Alternate which goes first: the page cache favours whichever writes second into freed pages.
        if i % 2 and syncs:
            rd = ctx.tempdir("raw1k-")
            raw_rates.append(big_n / _raw_loop(os.path.join(rd, "raw.bin"), chunks, syncs))
            shutil.rmtree(rd)
        d, log = _fresh(ctx, "append1k-", TopicConfig(codec="none"))
        log_rates.append(big_n / _append_all(log, big))
        ps = log.statistics().topics[0].partitions[0]
        syncs = ps.fsyncs + ps.rolls  # data fdatasyncs: one per commit round, one per sealed segment
        log.close()
        shutil.rmtree(d)
        if not i % 2:
            rd = ctx.tempdir("raw1k-")
            raw_rates.append(big_n / _raw_loop(os.path.join(rd, "raw.bin"), chunks, syncs))
            shutil.rmtree(rd)
    value, base = statistics.median(log_rates), statistics.median(raw_rates)
    rows.append(Row(AREA, "durable append, 1 KiB records, fsync mode (append_batch of 100)", value, "records/s",
                    log_rates, CMD, baseline="raw write+fdatasync loop, same bytes and fsync count",
                    baseline_value=base, target=">= 0.6x baseline", met=value >= 0.6 * base))
    return rows


def _paced(log: Log, rate: int, seconds: float) -> list[float]:
    """Append at `rate` records/s (one append_batch per ms) and return each batch's ack latency in ms."""
    per_tick = max(1, rate // 1000)
    lat: list[float] = []
    lock = threading.Lock()

    def done(t0: float) -> object:
        def cb(_: object) -> None:
            with lock:
                lat.append((time.perf_counter() - t0) * 1000)
        return cb

    start = time.perf_counter()
    tick = 0
    payload = _json_payloads(per_tick, 100)
    futs = []
    while True:
        due = start + tick / 1000
        now = time.perf_counter()
        if now - start >= seconds:
            break
        if now < due:
            time.sleep(due - now)
        t0 = time.perf_counter()
        f = log.append_batch("t", 0, [RecordIn(TS + tick, None, p) for p in payload])
        f.add_done_callback(done(t0))
        futs.append(f)
        tick += 1
    for f in futs:
        f.result()
    return sorted(lat)


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_latency(ctx: BenchContext) -> list[Row]:
    seconds = 1.0 if ctx.quick else 3.0
    d = ctx.tempdir("fsync-")
    fd = os.open(os.path.join(d, "f"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    raw = []
    for _ in range(500):
        os.write(fd, b"x" * 4096)
        t0 = time.perf_counter()
        os.fdatasync(fd)
        raw.append((time.perf_counter() - t0) * 1000)
    os.close(fd)
    raw.sort()
    rows = []
    for rate in (1000, 50_000):
        for linger in (0.0, 5.0):
            p50s, p99s = [], []
            for _ in range(ctx.runs):
                dd, log = _fresh(ctx, "lat-", TopicConfig(linger_ms=linger))
                lat = _paced(log, rate, seconds)
                log.close()
                shutil.rmtree(dd)
                p50s.append(_pct(lat, 0.5))
                p99s.append(_pct(lat, 0.99))
            for name, vals, base in (("p50", p50s, _pct(raw, 0.5)), ("p99", p99s, _pct(raw, 0.99))):
                rows.append(Row(AREA, f"ack latency {name} at {rate:,} records/s, fsync mode, linger_ms={linger:g}",
                                statistics.median(vals), "ms", vals, CMD,
                                baseline=f"raw 4 KiB fdatasync {name}", baseline_value=base))
    return rows


def bench_read(ctx: BenchContext) -> list[Row]:
    n = 60_000 if ctx.quick else 300_000
    d, log = _fresh(ctx, "read-", TopicConfig())
    payloads = _json_payloads(n, 100)
    _append_all(log, _batches(payloads, 1000))
    lines_path = os.path.join(d, "payloads.jsonl")
    with open(lines_path, "wb") as f:  # the same records as tab-separated lines: timestamp, key, value
        f.write(b"".join(b"%d\t\t%s\n" % (1_700_000_000_000 + i, v) for i, v in enumerate(payloads)))

    def read_all() -> float:
        t0 = time.perf_counter()
        off = got = 0
        while True:
            recs = log.read("t", 0, off, max_records=10_000, max_bytes=16 << 20)
            if not recs:
                break
            got += len(recs)
            off = recs[-1].offset + 1
        assert got == n
        return n / (time.perf_counter() - t0)

    def raw_read() -> float:
        """A minimal Python reader of the same records: lines of a plain file split into (ts, key, value) tuples;
        no checksum, no codec, no offsets."""
        t0 = time.perf_counter()
        with open(lines_path, "rb", buffering=1 << 20) as f:
            got = [line.split(b"\t", 2) for line in f]
        assert len(got) == n
        return n / (time.perf_counter() - t0)

    value, runs = median_runs(read_all, ctx.runs)
    base, _ = median_runs(raw_read, ctx.runs)
    log.close()
    shutil.rmtree(d)
    return [Row(AREA, "sequential read, 100 B JSON records (read() of 10,000)", value, "records/s", runs, CMD,
                baseline="minimal Python reader: the same records as tab-separated lines, split", baseline_value=base,
                target=">= 1,000,000 records/s", met=value >= 1_000_000,
                notes="decoded into Record tuples, CRC-checked, zstd-decompressed")]


_KILLED_CHILD = r"""
import os, sys
from edgestream.store import Log, RecordIn
log = Log.open(sys.argv[1])
p = log.partition("t", 0)
rnd = os.urandom(1 << 20)
# Fill the active segment to ~15 of its 16 MiB: the worst case, since recovery scans the whole active segment.
while p.active.size < 15 << 20:
    log.append_batch("t", 0, [RecordIn(1, None, rnd[i : i + 1024]) for i in range(0, 256 << 10, 1024)]).result()
print("ready", flush=True)
sys.stdin.read()
"""


def bench_recovery(ctx: BenchContext) -> list[Row]:
    rows = []
    sizes = [100 << 20, 1 << 30] if not ctx.quick else [16 << 20, 64 << 20]
    rnd = os.urandom(4 << 20)
    for size in sizes:
        d, log = _fresh(ctx, "recover-", TopicConfig(codec="none"))
        chunk = [RecordIn(TS, None, rnd[i : i + 1024]) for i in range(0, 256 * 1024, 1024)]
        written = 0
        futs = []
        while written < size:
            futs.append(log.append_batch("t", 0, chunk))
            written += 256 * 1024
            if len(futs) > 64:
                futs.pop(0).result()
        for f in futs:
            f.result()
        log.close()

        def clean_open(d: str = d) -> float:
            t0 = time.perf_counter()
            Log.open(d).close()
            return time.perf_counter() - t0

        def killed_open(d: str = d) -> float:
            child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, d], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"ready"
            child.send_signal(signal.SIGKILL)
            child.wait()
            t0 = time.perf_counter()
            log = Log.open(d)
            dt = time.perf_counter() - t0
            assert not log.recovery_reports()[0].clean
            log.close()
            return dt

        value, runs = median_runs(killed_open, ctx.runs)
        base, _ = median_runs(clean_open, ctx.runs)
        shutil.rmtree(d)
        rows.append(Row(AREA, f"open after SIGKILL, {size >> 20} MiB of data", value, "s", runs, CMD,
                        baseline="open after a clean stop", baseline_value=base, target="<= 2 s",
                        met=value <= 2.0, notes="killed with a 15 MiB active segment: the most recovery scans"))
    return rows


def bench_disk_bytes(ctx: BenchContext) -> list[Row]:
    n = 50_000 if ctx.quick else 200_000
    payloads = _json_payloads(n)
    raw = sum(len(p) for p in payloads)

    def ratio() -> float:
        d, log = _fresh(ctx, "bytes-", TopicConfig(codec="zstd", compression_level=1))
        _append_all(log, _batches(payloads, 1000))
        log.close()
        pdir = os.path.join(d, "topics", "t", "0")
        disk = sum(os.path.getsize(os.path.join(pdir, f)) for f in os.listdir(pdir))
        shutil.rmtree(d)
        return disk / raw

    value, runs = median_runs(ratio, ctx.runs)
    blob = len(bytes(cramjam.zstd.compress(b"\n".join(payloads), level=1))) / raw
    return [Row(AREA, "disk bytes per payload byte, sensor JSON, zstd-1", value, "bytes/byte", runs, CMD,
                baseline="zstd-1 of the raw JSON lines as one blob", baseline_value=blob, target="<= 0.25",
                met=value <= 0.25, notes=f"{raw / n:.0f} B average payload (edgestream.edge.simulate.telemetry)")]


def bench_recompress(ctx: BenchContext) -> list[Row]:
    """Low-rate frames (appends of 2-3 readings, each acknowledged before the next: one tiny frame each), then
    store.recompress repacks the sealed segments. Durability "os": the frames are the same as with fsync, faster."""
    n = 20_000 if ctx.quick else 60_000
    payloads = _json_payloads(n)
    raw = sum(len(p) for p in payloads)
    befores: list[float] = []
    cpu: list[float] = []

    def ratio() -> float:
        d = ctx.tempdir("recompress-")
        log = Log.open(d, LogConfig(min_free_bytes=0, recompress=False))
        # retention off: the timestamps are from 2023; small segments: the active one stays, keep it a small part
        log.create_topic("t", TopicConfig(codec="zstd", compression_level=1, durability="os", linger_ms=0,
                                          retention_ms=None, segment_bytes=256 << 10))
        recs = [RecordIn(TS + i * 2, None, p) for i, p in enumerate(payloads)]
        i = appends = 0
        while i < n:
            k = 2 + appends % 2
            log.append_batch("t", 0, recs[i : i + k]).result()
            i += k
            appends += 1
        pdir = os.path.join(d, "topics", "t", "0")

        def disk() -> int:
            return sum(os.path.getsize(os.path.join(pdir, f)) for f in os.listdir(pdir))

        befores.append(disk() / raw)
        log.recompress_now()
        stats = log.statistics().recompress
        assert stats is not None and stats.segments > 0
        cpu.append(stats.cpu_seconds / (stats.raw_bytes / 1e6))
        log.close()
        after = disk() / raw
        shutil.rmtree(d)
        return after

    value, runs = median_runs(ratio, ctx.runs)
    return [Row(AREA, "disk bytes per payload byte, sensor JSON at a low rate (2-3 records per frame), "
                      "after recompression", value, "bytes/byte", runs, CMD,
                baseline="the same data before recompression", baseline_value=statistics.median(befores),
                target="<= 0.25", met=value <= 0.25,
                notes=f"ratio after/before {value / statistics.median(befores):.3f}; recompression CPU "
                      f"{statistics.median(cpu):.3f} s per MB of raw records; the active (last) segment stays")]


_RSS_CHILD = r"""
import gc, sys, psutil
import edgestream.store
if sys.argv[1] == "log":
    from edgestream.store import Log, TopicConfig
    log = Log.open(sys.argv[2])
    log.create_topic("t", TopicConfig(partitions=16), exist_ok=True)
    for p in range(16):
        log.append("t", p, b'{"sensor":"x","value":1}').result()
gc.collect()
print(psutil.Process().memory_info().rss)
"""


def bench_rss(ctx: BenchContext) -> list[Row]:
    def rss(kind: str) -> float:
        d = ctx.tempdir("rss-")
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, kind, d], capture_output=True, text=True,
                             check=True).stdout
        shutil.rmtree(d)
        return int(out.strip()) / 2**20

    value, runs = median_runs(lambda: rss("log"), ctx.runs)
    base, _ = median_runs(lambda: rss("import"), ctx.runs)
    return [Row(AREA, "RSS of a process holding 16 open partitions, idle", value, "MiB", runs, CMD,
                baseline="python -c 'import edgestream.store'", baseline_value=base, target="<= 60 MB",
                met=value * 2**20 <= 60e6)]


def run(ctx: BenchContext) -> list[Row]:
    rows: list[Row] = []
    for part in (bench_append, bench_latency, bench_read, bench_recovery, bench_disk_bytes, bench_recompress,
                 bench_rss):
        rows.extend(part(ctx))
    return rows
