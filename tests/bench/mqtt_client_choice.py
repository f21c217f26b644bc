"""Which MQTT client under the client-mode source: QoS 1 drain throughput and CPU per message.

Each run queues N QoS 1 messages (~100 B JSON telemetry) at a real local Mosquitto for an offline persistent
session (MQTT 3.1.1 clean_session=0), then starts one subscriber in a fresh child process that drains the
queue alone; the child reports messages/s and CPU microseconds per message from its first message to its
last PUBACK (`time.process_time`, all threads). A verifier then reconnects with the same client id: any
message the broker redelivers was not acked (the "redelivered" column must be 0).

Subscribers:
  paho-auto      bare paho 2.x, paho's own thread (loop_start), library auto-ack: the baseline
  paho-manual    bare paho, loop_forever, manual_ack + client.ack() in on_message: the cost of manual ack
  aiomqtt        aiomqtt 2.5 with the manual-ack workaround (client._client.manual_ack_set / .ack)
  thread+loop    paho thread hands batches to an asyncio loop via call_soon_threadsafe; acks from the loop
  adapter-3.1.1  MqttClientSource (paho inside the asyncio loop) with a sink that resolves at once
  adapter-5      the same over MQTT 5 (Receive Maximum = max_inflight)

Usage: python tests/bench/mqtt_client_choice.py [--count 50000] [--runs 3] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

VARIANTS = ["paho-auto", "paho-manual", "aiomqtt", "thread+loop", "adapter-3.1.1", "adapter-5"]
TOPIC = "bench/line1/temperature/s1"
WINDOW = 1000  # broker max_inflight_messages and the adapters' max_inflight


# -- filling the broker's queue: a raw MQTT 3.1.1 publisher (paho's QoS 1 publisher is ~5k msg/s) ----------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


def _str(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def fill(port: int, count: int, payloads: list[bytes]) -> None:
    """Publish `count` QoS 1 messages and return when the broker has PUBACKed every one."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_packet(0x10, _str("MQTT") + bytes([4, 0x02, 0, 60]) + _str(f"filler-{os.getpid()}")))
    assert sock.recv(4)[:2] == b"\x20\x02"
    topic = _str(TOPIC)
    sent = 0
    while sent < count:
        chunk = min(60000, count - sent)  # packet ids are 16 bits: never more than 65535 unacked
        data = b"".join(_packet(0x32, topic + (i + 1).to_bytes(2, "big") + payloads[(sent + i) % len(payloads)])
                        for i in range(chunk))
        writer = threading.Thread(target=sock.sendall, args=(data,))
        writer.start()
        need, buf = 4 * chunk, bytearray()
        while len(buf) < need:
            got = sock.recv(1 << 16)
            if not got:
                raise RuntimeError("broker closed the filler connection")
            buf += got
        writer.join()
        sent += chunk
    sock.sendall(b"\xe0\x00")
    sock.close()


def payloads() -> list[bytes]:
    from edgestream.edge.simulate.telemetry import Sensor

    s = Sensor("line1/temperature-0", "temperature", seed=1)
    out = []
    ts = 1_700_000_000_000
    while len(out) < 1000:
        sample = s.sample(ts)
        ts += 1000
        if sample is not None:
            out.append(sample.to_json())
    return out


def prime(port: int, client_id: str) -> None:
    """Create the persistent session with its subscription, then leave."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe("bench/#", qos=1)
    if not done.wait(10):
        raise RuntimeError("no SUBACK")
    c.disconnect()
    c.loop_stop()


def prime_v5(port: int, client_id: str) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    c.subscribe("bench/#", qos=1)
    if not done.wait(10):
        raise RuntimeError("no SUBACK")
    c.disconnect()
    c.loop_stop()


def redelivered(port: int, client_id: str, v5: bool, wait_s: float = 1.0) -> int:
    """Reconnect with the session and count what the broker still had unacked (auto-ack, then leave)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    n = 0

    def on_message(*_: Any) -> None:
        nonlocal n
        n += 1

    if v5:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0  # and drop the session afterwards
        c.on_message = on_message
        c.connect("127.0.0.1", port, clean_start=False, properties=props)
    else:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.on_message = on_message
        c.connect("127.0.0.1", port)
    c.loop_start()
    time.sleep(wait_s)
    c.disconnect()
    c.loop_stop()
    return n


