"""Helpers for end-to-end ingestion tests: a numbered MQTT publisher and reading the numbers back from the log."""

from __future__ import annotations

import collections
import os
import subprocess
from typing import Any

from edgestream.edge.simulate.mqtt import sequence_number
from edgestream.store import Log
from tests.cli import EDGESTREAM


def start_publisher(port: int, *, count: int, rate: float, log_path: str, sensors: int = 20,
                    extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """`edgestream simulate mqtt --numbered` as a child process: payloads carry 0..count-1."""
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it
    return subprocess.Popen(
        [EDGESTREAM, "simulate", "mqtt", "--broker", f"127.0.0.1:{port}", "--sensors", str(sensors),
         "--rate", str(rate), "--qos", "1", "--count", str(count), "--numbered", *extra],
        stdout=log, stderr=subprocess.STDOUT,
    )


def numbers_in_log(data_dir: str, topic: str = "telemetry") -> collections.Counter[int]:
    """How often each sequence number is stored in `topic` (read-only: works beside a running gateway)."""
    seen: collections.Counter[int] = collections.Counter()
    if not os.path.isdir(os.path.join(data_dir, "topics", topic)):
        return seen
    with Log.open(data_dir, readonly=True) as log:
        for p in log.topic(topic).partitions:
            off = p.log_start
            while True:
                recs = log.read(topic, p.index, off, max_records=20000, max_bytes=1 << 24)
                if not recs:
                    break
                for r in recs:
                    n = sequence_number(r.value)
                    if n is not None:
                        seen[n] += 1
                off = recs[-1].offset + 1
    return seen


def mqtt_gateway_config(data_dir: str, broker_port: int, **source: Any) -> dict[str, Any]:
    src = {"name": "plant-broker", "type": "mqtt_client", "topic": "telemetry", "key": "{topic_levels[3]}",
           "host": "127.0.0.1", "port": broker_port, "client_id": "gw-e2e", "topics": [{"filter": "factory/#"}],
           "max_inflight": 500, "backoff_min_s": 0.2, "backoff_max_s": 2.0}
    src.update(source)
    return {
        "gateway": {"id": "e2e", "data_dir": data_dir, "shutdown_timeout_s": 20},
        "log": {"min_free_bytes": 1 << 20},
        "http": {"listen": "127.0.0.1:0"},
        "topics": [{"name": "telemetry", "partitions": 4, "decoder": "json", "linger_ms": 2}],
        "sources": [src],
    }
