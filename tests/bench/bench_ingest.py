"""Ingestion benchmarks (issue: the gateway service): MQTT QoS 1 into the log vs a bare paho subscriber, gateway RSS.

MQTT: N QoS 1 messages (~100 B telemetry JSON) are queued at a real local Mosquitto for an offline persistent
session; then one subscriber drains the queue alone. The baseline is a bare paho-mqtt subscriber that stores
nothing (auto-ack, its own network thread); the contender is the real gateway (`edgestream run`, MQTT client source,
`fsync` durability: every PUBACK waits for the fdatasync that covers the record). Same broker, same messages,
interleaved runs. Rate = messages / (last - first message), CPU = the process's user+system time over that window.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.common import BenchContext, Row, median_runs
from tests.bench.mqtt_client_choice import fill, payloads, prime
from tests.harness.gateway import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _gateway_config(data: str, port: int, client_id: str) -> dict[str, object]:
    return {
        "gateway": {"id": "bench", "data_dir": data, "shutdown_timeout_s": 20},
        "log": {"min_free_bytes": 1 << 20},
        "http": {"listen": "127.0.0.1:0"},
        "topics": [{"name": "telemetry", "partitions": 4, "decoder": "json", "durability": "fsync"}],
        "sources": [{"name": "broker", "type": "mqtt_client", "topic": "telemetry", "key": "{topic_levels[1]}",
                     "host": "127.0.0.1", "port": port, "client_id": client_id, "protocol": "3.1.1",
                     "topics": [{"filter": "bench/#"}], "max_inflight": 1000}],
    }


def _drain_gateway(ctx: BenchContext, port: int, client_id: str, count: int) -> dict[str, float]:
    work = ctx.tempdir("gw-")
    gw = GatewayProcess(work, _gateway_config(os.path.join(work, "data"), port, client_id))
    gw.start()
    assert gw.proc is not None
    pid = gw.proc.pid
    first_t = first_cpu = 0.0
    first_n = 0
    rss = 0.0
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            n = gw.metric_sum("edgestream_records_in_total")
            now, cpu = time.perf_counter(), _cpu_s(pid)
            rss = max(rss, _rss_mb(pid))
            if n > 0 and not first_t:
                first_t, first_cpu, first_n = now, cpu, int(n)
            if n >= count:
                wall = now - first_t
                done = count - first_n
                return {"rate": done / wall, "cpu_us": (cpu - first_cpu) / done * 1e6, "rss_mb": rss}
            time.sleep(0.05)
        raise TimeoutError("the gateway did not drain the queue")
    finally:
        gw.stop()


def _drain_paho(port: int, client_id: str, count: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/bench/mqtt_client_choice.py"), "--child", "paho-auto", "--port", str(port),
         "--client-id", client_id, "--count", str(count)],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    out: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def mqtt_rows(ctx: BenchContext) -> list[Row]:
    from tests.harness.mosquitto import MosquittoBroker

    count = 20_000 if ctx.quick else 100_000
    data = payloads()
    broker = MosquittoBroker(Path(ctx.tempdir("mosq-")), max_inflight_messages=1000, autosave_interval_s=3600)
    broker.start()
    base: list[dict[str, float]] = []
    gw: list[dict[str, float]] = []
    try:
        for run in range(ctx.runs):
            cid = f"bench-paho-{run}-{os.getpid()}"
            prime(broker.port, cid)
            fill(broker.port, count, data)
            base.append(_drain_paho(broker.port, cid, count))
            cid = f"bench-gw-{run}-{os.getpid()}"
            prime(broker.port, cid)
            fill(broker.port, count, data)
            gw.append(_drain_gateway(ctx, broker.port, cid, count))
    finally:
        broker.stop()
    med = lambda rows, k: sorted(r[k] for r in rows)[len(rows) // 2]  # noqa: E731
    cmd = "python tests/bench/run.py --only ingest"
    rate_ratio = med(gw, "rate") / med(base, "rate")
    return [
        Row("ingest", f"MQTT QoS 1 drain into the log, fsync mode ({count:,} msgs)", med(gw, "rate"), "msgs/s",
            [r["rate"] for r in gw], cmd, "bare paho subscriber storing nothing", med(base, "rate"), ">= 0.8x",
            rate_ratio >= 0.8),
        Row("ingest", "CPU per message, gateway (MQTT client -> router -> log, fsync)", med(gw, "cpu_us"), "us/msg",
            [r["cpu_us"] for r in gw], cmd, "bare paho subscriber", med(base, "cpu_us")),
        Row("ingest", "Gateway RSS under that load (peak)", med(gw, "rss_mb"), "MB", [r["rss_mb"] for r in gw], cmd,
            target="<= 80 MB", met=med(gw, "rss_mb") <= 80),
    ]


def idle_rss_rows(ctx: BenchContext) -> list[Row]:
    """The example config (one simulated source at 50 readings/s) after it has settled."""
    settle = 3.0 if ctx.quick else 10.0

    def gateway() -> float:
        work = ctx.tempdir("idle-")
        with open(ROOT / "examples/gateway.toml", "rb") as f:
            import tomllib

            cfg = tomllib.load(f)
        cfg["gateway"]["data_dir"] = os.path.join(work, "data")
        cfg["http"]["listen"] = "127.0.0.1:0"
        gw = GatewayProcess(work, cfg)
        gw.start()
        assert gw.proc is not None
        time.sleep(settle)
        rss = _rss_mb(gw.proc.pid)
        gw.stop()
        return rss

    def bare() -> float:
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        time.sleep(1.0)
        rss = _rss_mb(p.pid)
        p.kill()
        p.wait()
        return rss

    runs = max(3, ctx.runs // 2)
    value, values = median_runs(gateway, runs)
    base, _ = median_runs(bare, runs)
    return [Row("ingest", "Idle gateway RSS, example config (examples/gateway.toml)", value, "MB", values,
                "python tests/bench/run.py --only ingest", "a bare Python interpreter", base, "<= 60 MB",
                value <= 60)]


async def _serial_once(baud: int, seconds: float) -> dict[str, float]:
    """`edgestream simulate serial` saturating a pty line into a SerialSource (this process) and a FakeSink."""
    import asyncio
    import json as _json
    import resource

    from edgestream.edge.serial.settings import load_serial_settings
    from edgestream.edge.serial.source import SerialSource
    from edgestream.edge.testing import FakeSink

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    edgestream = str(Path(sys.executable).with_name("edgestream"))
    proc = subprocess.Popen([edgestream, "simulate", "serial", "--rate", "0", "--baud", str(baud), "--duration",
                             str(seconds), "--sensors", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    path = (await asyncio.to_thread(proc.stdout.readline)).strip()
    sink = FakeSink()
    source = SerialSource("bench", load_serial_settings({"port": path, "baudrate": baud}), sink)
    task = asyncio.create_task(source.run())
    while not sink.readings:
        await asyncio.sleep(0.001)
    t0, c0, n0 = time.monotonic(), cpu(), len(sink.readings)
    await asyncio.to_thread(proc.communicate)
    last = -1
    while last != len(sink.readings):  # the simulator is done: let the pty drain
        last = len(sink.readings)
        await asyncio.sleep(0.2)
    t1, c1, n1 = time.monotonic() - 0.2, cpu(), len(sink.readings)
    await source.stop()
    await task
    seqs: dict[str, list[int]] = {}
    sizes = []
    for r in sink.readings:
        body = _json.loads(r.payload)
        seqs.setdefault(body["sensor"], []).append(body["seq"])
        sizes.append(len(r.payload) + 1)
    gaps = sum(b - a - 1 for seq in seqs.values() for a, b in itertools.pairwise(seq))
    frames = n1 - n0
    line_rate = baud / 10 / (sum(sizes) / len(sizes))  # 8N1: 10 bits a byte
    return {"rate": frames / (t1 - t0), "line_rate": line_rate, "lost": gaps, "cpu_us": (c1 - c0) / frames * 1e6}


def serial_rows(ctx: BenchContext) -> list[Row]:
    import asyncio

    seconds = 5.0 if ctx.quick else 20.0
    runs = [asyncio.run(_serial_once(115_200, seconds)) for _ in range(max(1, ctx.runs // 2))]
    med = lambda k: sorted(r[k] for r in runs)[len(runs) // 2]  # noqa: E731
    cmd = "python tests/bench/run.py --only ingest"
    lost = max(r["lost"] for r in runs)
    return [
        Row("ingest", "Serial at 115,200 baud, line saturated (~118 B JSON frames)", med("rate"), "frames/s",
            [r["rate"] for r in runs], cmd, "the line's capacity (baud / 10 / frame bytes)", med("line_rate"),
            "zero frames lost", lost == 0, notes=f"frames lost (sequence gaps) across runs: {lost:.0f}"),
        Row("ingest", "CPU per serial frame (one frame per read at line rate)", med("cpu_us"), "us/frame",
            [r["cpu_us"] for r in runs], cmd),
    ]


def run(ctx: BenchContext) -> list[Row]:
    return mqtt_rows(ctx) + idle_rss_rows(ctx) + serial_rows(ctx)