# -- the subscribers (run in a child process) ---------------------------------------------------------------


class Meter:
    def __init__(self, count: int) -> None:
        self.count = count
        self.n = 0
        self.t0 = self.c0 = 0.0
        self.t1 = self.c1 = 0.0

    def first(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def last(self) -> None:
        self.t1, self.c1 = time.perf_counter(), time.process_time()

    def result(self) -> dict[str, float]:
        wall, cpu = self.t1 - self.t0, self.c1 - self.c0
        return {"msgs": self.n, "wall_s": wall, "cpu_s": cpu, "rate": self.n / wall, "cpu_us": cpu / self.n * 1e6}


def run_paho(port: int, client_id: str, count: int, manual: bool) -> dict[str, float]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    m = Meter(count)
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=manual)
    c.on_connect = lambda cl, *a: cl.subscribe("bench/#", qos=1)

    def on_message(cl: Any, userdata: Any, msg: Any) -> None:
        if m.n == 0:
            m.first()
        m.n += 1
        if manual:
            cl.ack(msg.mid, msg.qos)
        if m.n == count:
            m.last()
            done.set()
            if manual:
                cl.disconnect()

    c.on_message = on_message
    c.connect("127.0.0.1", port)
    if manual:
        c.loop_forever()
    else:
        c.loop_start()
        done.wait(600)
        c.disconnect()
        c.loop_stop()
    return m.result()


async def run_aiomqtt(port: int, client_id: str, count: int) -> dict[str, float]:
    import aiomqtt

    m = Meter(count)
    client = aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False,
                            max_inflight_messages=WINDOW)
    client._client.manual_ack_set(True)  # before connecting: queued session messages must not be auto-acked
    async with client:
        await client.subscribe("bench/#", qos=1)
        async for msg in client.messages:
            if m.n == 0:
                m.first()
            m.n += 1
            client._client.ack(msg.mid, msg.qos)
            if m.n == count:
                await asyncio.sleep(0)  # let the last PUBACK reach the socket
                m.last()
                break
    return m.result()


