"""The test harness itself: the TCP proxy against a local echo server, and the real-Kafka fixtures against
confluent-kafka, kcat and Kafka's own ProducerPerformance. Other tests trust these fixtures; these tests are
why they may."""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer

from tests.harness.kafka import KafkaCluster, KafkaStartError, kcat_consume
from tests.harness.procs import wait_until
from tests.harness.proxy import CutMode, TcpProxy

# Bounded windows in which something must NOT happen (a cut link delivers nothing). They cannot be replaced
# by a condition; keep them short.
QUIET_WINDOW = 0.5
PRODUCER_STALL_WINDOW = 1.5


# -- the proxy, on its own ---------------------------------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    proxy = TcpProxy(server.server_address[:2], name="echo").start()  # type: ignore[arg-type]
    yield proxy
    proxy.stop()
    server.shutdown()
    server.server_close()


def _connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    sock.settimeout(5)
    return sock


def _echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _nothing_arrives(sock: socket.socket) -> bool:
    sock.settimeout(QUIET_WINDOW)
    try:
        sock.recv(1)  # data, or an EOF, is something
    except TimeoutError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_proxy_forwards_both_ways_and_counts_bytes(echo_proxy: TcpProxy) -> None:
    with _connect(echo_proxy) as sock:
        assert _echo(sock, b"x" * 200_000) == b"x" * 200_000
    # The echo came back through the proxy, so both directions are counted by now.
    stats = echo_proxy.statistics()
    assert stats.bytes_downstream == 200_000
    assert stats.bytes_upstream == 200_000
    assert stats.connections_accepted == 1
    assert not stats.cut


def test_proxy_reset_cut_breaks_open_connections_and_holds_new_ones_until_restore(
    echo_proxy: TcpProxy,
) -> None:
    old = _connect(echo_proxy)
    assert _echo(old, b"before") == b"before"
    echo_proxy.cut(CutMode.RESET)
    with pytest.raises(ConnectionResetError):
        old.recv(1)
    held = _connect(echo_proxy)  # accepted, but nothing goes through
    held.sendall(b"during")
    assert _nothing_arrives(held)
    echo_proxy.restore()
    assert held.recv(6) == b"during"
    assert echo_proxy.statistics().connections_reset == 1
    old.close()
    held.close()


def test_proxy_refuse_cut_stops_listening_and_restore_reopens_the_same_port(echo_proxy: TcpProxy) -> None:
    port = echo_proxy.port
    old = _connect(echo_proxy)
    assert _echo(old, b"before") == b"before"
    echo_proxy.cut(CutMode.REFUSE)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    with pytest.raises(ConnectionResetError):
        old.recv(1)
    echo_proxy.restore()
    assert echo_proxy.port == port
    with _connect(echo_proxy) as sock:
        assert _echo(sock, b"back") == b"back"
    old.close()


def test_proxy_blackhole_cut_delays_bytes_without_breaking_connections(echo_proxy: TcpProxy) -> None:
    with _connect(echo_proxy) as sock:
        echo_proxy.cut(CutMode.BLACKHOLE)
        sock.sendall(b"late")
        assert _nothing_arrives(sock)
        echo_proxy.restore()
        assert sock.recv(4) == b"late"
    assert echo_proxy.statistics().connections_reset == 0


# -- real Kafka: one node --------------------------------------------------------------------------------


class _Deliveries:
    """Delivery reports of one producer, in the order librdkafka reported them."""

    def __init__(self) -> None:
        self.ok: list[Message] = []
        self.failed: list[KafkaError] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.ok.append(msg)
        else:
            self.failed.append(err)


def _zstd_batches_in_segment(segment: Path) -> list[int]:
    """Compression codec (attributes & 7) of every record batch in a Kafka segment file (v2 batch header:
    baseOffset int64, batchLength int32, leaderEpoch int32, magic int8, crc uint32, attributes int16)."""
    data = segment.read_bytes()
    codecs, pos = [], 0
    while pos + 23 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        if length <= 0:
            break
        (attributes,) = struct.unpack_from(">h", data, pos + 21)
        codecs.append(attributes & 7)
        pos += 12 + length
    return codecs


