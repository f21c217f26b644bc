"""`make demo`: edgestream on this machine, with simulated sensors and no hardware.

1. The log's promise: a producer streams readings, is killed with SIGKILL mid-stream, and every reading it was
   told is durable is read back after recovery.
2. The gateway: Mosquitto (persistence on) with simulated MQTT sensors, edgestream's own MQTT listener, a serial
   device and a Modbus RTU unit on pseudo-terminals, all into the log, mirrored to a local Apache Kafka and tiered
   to Parquet; a live one-screen summary, the mirror's lag and a kcat read of what arrived upstream, a clean stop,
   the last records of each topic, and a few SQL queries over the history.

Environment: DEMO_SECONDS (default 60) sets how long the live part runs; DEMO_DIR keeps the data somewhere else;
KAFKA_BOOTSTRAP uses that Kafka instead of starting one (the demo creates its topics there).
Everything runs on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.harness.gateway import GatewayProcess, render_config  # noqa: E402
from tests.harness.procs import free_port  # noqa: E402

BIN = os.path.join(os.path.dirname(sys.executable), "edgestream")
BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = RESET = ""


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def cli(*args: str, data_dir: str, input: bytes | None = None) -> str:
    p = subprocess.run([BIN, "--data-dir", data_dir, *args], input=input, capture_output=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"edgestream {' '.join(args)} failed: {p.stderr.decode()}")
    return p.stdout.decode()


# -- part 1: kill -9 a producer, recover, count ---------------------------------------------------------------------


def crash_demo(work: str) -> None:
    data = os.path.join(work, "crash-demo")
    say("1. Durability: SIGKILL a producer mid-stream, recover, check every acknowledged record")
    print(cli("topics", "create", "readings", "--partitions", "2", "--durability", "fsync", data_dir=data), end="")
    rng = random.Random(7)
    lines = [json.dumps({"sensor": f"line{i % 4 + 1}/temp-{i % 37}", "seq": i,
                         "value": round(40 + rng.gauss(0, 2), 2)}).encode() + b"\n" for i in range(400_000)]
    proc = subprocess.Popen([BIN, "--data-dir", data, "produce", "readings", "--report-offsets"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    acked: list[bytes] = []

    def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            for i in range(0, len(lines), 500):
                proc.stdin.write(b"".join(lines[i : i + 500]))
                proc.stdin.flush()

    def read() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(1 << 16):
            acked.append(chunk)

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=read, daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while sum(c.count(b"\n") for c in acked) < 20_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.05, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for t in threads:
        t.join(5)
    text = b"".join(acked).decode()
    text = text[: text.rfind("\n") + 1]
    reported = [tuple(map(int, ln.split())) for ln in text.splitlines()]
    print(f"producer killed with SIGKILL after {len(reported):,} records were reported durable")
    out = cli("check", "--repair", data_dir=data)
    print(DIM + "\n".join(out.splitlines()[:6]) + RESET)
    stored: dict[tuple[int, int], bytes] = {}
    for part in (0, 1):
        for ln in cli("consume", "readings", "--partition", str(part), "--format", "jsonl", data_dir=data).splitlines():
            rec = json.loads(ln)
            stored[(rec["partition"], rec["offset"])] = rec["value"].encode()
    missing = sum(1 for k, (p, o) in enumerate(reported) if stored.get((p, o)) != lines[k].rstrip(b"\n"))
    color = GREEN if missing == 0 else RED
    print(f"{color}{len(reported):,} acknowledged, {len(reported) - missing:,} read back intact, "
          f"{missing} lost{RESET} ({len(stored):,} stored in all: records written but not yet acknowledged when "
          "the kill came may be there too)")


# -- part 2: the gateway -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def background(cmd: list[str], log_path: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as log:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def device_path(p: subprocess.Popen[bytes], what: str) -> str:
    assert p.stdout is not None
    line = p.stdout.readline().decode().strip()
    if not line.startswith("/dev/"):
        raise SystemExit(f"the {what} simulator did not print its device path (got {line!r})")
    return line


def gateway_demo(work: str, seconds: float) -> None:
    say("2. The gateway: MQTT sensors, a serial device and a Modbus unit into the log")
    from tests.harness.mosquitto import MosquittoBroker

    data = os.path.join(work, "gateway-data")
    broker = MosquittoBroker(os.path.join(work, "mosquitto"))
    broker.start()
    print(f"Mosquitto on 127.0.0.1:{broker.port} (persistence on, queue limits raised: see README)")
    kafka, bootstrap = start_kafka(work)
    listener_port = free_port()
    stack = contextlib.ExitStack()
    try:
        serial = stack.enter_context(background([BIN, "simulate", "serial", "--rate", "20", "--malformed-rate",
                                                 "0.02"], os.path.join(work, "serial-sim.log")))
        serial_dev = device_path(serial, "serial")
        modbus = stack.enter_context(background([BIN, "simulate", "modbus", "--units", "1,2"],
                                                os.path.join(work, "modbus-sim.log")))
        modbus_dev = device_path(modbus, "modbus")
        print(f"serial device on {serial_dev}, Modbus RTU unit(s) 1,2 on {modbus_dev}")
        sections = demo_config(data, broker.port, listener_port, serial_dev, modbus_dev)
        from edgestream.gateway.mirror import render_mirror_section

        sections["mirror"] = render_mirror_section(bootstrap, [t["name"] for t in sections["topics"]])
        sections["tier"] = {"enabled": True, "interval_s": 5}
        gw = GatewayProcess(work, sections)
        with open(os.path.join(work, "gateway.toml"), "w") as f:
            f.write(render_config(sections))
        gw.start()
        stack.callback(lambda: gw.kill() if gw.proc and gw.proc.poll() is None else None)
        print(f"gateway running: config {gw.config_path}, HTTP and /metrics on 127.0.0.1:{gw.port}")
        stack.enter_context(background([BIN, "simulate", "mqtt", "--broker", f"127.0.0.1:{broker.port}",
                                        "--sensors", "30", "--rate", "150", "--qos", "1",
                                        "--malformed-rate", "0.01"], os.path.join(work, "mqtt-sim.log")))
        stack.enter_context(background([BIN, "simulate", "mqtt", "--broker", f"127.0.0.1:{listener_port}",
                                        "--sensors", "5", "--rate", "20", "--qos", "1",
                                        "--topic-prefix", "direct"], os.path.join(work, "mqtt-direct-sim.log")))
        live_summary(gw, seconds)
        show_upstream(gw, bootstrap)
        say("Stopping the gateway with SIGTERM (stop reading, flush, ack, mark clean)")
        code = gw.stop()
        print(f"exit code {code}; last lines of its log:")
        print(DIM + "".join(gw.log_text().splitlines(keepends=True)[-3:]) + RESET, end="")
    finally:
        stack.close()
        broker.stop()
        if kafka is not None:
            kafka.stop()
    say("The last records of each topic")
    for topic in json.loads(cli("topics", "list", "--json", data_dir=data)):
        print(f"{BOLD}{topic['topic']}{RESET}: {topic['records']:,} records, {topic['bytes']:,} bytes on disk")
        for part in range(topic["partitions"]):
            out = cli("consume", topic["topic"], "--partition", str(part), "--format", "jsonl", data_dir=data)
            for ln in out.splitlines()[-2:]:
                rec = json.loads(ln)
                value = rec.get("value") if rec.get("value") is not None else f"<{rec.get('value_b64')}>"
                print(f"  {topic['topic']}/{rec['partition']}@{rec['offset']} {rec['timestamp']} "
                      f"key={rec.get('key')} {str(value)[:90]}")


def start_kafka(work: str) -> tuple[object | None, str]:
    """A local single-node Apache Kafka (KRaft) from the test harness, or $KAFKA_BOOTSTRAP; topics created."""
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "")
    cluster = None
    if not bootstrap:
        from pathlib import Path

        from tests.harness.kafka import KafkaCluster

        print("starting a local Apache Kafka (KRaft, one node; tens of seconds on a small machine)...", flush=True)
        cluster = KafkaCluster(Path(work) / "kafka").start()
        bootstrap = cluster.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = [NewTopic(name, num_partitions=n, replication_factor=1)
              for name, n in (("telemetry", 4), ("serial", 1), ("modbus", 1))]
    for name, fut in admin.create_topics(wanted).items():
        try:
            fut.result(30)
        except Exception as exc:  # already there (a reused KAFKA_BOOTSTRAP): fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise SystemExit(f"cannot create Kafka topic {name}: {exc}") from None
    print(f"Apache Kafka at {bootstrap}: the gateway mirrors telemetry, serial and modbus there")
    return cluster, bootstrap


def show_upstream(gw: GatewayProcess, bootstrap: str) -> None:
    from edgestream.gateway.mirror import lag_lines

    say("Upstream: the mirror's lag, and what arrived in Kafka (kcat)")
    status, body = gw.get("/v1/mirror/status")
    if status == 200:
        print("\n".join(lag_lines(json.loads(body))))
    fmt = "%t/%p@%o key=%k %s\n"
    for topic in ("telemetry", "modbus"):
        cmd = ["kcat", "-C", "-b", bootstrap, "-t", topic, "-p", "0", "-o", "-2", "-c", "2", "-q", "-f", fmt]
        print(f"{DIM}$ {' '.join(cmd[:-2])} -f '{fmt.strip()}'{RESET}")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            print("  (kcat got nothing within 30 s)")
            continue
        for line in p.stdout.strip().splitlines():
            print("  " + line[:160])


def show_queries(data: str) -> None:
    from edgestream.store.tier.recipes import demo_queries

    say("Query your history: SQL over the Parquet tier and the hot log together (DuckDB)")
    for title, sql in demo_queries("telemetry"):
        print(f"{BOLD}{title}{RESET}\n{DIM}{' '.join(sql.split())[:200]}{RESET}")
        p = subprocess.run([BIN, "--data-dir", data, "query", sql], capture_output=True, text=True, check=False)
        print(p.stdout if p.returncode == 0 else f"{RED}{p.stderr.strip()}{RESET}")


def demo_config(data: str, broker_port: int, listener_port: int, serial_dev: str, modbus_dev: str) -> dict:
    from edgestream.edge.simulate.modbus import poller_units

    return {
        "gateway": {"id": "demo-gw", "data_dir": data, "shutdown_timeout_s": 20},
        "log": {"min_free_bytes": 64 << 20},
        "http": {"listen": "127.0.0.1:0"},
        "topics": [
            # Small segments so the demo's minute already seals some and tiers them to Parquet.
            {"name": "telemetry", "partitions": 4, "decoder": "json", "durability": "fsync",
             "segment_bytes": 65536},
            {"name": "serial", "partitions": 1, "decoder": "json"},
            {"name": "modbus", "partitions": 1, "decoder": "modbus"},
        ],
        "sources": [
            {"name": "plant-broker", "type": "mqtt_client", "topic": "telemetry", "key": "{topic_levels[1]}",
             "host": "127.0.0.1", "port": broker_port, "client_id": "edgestream-demo",
             "topics": [{"filter": "factory/#"}]},
            {"name": "sensor-listener", "type": "mqtt_listener", "topic": "telemetry", "key": "{client_id}",
             "host": "127.0.0.1", "port": listener_port, "allow_anonymous": True},
            {"name": "line-scale", "type": "serial", "topic": "serial", "key": "{port}", "port": serial_dev,
             "baudrate": 115200, "reply": "ACK {seq}\n"},
            # A pty cannot do parity; a real RS-485 line would keep Modbus's default 8E1.
            {"name": "plc", "type": "modbus", "topic": "modbus", "key": "{unit}", "port": modbus_dev,
             "parity": "N", "baudrate": 115200, "poll_interval_s": 1.0, "units": poller_units([1, 2])},
        ],
    }


def live_summary(gw: GatewayProcess, seconds: float) -> None:
    say(f"Live summary for {seconds:.0f} s (Ctrl-C to skip ahead)")
    start = time.monotonic()
    prev: dict[str, float] = {}
    prev_t = start
    tty = sys.stdout.isatty()
    try:
        while time.monotonic() - start < seconds:
            time.sleep(1.0 if tty else 5.0)
            m = gw.metrics()
            now = time.monotonic()
            lines = [f"{BOLD}edgestream demo{RESET} - {now - start:4.0f} s of {seconds:.0f} s"]
            for name in sorted(k for k in m if k.startswith("edgestream_records_in_total{")):
                rate = (m[name] - prev.get(name, 0.0)) / (now - prev_t)
                label = name[name.index("{"):]
                lines.append(f"  in   {label:60s} {m[name]:>9,.0f} total {rate:>8,.1f}/s")
            errs = {k: v for k, v in m.items() if v and (k.startswith("edgestream_decode_errors_total")
                                                           or k.startswith("edgestream_dead_letters_total")
                                                           or k.startswith("edgestream_dropped_records_total"))}
            for k, v in sorted(errs.items()):
                lines.append(f"  err  {k:65s} {v:>9,.0f}")
            lag = sum(v for k, v in m.items() if k.startswith("edgestream_mirror_lag_records{"))
            tiered = sum(v for k, v in m.items() if k.startswith("edgestream_tier_rows_total{"))
            lines.append(f"  up   mirror lag {lag:,.0f} records; {tiered:,.0f} rows tiered to Parquet")
            size = sum(v for k, v in m.items() if k.startswith("edgestream_log_size_bytes{"))
            fsyncs = sum(v for k, v in m.items() if k.startswith("edgestream_log_fsyncs_total{"))
            free_gib = m.get("edgestream_disk_free_bytes", 0) / 2**30
            rss_mib = m.get("process_resident_memory_bytes", 0) / 2**20
            lines.append(f"  disk {size / 1024:,.0f} KiB in the log, {free_gib:.1f} GiB free, {fsyncs:,.0f} fsyncs, "
                         f"RSS {rss_mib:.0f} MiB")
            if tty:
                print("\033[2J\033[H" + "\n".join(lines), flush=True)
            else:
                print("\n".join(lines), flush=True)
            prev, prev_t = m, now
    except KeyboardInterrupt:
        pass


def main() -> int:
    seconds = float(os.environ.get("DEMO_SECONDS", "60"))
    keep = os.environ.get("DEMO_DIR")
    work = keep or tempfile.mkdtemp(prefix="edgestream-demo-")
    if keep:
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
    print(f"edgestream demo, working in {work}")
    crash_demo(work)
    gateway_demo(work, seconds)
    show_queries(os.path.join(work, "gateway-data"))
    say("Done")
    print(f"Data and logs are in {work}. Try: {BIN} --data-dir {work}/gateway-data topics list")
    return 0


if __name__ == "__main__":
    sys.exit(main())
