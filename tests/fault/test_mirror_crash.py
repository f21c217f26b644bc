"""SIGKILL the gateway (real `edgestream run`, simulated sensors) again and again while it mirrors to a real Kafka.

Each round starts the gateway, waits until a random number of further records have been confirmed by Kafka (so
the kill lands mid-stream: records in flight, a cursor write pending, a batch half read), and kills it with
SIGKILL. After the last round a clean run drains the backlog. Then, after dedupe by identity, Kafka must hold
exactly the records the log accepted: nothing lost, nothing extra, in order. The central recipe shipped in
examples/dedupe (the Python consumer and the DuckDB query over a kcat export) must give exactly those records too.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from typing import Any

import pytest

from tests.harness.gateway import GatewayProcess
from tests.harness.kafka import KafkaCluster
from tests.harness.procs import wait_until
from tests.integration.test_mirror_kafka import (
    assert_exactly_the_log,
    dedupe,
    drain_and_stop,
    log_records,
    mirror_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.fault, pytest.mark.slow]

ROUNDS = 12
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "dedupe")


def test_sigkill_while_mirroring_then_dedupe_gives_exactly_the_log(kafka: KafkaCluster, tmp_path: Any) -> None:
    topic = kafka.new_topic("crash", partitions=2)
    data = str(tmp_path / "data")
    # persist often so that kills land between cursor writes too; a WAN path so a cut socket is a real reset
    cfg = mirror_config(data, kafka.wan_bootstrap, topic, rate=1500, persist_interval_s=0.3)
    rng = random.Random(20261128)
    confirmed_before_kill = []
    for _ in range(ROUNDS):
        gw = GatewayProcess(str(tmp_path), cfg).start()
        try:
            start = gw.metric_sum("edgestream_mirror_acked_records_total")
            want = start + rng.randint(100, 2500)
            wait_until(lambda g=gw, w=want: g.metric_sum("edgestream_mirror_acked_records_total") >= w,  # type: ignore[misc]
                       timeout=60, interval=0.02, what="records confirmed before the kill")
            confirmed_before_kill.append(gw.metric_sum("edgestream_mirror_acked_records_total") - start)
        finally:
            gw.kill()  # SIGKILL: no flush, no cursor write, no clean mark
    gw = GatewayProcess(str(tmp_path), cfg).start()
    try:
        assert gw.metric_sum("edgestream_recovery_epoch_bumps_total", topic="telemetry") >= 2
        drain_and_stop(gw)
    finally:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.kill()
    log_recs = log_records(data, "telemetry")
    accepted = sum(len(v) for v in log_recs.values())
    records = kafka.consume_all(topic, timeout=120)
    kept, dropped = dedupe(records)
    assert_exactly_the_log(log_recs, kept)
    epochs = {i.epoch for recs in kept.values() for i, _ in recs}
    print(f"\n{ROUNDS} SIGKILLs; the log accepted {accepted:,} records; Kafka holds {len(records):,}; raw duplicates "
          f"{dropped:,} ({dropped / max(1, accepted):.2%}); epochs seen {sorted(epochs)}; confirmed per round "
          f"{confirmed_before_kill}")
    assert len(epochs) >= 2, "kills raised the epoch: records of several epochs went up"
    expected = {(i.gateway, i.log_id, i.epoch, i.partition, i.offset, k.value.decode()) for recs in kept.values()
                for i, k in recs if k.value is not None}
    assert len(expected) == accepted

    # The shipped recipe, 1: the Python consumer, reading the topic as a central team would.
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, "dedupe_consumer.py"), "--bootstrap",
                          kafka.bootstrap, "--topic", topic, "--until-end"], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    got = {(r["gw"], r["log"], r["ep"], r["p"], r["off"], r["value"]) for r in rows}
    assert len(rows) == accepted and got == expected
    assert f"{dropped} duplicates dropped" in out.stderr

    # 2: DuckDB over a kcat export (JSON lines).
    import duckdb  # the [tier] extra: `make test` installs it
    export = tmp_path / "kafka-export.jsonl"
    with open(export, "w") as f:
        subprocess.run(["kcat", "-C", "-b", kafka.bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q"],
                       stdout=f, check=True, timeout=300)
    con = duckdb.connect()
    con.execute(f"SET VARIABLE kafka_export = '{export}'")
    with open(os.path.join(EXAMPLES, "dedupe.sql")) as f:
        result = con.sql(f.read()).fetchall()
    got_sql = {(gw_, log_, ep, p, off, value) for gw_, log_, ep, p, off, _ts, _key, value in result}
    assert len(result) == accepted and got_sql == expected