@pytest.mark.kafka
def test_idempotent_zstd_records_with_headers_read_back_by_consumer_and_kcat(kafka: KafkaCluster) -> None:
    topic = kafka.new_topic("roundtrip", partitions=3)
    deliveries = _Deliveries()
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "zstd",
            "linger.ms": 5,
        }
    )
    n = 300
    for i in range(n):
        value = json.dumps({"seq": i, "sensor": f"s{i % 7}", "reading": [i] * 20}).encode()
        headers: list[tuple[str, str | bytes | None]] = [("seq", str(i).encode()), ("source", b"harness")]
        producer.produce(
            topic, key=f"s{i % 7}".encode(), value=value, headers=headers, on_delivery=deliveries
        )
    assert producer.flush(30) == 0
    assert deliveries.failed == []

    records = kafka.consume_all(topic)
    assert len(records) == n
    assert sum(kafka.end_offsets(topic).values()) == n
    by_seq = {int(r.header("seq") or b""): r for r in records}
    assert sorted(by_seq) == list(range(n))
    for seq, record in by_seq.items():
        assert record.key == f"s{seq % 7}".encode()
        assert json.loads(record.value or b"")["seq"] == seq
        assert record.headers == (("seq", str(seq).encode()), ("source", b"harness"))
    for partition in kafka.partitions(topic):
        in_partition = [r for r in records if r.partition == partition]
        assert [r.offset for r in in_partition] == list(range(len(in_partition)))
        seqs = [int(r.header("seq") or b"") for r in in_partition]
        assert seqs == sorted(seqs), "one key's records keep their produce order"

    # The broker stored what the producer compressed: every batch on disk is zstd (codec 4).
    segment = kafka.nodes[1].data_dir / f"{topic}-0" / "00000000000000000000.log"
    codecs = _zstd_batches_in_segment(segment)
    assert codecs and set(codecs) == {4}

    seen_by_kcat = kcat_consume(kafka.bootstrap, topic)
    assert sorted(
        (m["partition"], m["offset"], m["key"], m["payload"], tuple(m["headers"])) for m in seen_by_kcat
    ) == [
        (
            r.partition,
            r.offset,
            (r.key or b"").decode(),
            (r.value or b"").decode(),
            tuple(x for h in r.headers for x in (h[0], (h[1] or b"").decode())),
        )
        for r in records
    ]


@pytest.mark.kafka
@pytest.mark.parametrize("mode", list(CutMode), ids=lambda m: m.value)
def test_wan_cut_stalls_the_producer_and_restore_delivers_everything(
    kafka: KafkaCluster, mode: CutMode
) -> None:
    topic = kafka.new_topic(f"wan-{mode.value}", partitions=1)
    deliveries = _Deliveries()
    client_errors: list[KafkaError] = []
    producer = Producer(
        {
            "bootstrap.servers": kafka.wan_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120_000,
            # After a refused connect, retry within a second of the restore rather than the default 10 s.
            "reconnect.backoff.max.ms": 1000,
            "error_cb": client_errors.append,
        }
    )
    producer.produce(topic, value=b"0", on_delivery=deliveries)
    assert producer.flush(30) == 0
    assert {b.port for b in producer.list_topics(timeout=10).brokers.values()} == {
        p.port for p in kafka.wan
    }, "the producer knows the brokers only by their proxy addresses"
    sent_before = kafka.wan.statistics().bytes_upstream

    kafka.wan.cut(mode)
    for i in range(1, 51):
        producer.produce(topic, value=str(i).encode(), on_delivery=deliveries)
    assert producer.flush(PRODUCER_STALL_WINDOW) == 50, "nothing is delivered while the WAN is down"
    assert kafka.end_offsets(topic) == {0: 1}, "and nothing reached the broker"
    if mode is not CutMode.BLACKHOLE:
        assert any(e.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN) for e in client_errors)

    kafka.wan.restore()
    assert producer.flush(60) == 0
    assert deliveries.failed == []
    assert [r.value for r in kafka.consume_all(topic)] == [str(i).encode() for i in range(51)]
    assert kafka.wan.statistics().bytes_upstream > sent_before


