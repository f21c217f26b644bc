"""Real Apache Kafka (KRaft) for tests: one combined broker+controller node (`kafka`) or three (`kafka3`).

The jars come from Maven Central through tests/kafka/fetch-kafka.sh (cached outside git); each node is a JVM
(`kafka.Kafka`, -Xmx512m) on loopback with a temp data dir, formatted by `kafka.tools.StorageTool`. Both
fixtures are session-scoped: a JVM takes seconds to start, and a test run starts each cluster at most once.
Before each test that uses one, the cluster is healed (WAN restored, killed nodes restarted), so tests
share it safely as long as each uses its own topics (`cluster.new_topic()`).

Every node has three listeners:

    DIRECT      127.0.0.1:<port>   for test consumers and admin calls; also the inter-broker listener
    WAN         127.0.0.1:<port>   advertised as the port of a TcpProxy in front of it
    CONTROLLER  127.0.0.1:<port>   KRaft quorum traffic

A client that bootstraps from `cluster.wan_bootstrap` gets only proxy addresses in its metadata, so all its
traffic to every broker crosses a proxy, and `cluster.wan.cut()` / `.restore()` (proxy.py) take its "WAN"
down and up while the brokers and the DIRECT path keep running.

A node that cannot start makes the fixture FAIL (never skip) with the tail of that node's log. Logs stay
in pytest's temp dir: `<basetemp>/kafka1*/node-1/server.log` (see tests/kafka/README.md).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

from .procs import ManagedProcess, ProcessExitedError, free_port, port_open, wait_until
from .proxy import ProxyGroup, TcpProxy

__all__ = [
    "KafkaCluster",
    "KafkaHarnessError",
    "KafkaStartError",
    "ProducerPerfResult",
    "Record",
    "kafka_libs",
    "kcat_consume",
]

# The harness's own clients log here rather than on stderr, where their "connection refused" lines while
# a broker starts would land in the output of whichever test happens to be running.
_client_log = logging.getLogger("tests.harness.kafka")

FETCH_SCRIPT = Path(__file__).resolve().parents[1] / "kafka" / "fetch-kafka.sh"
HOST = "127.0.0.1"
# A JVM plus KRaft start in ~3 s on an idle 2-core machine; other test runs can share those cores.
START_TIMEOUT = 180.0

# Console logging only: the process's stdout is the node's server.log.
_BROKER_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = WARN
# Every internal client dumps its whole config at INFO; server.properties next to the log says the same.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""
# Tools (StorageTool, ProducerPerformance) print their results on stdout; keep log lines off it.
_TOOL_LOG4J = _BROKER_LOG4J.replace("rootLogger.level = INFO", "rootLogger.level = WARN").replace(
    "appender.out.type = Console", "appender.out.type = Console\nappender.out.target = SYSTEM_ERR"
)

_COMMON_CONFIG = {
    "process.roles": "broker,controller",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "DIRECT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,DIRECT:PLAINTEXT,WAN:PLAINTEXT",
    # Tests name the topics they need; a gateway producing to a missing topic must see the error it
    # would see in production, where auto-creation is usually off.
    "auto.create.topics.enable": "false",
    "num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
    # The defaults (50) make the first consumer group or transaction wait for 50 partitions to elect.
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.num.partitions": "4",
    # A SIGKILLed broker keeps its partitions until the controller fences it: 4 s instead of 9 s keeps
    # failover tests short without fencing a broker that is merely slow on a loaded machine.
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "4000",
}


def _replication_config(size: int) -> dict[str, str]:
    """Replication of user and internal topics: everything on every node, acks=all needs two of three."""
    min_isr = str(min(size, 2))
    return {
        "default.replication.factor": str(size),
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": str(size),
        "transaction.state.log.replication.factor": str(size),
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": str(size),
        "share.coordinator.state.topic.min.isr": min_isr,
    }


class KafkaHarnessError(AssertionError):
    """The harness could not do what a test asked (records missing, topic not ready). An AssertionError, so
    pytest reports the test as failed with this message."""


class _Stalled(KafkaHarnessError):
    """A consumer that got no record at all within half its wait."""


class KafkaStartError(KafkaHarnessError):
    """Kafka could not be fetched, formatted or started. The message carries the log tail."""


@cache
def kafka_libs() -> Path:
    """The folder of Kafka jars, fetched on first use (a no-op once the cache is stamped)."""
    for tool in ("java", "bash"):
        if shutil.which(tool) is None:
            raise KafkaStartError(f"'{tool}' not found; run `make system` (Debian openjdk-17-jre-headless)")
    proc = subprocess.run(["bash", str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise KafkaStartError(f"{FETCH_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _classpath(libs: Path) -> str:
    return f"{libs}/*"


def _random_cluster_id() -> str:
    # Kafka's Uuid.toString(): URL-safe base64 of 16 random bytes, no padding; never starting with "-",
    # which the tools' argument parser would read as an option.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int

    def header(self, name: str) -> bytes | None:
        """The value of the first header called `name`; KeyError if there is none."""
        for key, value in self.headers:
            if key == name:
                return value
        raise KeyError(name)


@dataclass(frozen=True)
class ProducerPerfResult:
    """The summary line of org.apache.kafka.tools.ProducerPerformance."""

    records: int
    records_per_sec: float
    mb_per_sec: float
    avg_latency_ms: float
    max_latency_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    output: str


_PERF_SUMMARY = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th"
)


class KafkaNode:
    """One combined broker+controller JVM, its ports, its data dir and the WAN proxy in front of it."""

    def __init__(self, node_id: int, root: Path, libs: Path, jvm_options: Sequence[str]) -> None:
        self.node_id = node_id
        self.dir = root / f"node-{node_id}"
        self.data_dir = self.dir / "data"
        self.config_path = self.dir / "server.properties"
        self.log_path = self.dir / "server.log"
        self.direct_port = free_port()
        self.wan_port = free_port()
        self.controller_port = free_port()
        self.proxy = TcpProxy((HOST, self.wan_port), name=f"wan-{node_id}").start()
        self.process = ManagedProcess(
            [
                "java", *jvm_options, "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}",
                "-cp", _classpath(libs), "kafka.Kafka", str(self.config_path),
            ],
            log_path=self.log_path, name=f"kafka node {node_id}", cwd=self.dir,
        )  # fmt: skip

    @property
    def direct_address(self) -> str:
        return f"{HOST}:{self.direct_port}"

    @property
    def controller_address(self) -> str:
        return f"{HOST}:{self.controller_port}"

    def write_config(self, quorum: Mapping[str, str], extra: Mapping[str, str]) -> None:
        config = {
            **_COMMON_CONFIG,
            "node.id": str(self.node_id),
            "listeners": f"DIRECT://{self.direct_address},WAN://{HOST}:{self.wan_port},"
            f"CONTROLLER://{self.controller_address}",
            "advertised.listeners": f"DIRECT://{self.direct_address},WAN://{self.proxy.address}",
            "log.dirs": str(self.data_dir),
            **quorum,
            **extra,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in config.items()))


class KafkaCluster:
    """`size` combined KRaft nodes on loopback under `root`. `start()` returns once every broker is in the
    metadata; `stop()` kills them all (the data is thrown away with the temp dir)."""

    def __init__(
        self,
        root: Path,
        size: int = 1,
        *,
        heap: str = "512m",
        jvm_options: Sequence[str] = (),
        extra_config: Mapping[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
        libs: Path | None = None,
    ) -> None:
        self.root = root
        self.size = size
        self.jvm_options = [f"-Xmx{heap}", *jvm_options]
        self.extra_config = dict(extra_config or {})
        self.start_timeout = start_timeout
        self._libs = libs
        self.nodes: dict[int, KafkaNode] = {}
        self.wan = ProxyGroup()
        self._admin: AdminClient | None = None
        self._topic_seq = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def libs(self) -> Path:
        if self._libs is None:
            self._libs = kafka_libs()
        return self._libs

    def start(self) -> KafkaCluster:
        """Format and start every node, and wait until all are brokers in the metadata.

        A port that something else took between `free_port()` and the JVM's bind is tried again with new
        ports (twice); any other failure raises KafkaStartError at once.
        """
        for attempt in range(3):
            try:
                return self._start_once()
            except KafkaStartError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self.stop()
                for node in self.nodes.values():
                    shutil.rmtree(node.data_dir, ignore_errors=True)
        raise AssertionError("unreachable")

    def _start_once(self) -> KafkaCluster:
        libs = self.libs
        self.nodes = {}
        self.wan = ProxyGroup()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log4j2.properties").write_text(_BROKER_LOG4J)
        (self.root / "tools-log4j2.properties").write_text(_TOOL_LOG4J)
        for node_id in range(1, self.size + 1):
            node = KafkaNode(node_id, self.root, libs, self.jvm_options)
            self.nodes[node_id] = node
            self.wan.add(node.proxy)
        if self.size == 1:
            # Dynamic quorum (KIP-853), formatted --standalone: what a single-node 4.x install does.
            quorum = {"controller.quorum.bootstrap.servers": self.nodes[1].controller_address}
        else:
            quorum = {
                "controller.quorum.voters": ",".join(
                    f"{n.node_id}@{n.controller_address}" for n in self.nodes.values()
                )
            }
        for node in self.nodes.values():
            node.write_config({**quorum, **_replication_config(self.size)}, self.extra_config)
        self._format(_random_cluster_id())
        for node in self.nodes.values():
            node.process.start()
        self._wait_ready(list(self.nodes))
        return self

    def _format(self, cluster_id: str) -> None:
        def run(node: KafkaNode) -> subprocess.CompletedProcess[str]:
            argv = ["java", f"-Dlog4j2.configurationFile={self.root / 'tools-log4j2.properties'}",
                    "-cp", _classpath(self.libs), "kafka.tools.StorageTool", "format",
                    "-t", cluster_id, "-c", str(node.config_path)]  # fmt: skip
            if self.size == 1:
                argv.append("--standalone")
            return subprocess.run(argv, capture_output=True, text=True, timeout=120)

        with ThreadPoolExecutor(self.size) as pool:
            results = list(pool.map(run, self.nodes.values()))
        for node, proc in zip(self.nodes.values(), results, strict=True):
            (node.dir / "format.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                raise KafkaStartError(
                    f"formatting kafka node {node.node_id} failed ({proc.returncode}); "
                    f"config {node.config_path}:\n{(proc.stdout + proc.stderr)[-4000:]}"
                )

    def _wait_ready(self, node_ids: list[int]) -> None:
        """Until every node runs, accepts connections on its DIRECT listener and is an unfenced broker in the
        metadata. A node that exits meanwhile fails the wait at once, with its log tail."""
        expected = set(self.nodes)

        def ready() -> bool:
            for node_id in node_ids:
                self.nodes[node_id].process.check_running()
            if not all(port_open(HOST, self.nodes[n].direct_port) for n in node_ids):
                return False
            return expected <= self.broker_ids()

        try:
            wait_until(
                ready,
                timeout=self.start_timeout,
                interval=0.25,
                what=f"kafka nodes {node_ids} up under {self.root}",
                ignore=(KafkaException,),
            )
        except ProcessExitedError as exc:
            raise KafkaStartError(str(exc)) from None
        except TimeoutError as exc:
            tails = "\n".join(
                f"--- node {n} ({self.nodes[n].log_path}):\n{self.nodes[n].process.log_tail(25)}"
                for n in node_ids
            )
            raise KafkaStartError(f"{exc}\n{tails}") from None

    def stop(self) -> None:
        for node in self.nodes.values():
            node.process.kill()
        self.wan.stop()
        self._admin = None

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown; its partitions move once the controller fences it."""
        self.nodes[node_id].process.kill()

    def stop_node(self, node_id: int, timeout: float = 60.0) -> None:
        """SIGTERM one node: controlled shutdown, leadership moves away first."""
        self.nodes[node_id].process.terminate(timeout)

    def start_node(self, node_id: int) -> None:
        """Start a stopped node again on the same ports and data dir, and wait until it is back."""
        self.nodes[node_id].process.start()
        self._wait_ready([node_id])

    def heal(self) -> None:
        """Undo what a test may have done to the shared cluster: restore the WAN, restart stopped nodes."""
        self.wan.restore()
        down = [n for n, node in self.nodes.items() if not node.process.running]
        for node_id in down:
            self.nodes[node_id].process.start()
        if down:
            self._wait_ready(down)

    # -- addresses -----------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The DIRECT listeners of all nodes: what test consumers and admin calls use."""
        return ",".join(n.direct_address for n in self.nodes.values())

    @property
    def wan_bootstrap(self) -> str:
        """The WAN proxies of all nodes: what the system under test uses, so `wan.cut()` reaches it."""
        return ",".join(n.proxy.address for n in self.nodes.values())

    # -- admin helpers -------------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        if self._admin is None:
            conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": _client_log}
            # Readiness polls start before the brokers listen; retry within half a second once they do.
            conf["reconnect.backoff.max.ms"] = 500
            self._admin = AdminClient(conf)
        return self._admin

    def broker_ids(self, timeout: float = 2.0) -> set[int]:
        """Unfenced brokers in the metadata, as one of the live nodes sees it."""
        return set(self.admin().list_topics(timeout=timeout).brokers)

    def create_topic(
        self,
        name: str,
        partitions: int = 3,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Create a topic and wait until every partition has a leader. `replication_factor=None` takes the
        cluster default (1, or 3 on `kafka3`)."""
        topic = NewTopic(name, partitions, replication_factor or -1, config=dict(config or {}))
        self.admin().create_topics([topic], operation_timeout=timeout)[name].result(timeout)

        def leaders_elected() -> bool:
            meta = self.admin().list_topics(name, timeout=2.0).topics[name]
            return (
                meta.error is None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            )

        wait_until(
            leaders_elected, timeout=timeout, what=f"leaders of topic {name}", ignore=(KafkaException,)
        )
        return name

    def new_topic(
        self,
        prefix: str = "t",
        partitions: int = 3,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
    ) -> str:
        """Create a topic with a name no other test of this session uses, and return the name."""
        self._topic_seq += 1
        name = f"{prefix}-{self._topic_seq}-{uuid.uuid4().hex[:6]}"
        return self.create_topic(name, partitions, replication_factor, config)

    def partitions(self, topic: str) -> list[int]:
        meta = self.admin().list_topics(topic, timeout=10.0).topics[topic]
        if meta.error is not None:
            raise KafkaHarnessError(f"topic {topic}: {meta.error}")
        return sorted(meta.partitions)

    def end_offsets(self, topic: str, timeout: float = 10.0) -> dict[int, int]:
        """partition -> offset after the last committed record (the LSO, read_committed)."""
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        specs = {TopicPartition(topic, p): latest for p in self.partitions(topic)}
        futures = self.admin().list_offsets(
            specs, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout
        )
        return {tp.partition: f.result(timeout).offset for tp, f in futures.items()}

    def leader_of(self, topic: str, partition: int) -> int:
        """Node id leading `partition` in the metadata now; -1 while there is none."""
        return int(self.admin().list_topics(topic, timeout=10.0).topics[topic].partitions[partition].leader)

    def in_sync_replicas(self, topic: str, partition: int) -> list[int]:
        return list(self.admin().list_topics(topic, timeout=10.0).topics[topic].partitions[partition].isrs)

    def consume_all(self, topic: str, expected: int | None = None, timeout: float = 30.0) -> list[Record]:
        """Every record of `topic`, read from the beginning by an assign-based consumer on the DIRECT path,
        ordered by (partition, offset).

        Without `expected`, stops at the end offsets taken when called. With it, stops as soon as that many
        records arrived (more may follow later; they are not waited for) and fails if fewer arrive in time.
        """
        deadline = time.monotonic() + timeout
        try:
            return self._consume_all(topic, expected, timeout, stall_after=timeout / 2)
        except _Stalled as exc:
            # Seen once in CI on a loaded machine: a consumer that fetched nothing at all for its whole wait while
            # the topic held the records. The data is in Kafka either way; a fresh consumer settles which it was.
            _client_log.warning("%s; trying once more with a new consumer", exc)
            return self._consume_all(topic, expected, max(5.0, deadline - time.monotonic()))

    def _consume_all(self, topic: str, expected: int | None, timeout: float,
                     stall_after: float | None = None) -> list[Record]:
        ends = self.end_offsets(topic)
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": f"harness-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "logger": _client_log,
        }
        consumer = Consumer(conf)
        assignment = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends]
        consumer.assign(assignment)
        records: list[Record] = []

        started = time.monotonic()

        def done() -> bool:
            if stall_after is not None and not records and time.monotonic() - started > stall_after:
                raise _Stalled(f"no record of {topic} in {stall_after:.0f} s")
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error():
                    raise KafkaHarnessError(f"consuming {topic}: {msg.error()}")
                records.append(_record(msg))
            if expected is not None:
                return len(records) >= expected
            positions = {tp.partition: tp.offset for tp in consumer.position(assignment)}
            return all(end == 0 or positions[p] >= end for p, end in ends.items())

        try:
            want = f"{expected} records" if expected is not None else f"end offsets {ends}"
            wait_until(done, timeout=timeout, interval=0, what=f"consuming {want} of {topic}")
        except TimeoutError as exc:
            positions = {tp.partition: tp.offset for tp in consumer.position(assignment)}
            raise KafkaHarnessError(f"{exc}; got {len(records)} records, consumer positions {positions}") from None
        finally:
            consumer.close()
        return sorted(records, key=lambda r: (r.partition, r.offset))

    # -- Kafka's own tools ---------------------------------------------------------------------------

    def producer_perf(
        self,
        topic: str,
        num_records: int,
        record_size: int,
        *,
        throughput: int = -1,
        producer_props: Mapping[str, str] | None = None,
        via_wan: bool = False,
        timeout: float = 600.0,
    ) -> ProducerPerfResult:
        """Run org.apache.kafka.tools.ProducerPerformance (the JVM client) against this cluster."""
        props = {"bootstrap.servers": self.wan_bootstrap if via_wan else self.bootstrap, "acks": "all"}
        props.update(producer_props or {})
        argv = ["java", "-Xmx512m", f"-Dlog4j2.configurationFile={self.root / 'tools-log4j2.properties'}",
                "-cp", _classpath(self.libs), "org.apache.kafka.tools.ProducerPerformance",
                "--topic", topic, "--num-records", str(num_records), "--record-size", str(record_size),
                "--throughput", str(throughput),
                "--producer-props", *(f"{k}={v}" for k, v in props.items())]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        summary = _PERF_SUMMARY.findall(proc.stdout)
        if proc.returncode != 0 or not summary:
            raise KafkaHarnessError(f"ProducerPerformance failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        n, rps, mbps, avg, mx, p50, p95, p99, p999 = summary[-1]
        return ProducerPerfResult(
            int(n), float(rps), float(mbps), float(avg), float(mx),
            float(p50), float(p95), float(p99), float(p999), proc.stdout,
        )  # fmt: skip


def _record(msg: Any) -> Record:
    # Any: confluent_kafka.Message types every field as optional, which only error events use.
    return Record(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
        timestamp_ms=msg.timestamp()[1],
    )


def kcat_consume(bootstrap: str, topic: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every record of `topic` as kcat (Debian, librdkafka) prints it with -J: one dict per record with
    topic, partition, offset, key, payload, headers (a flat [name, value, ...] list) and ts."""
    argv = ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise KafkaHarnessError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


# -- fixtures ----------------------------------------------------------------------------------------


def _start_cluster(
    tmp_path_factory: pytest.TempPathFactory, size: int, jvm_options: Sequence[str] = ()
) -> KafkaCluster:
    cluster = KafkaCluster(tmp_path_factory.mktemp(f"kafka{size}"), size, jvm_options=jvm_options)
    try:
        return cluster.start()
    except KafkaStartError as exc:
        failure = str(exc)
    cluster.stop()
    # Outside the except block, so the report is this message rather than a chained traceback.
    pytest.fail(f"Apache Kafka ({size} node(s)) did not start: {failure}", pytrace=False)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One combined broker+controller node for the whole session."""
    cluster = _start_cluster(tmp_path_factory, 1)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def kafka3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three combined nodes, replication factor 3 and min ISR 2 by default, for failover tests."""
    # C1 only: three JVMs warming up on two cores start in ~6.5 s instead of ~10 s. Failover tests move
    # little data; throughput benchmarks belong on `kafka`, which keeps the full JIT.
    cluster = _start_cluster(tmp_path_factory, 3, jvm_options=["-XX:TieredStopAtLevel=1"])
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def _heal_kafka_around_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give each test that uses a shared cluster a whole one. Nodes a test killed are restarted when the
    next test asks for the cluster, not after the test: a session that never uses it again pays nothing."""
    clusters = [request.getfixturevalue(name) for name in ("kafka", "kafka3") if name in request.fixturenames]
    for cluster in clusters:
        cluster.heal()
    yield
    for cluster in clusters:
        cluster.wan.restore()