async def run_thread_loop(port: int, client_id: str, count: int) -> dict[str, float]:
    """paho's thread reads; batches cross into the loop with call_soon_threadsafe; acks from the loop."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    loop = asyncio.get_running_loop()
    m = Meter(count)
    done = loop.create_future()
    batch: list[Any] = []
    lock = threading.Lock()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True)
    c.on_connect = lambda cl, *a: cl.subscribe("bench/#", qos=1)

    def drain() -> None:
        nonlocal batch
        with lock:
            items, batch = batch, []
        for msg in items:
            fut = loop.create_future()  # the sink's "durable" future, resolved at once
            fut.set_result(None)
            if m.n == 0:
                m.first()
            m.n += 1
            c.ack(msg.mid, msg.qos)
        if m.n >= count and not done.done():
            m.last()
            done.set_result(None)

    def on_message(cl: Any, userdata: Any, msg: Any) -> None:
        with lock:
            batch.append(msg)
            first = len(batch) == 1
        if first:
            loop.call_soon_threadsafe(drain)

    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    await done
    c.disconnect()
    c.loop_stop()
    return m.result()


async def run_adapter(port: int, client_id: str, count: int, protocol: str) -> dict[str, float]:
    from edgestream.edge.mqtt.client import MqttClientSettings, MqttClientSource, TopicFilter

    loop = asyncio.get_running_loop()
    m = Meter(count)
    done = loop.create_future()

    class ImmediateSink:
        def submit(self, reading: Any) -> asyncio.Future[None]:
            fut = loop.create_future()
            fut.set_result(None)
            if m.n == 0:
                m.first()
            m.n += 1
            if m.n == count:
                done.set_result(None)
            return fut

        def dead_letter(self, letter: Any) -> asyncio.Future[None]:
            return self.submit(letter)

    settings = MqttClientSettings(client_id=client_id, port=port, protocol=protocol,  # type: ignore[arg-type]
                                  topics=(TopicFilter(filter="bench/#"),), max_inflight=WINDOW)
    src = MqttClientSource("bench", settings, ImmediateSink())
    task = asyncio.ensure_future(src.run())
    await done
    while src.statistics().acked < count:
        await asyncio.sleep(0)
    m.last()
    await src.stop()
    await task
    return m.result()


def child(variant: str, port: int, client_id: str, count: int) -> dict[str, float]:
    if variant == "paho-auto":
        return run_paho(port, client_id, count, manual=False)
    if variant == "paho-manual":
        return run_paho(port, client_id, count, manual=True)
    if variant == "aiomqtt":
        return asyncio.run(run_aiomqtt(port, client_id, count))
    if variant == "thread+loop":
        return asyncio.run(run_thread_loop(port, client_id, count))
    if variant.startswith("adapter-"):
        return asyncio.run(run_adapter(port, client_id, count, variant.removeprefix("adapter-")))
    raise SystemExit(f"unknown variant {variant}")


# -- driver ---------------------------------------------------------------------------------------------------


def machine_line() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mosq = subprocess.run(["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()
    return (f"{model or platform.processor()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{mosq[0] if mosq else 'mosquitto ?'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", type=Path, help="append one JSON line per run here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--client-id", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.port, args.client_id, args.count)))
        return

    from tests.harness.mosquitto import MosquittoBroker

    variants = args.variants.split(",")
    if "aiomqtt" in variants and importlib.util.find_spec("aiomqtt") is None:
        print("# aiomqtt is not installed (pip install 'aiomqtt>=2.5,<3'): its row is left out")
        variants.remove("aiomqtt")
    data = payloads()
    print(f"# {machine_line()}")
    print(f"# QoS 1 drain of {args.count} queued messages (~{sum(map(len, data)) // len(data)} B payload), "
          f"median of {args.runs} runs")
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoBroker(Path(tmp), max_inflight_messages=WINDOW, autosave_interval_s=3600).start()
        try:
            for run in range(args.runs):
                for variant in variants:  # interleaved: a noisy neighbour hurts every variant alike
                    cid = f"bench-{variant}-{run}-{os.getpid()}"
                    v5 = variant == "adapter-5"
                    (prime_v5 if v5 else prime)(broker.port, cid)
                    fill(broker.port, args.count, data)
                    proc = subprocess.run(
                        [sys.executable, __file__, "--child", variant, "--port", str(broker.port),
                         "--client-id", cid, "--count", str(args.count)],
                        capture_output=True, text=True, timeout=900)
                    if proc.returncode != 0:
                        raise SystemExit(f"{variant} failed:\n{proc.stderr}")
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                    row["redelivered"] = redelivered(broker.port, cid, v5)
                    row.update(variant=variant, run=run, count=args.count)
                    results[variant].append(row)
                    print(f"  run {run} {variant:14s} {row['rate']:9,.0f} msg/s {row['cpu_us']:6.1f} us/msg "
                          f"redelivered {row['redelivered']}", flush=True)
                    if args.json:
                        with args.json.open("a") as f:
                            f.write(json.dumps(row) + "\n")
        finally:
            broker.stop()
    base = statistics.median(r["rate"] for r in results[variants[0]])
    print(f"\n| subscriber | msgs/s (median, min..max) | CPU us/msg | vs {variants[0]} | redelivered |")
    print("|---|---|---|---|---|")
    for v in variants:
        rates = [r["rate"] for r in results[v]]
        cpu = statistics.median(r["cpu_us"] for r in results[v])
        print(f"| {v} | {statistics.median(rates):,.0f} ({min(rates):,.0f}..{max(rates):,.0f}) | {cpu:.0f} | "
              f"{statistics.median(rates) / base:.2f}x | {sum(r['redelivered'] for r in results[v])} |")


if __name__ == "__main__":
    main()