@pytest.mark.kafka
def test_producer_performance_tool_runs_against_the_cluster(kafka: KafkaCluster) -> None:
    topic = kafka.new_topic("perf", partitions=1)
    result = kafka.producer_perf(topic, num_records=20_000, record_size=100)
    assert result.records == 20_000
    assert result.records_per_sec > 0
    assert kafka.end_offsets(topic) == {0: 20_000}


@pytest.mark.kafka
def test_a_node_that_cannot_start_fails_with_its_log_tail(tmp_path: Path) -> None:
    # A 2 MB heap passes formatting (no -Xmx there) and stops the broker JVM before it runs any Kafka code.
    cluster = KafkaCluster(tmp_path, 1, heap="2m", start_timeout=60)
    try:
        with pytest.raises(KafkaStartError) as failure:
            cluster.start()
    finally:
        cluster.stop()
    message = str(failure.value)
    assert "kafka node 1 exited" in message
    assert str(tmp_path / "node-1" / "server.log") in message
    assert "Error occurred during initialization of VM" in message, "the tail of the JVM's own output"


# -- real Kafka: three nodes -----------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.fault
def test_idempotent_producer_loses_and_duplicates_nothing_when_the_leader_is_killed(
    kafka3: KafkaCluster,
) -> None:
    topic = kafka3.new_topic("failover", partitions=1)
    assert sorted(kafka3.in_sync_replicas(topic, 0)) == [1, 2, 3]
    leader = kafka3.leader_of(topic, 0)
    deliveries = _Deliveries()
    producer = Producer(
        {
            "bootstrap.servers": kafka3.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "batch.num.messages": 50,
            "message.timeout.ms": 120_000,
        }
    )
    n, half = 2000, 1000
    for i in range(half):
        producer.produce(topic, value=str(i).encode(), on_delivery=deliveries)
    # Kill once part of the first half is acknowledged: the rest is in flight or queued.
    wait_until(lambda: producer.poll(0.05) >= 0 and len(deliveries.ok) >= half // 4, timeout=30, what="acks")
    kafka3.kill_node(leader)
    acked_at_kill = len(deliveries.ok)
    for i in range(half, n):
        producer.produce(topic, value=str(i).encode(), on_delivery=deliveries)
    assert producer.flush(90) == 0
    assert deliveries.failed == []
    assert acked_at_kill < n

    new_leader = kafka3.leader_of(topic, 0)
    assert new_leader not in (leader, -1)
    assert [r.value for r in kafka3.consume_all(topic)] == [str(i).encode() for i in range(n)]

    kafka3.start_node(leader)
    wait_until(
        lambda: sorted(kafka3.in_sync_replicas(topic, 0)) == [1, 2, 3],
        timeout=60,
        what=f"node {leader} back in the ISR of {topic}",
    )


@pytest.mark.kafka
def test_every_broker_of_three_is_reached_only_through_its_wan_proxy(kafka3: KafkaCluster) -> None:
    topic = kafka3.new_topic("wan3", partitions=3)
    assert {kafka3.leader_of(topic, p) for p in range(3)} == {1, 2, 3}, "partitions spread over all nodes"
    producer = Producer({"bootstrap.servers": kafka3.wan_bootstrap, "acks": "all"})
    brokers = producer.list_topics(timeout=10).brokers
    assert {b.id: b.port for b in brokers.values()} == {
        n: node.proxy.port for n, node in kafka3.nodes.items()
    }
    before = {n: node.proxy.statistics().bytes_upstream for n, node in kafka3.nodes.items()}
    for p in range(3):
        producer.produce(topic, value=b"x" * 1000, partition=p)
    assert producer.flush(30) == 0
    after = {n: node.proxy.statistics().bytes_upstream for n, node in kafka3.nodes.items()}
    assert all(after[n] - before[n] >= 1000 for n in after), "each leader got its record through its proxy"
