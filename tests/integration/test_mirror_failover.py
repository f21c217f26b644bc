"""Three Kafka nodes (replication factor 3, min ISR 2): the leader of a mirrored partition is SIGKILLed mid-stream;
after the election the mirror goes on, and after dedupe Kafka holds exactly what the log accepted."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.gateway import running_gateway
from tests.harness.kafka import KafkaCluster
from tests.harness.procs import wait_until
from tests.integration.test_mirror_kafka import compare, drain_and_stop, mirror_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_partition_leader_killed_mid_stream(kafka3: KafkaCluster, tmp_path: Any) -> None:
    topic = kafka3.new_topic("failover", partitions=2)
    data = str(tmp_path / "data")
    cfg = mirror_config(data, kafka3.wan_bootstrap, topic, rate=800)
    with running_gateway(str(tmp_path), cfg) as gw:
        wait_until(lambda: gw.metric_sum("edgestream_mirror_acked_records_total") >= 1500, timeout=60,
                   what="mirroring to the 3-node cluster")
        leader = kafka3.leader_of(topic, 0)
        acked_before = gw.metric_sum("edgestream_mirror_acked_records_total")
        kafka3.kill_node(leader)
        wait_until(lambda: kafka3.leader_of(topic, 0) not in (-1, leader), timeout=60, interval=0.5,
                   what="a new leader for partition 0")
        wait_until(lambda: gw.metric_sum("edgestream_mirror_acked_records_total") >= acked_before + 3000,
                   timeout=90, interval=0.5, what="mirroring goes on after the election")
        m = gw.metrics()
        drain_and_stop(gw)
    dropped = compare(kafka3, topic, data)
    recreations = m.get('edgestream_mirror_producer_recreations_total{target="central"}')
    print(f"\nleader {leader} killed; producer recreations {recreations}, raw duplicates {dropped}")
