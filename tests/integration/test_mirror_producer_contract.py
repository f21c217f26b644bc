"""One contract for the mirror's UpstreamProducer, run against the scripted FakeProducer and against the
confluent-kafka adapter talking to a real Apache Kafka: what the mirror relies on must hold for both."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from edgestream.gateway.mirror.errors import DeliveryError, KafkaTopicError
from edgestream.gateway.mirror.fake import FakeProducer
from edgestream.gateway.mirror.producer import KafkaProducer, UpstreamProducer, producer_config
from edgestream.gateway.mirror.settings import parse
from tests.harness.kafka import KafkaCluster
from tests.harness.procs import wait_until

LIMIT = 16384  # the topic's max.message.bytes


@dataclass
class Impl:
    make: Callable[..., UpstreamProducer]  # make(queue=None, wan=False, client_max=None)
    topic: str
    read_back: Callable[[UpstreamProducer], list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]]]
    cut: Callable[[], None]
    restore: Callable[[], None]


def _fake() -> Impl:
    made: list[FakeProducer] = []

    def make(queue: int | None = None, wan: bool = False, client_max: int | None = None) -> UpstreamProducer:
        p = FakeProducer(topics={"contract": 2}, max_message_bytes=LIMIT, queue_limit=queue or 1_000_000,
                         client_max_bytes=client_max or 10_000_000)
        made.append(p)
        return p

    def read_back(p: Any) -> list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]]:
        return [(part, k, v, h) for (_, part), recs in sorted(p.written.items()) for k, v, h in recs]

    def cut() -> None:
        for p in made:
            p.reachable = False

    def restore() -> None:
        for p in made:
            p.reachable = True

    return Impl(make, "contract", read_back, cut, restore)


def _kafka(cluster: KafkaCluster) -> Impl:
    topic = cluster.new_topic("contract", partitions=2, config={"max.message.bytes": str(LIMIT)})
    settings = parse({"targets": [{"name": "contract", "bootstrap": cluster.bootstrap, "topics": ["x"],
                                   "properties": {"batch.size": "4096"}}]})

    def make(queue: int | None = None, wan: bool = False, client_max: int | None = None) -> UpstreamProducer:
        conf = producer_config(settings.targets[0], "contract-gw")
        if client_max:
            conf["message.max.bytes"] = client_max
        if wan:
            conf["bootstrap.servers"] = cluster.wan_bootstrap
        if queue:
            conf["queue.buffering.max.messages"] = queue
        return KafkaProducer(conf)

    def read_back(p: Any) -> list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]]:
        return [(r.partition, r.key, r.value or b"", [(k, v or b"") for k, v in r.headers])
                for r in cluster.consume_all(topic, timeout=60)]

    return Impl(make, topic, read_back, cluster.wan.cut, cluster.wan.restore)


@pytest.fixture(params=["fake", pytest.param("kafka", marks=pytest.mark.kafka)])
def impl(request: pytest.FixtureRequest) -> Iterator[Impl]:
    if request.param == "fake":
        yield _fake()
    else:
        cluster = request.getfixturevalue("kafka")
        i = _kafka(cluster)
        yield i
        cluster.wan.restore()


def poll_until(p: UpstreamProducer, reports: list[Any], n: int, timeout: float = 60) -> None:
    wait_until(lambda: (p.poll(0.05), len(reports) >= n)[1], timeout=timeout, interval=0, what=f"{n} reports")


def test_records_are_delivered_in_order_with_keys_and_headers(impl: Impl) -> None:
    p = impl.make()
    reports: list[tuple[int, int, Any]] = []
    for part in (0, 1):
        items = [(b"value-%03d" % i, b"key-%d" % (i % 5) if i % 3 else None, [("edge.off", b"%d" % i), ("n", b"x")],
                  1_700_000_000_000 + i, lambda err, msg, i=i, part=part: reports.append((part, i, err)))
                 for i in range(part, 200, 2)]
        assert p.produce(impl.topic, part, items) == 100
    poll_until(p, reports, 200)
    assert all(err is None for _, _, err in reports)
    for part in (0, 1):
        assert [i for pp, i, _ in reports if pp == part] == list(range(part, 200, 2)), "reports in produce order"
    got = impl.read_back(p)
    p.close()
    for part in (0, 1):
        mine = [(k, v, h) for pp, k, v, h in got if pp == part]
        assert [v for _, v, _ in mine] == [b"value-%03d" % i for i in range(part, 200, 2)]
        assert [k for k, _, _ in mine] == [b"key-%d" % (i % 5) if i % 3 else None for i in range(part, 200, 2)]
        assert mine[0][2] == [("edge.off", b"%d" % part), ("n", b"x")]


def test_topic_metadata(impl: Impl) -> None:
    p = impl.make()
    assert p.partitions(impl.topic, 10) == 2
    with pytest.raises(KafkaTopicError, match="does not exist"):
        p.partitions("no-such-topic-here", 10)
    p.close()


def one(value: bytes, sink: list[Any], tag: Any) -> list[Any]:
    return [(value, None, [], 1, lambda err, msg: sink.append((tag, err)))]


def test_a_record_too_large_for_the_topic_is_reported_as_poison_and_the_producer_turns_fatal(impl: Impl) -> None:
    p = impl.make()
    reports: list[tuple[int, Any]] = []
    p.produce(impl.topic, 0, one(b"ok", reports, 0))
    poll_until(p, reports, 1)
    big = os.urandom(LIMIT * 4)  # incompressible: zstd would shrink repeated bytes under the limit
    p.produce(impl.topic, 0, one(big, reports, 1))
    poll_until(p, reports, 2)
    assert reports[0][1] is None
    err = p.describe(reports[1][1])
    assert isinstance(err, DeliveryError) and err.kind == "poison" and err.name == "MSG_SIZE_TOO_LARGE"
    assert any(e.kind == "fatal" for e in p.take_events()), "gapless: a batch that fails for good stops the producer"
    p.close()


def test_a_record_over_the_clients_limit_is_refused_at_once(impl: Impl) -> None:
    p = impl.make(client_max=20_000)
    sink: list[Any] = []
    items = one(b"a", sink, 0) + one(os.urandom(30_000), sink, 1) + one(b"c", sink, 2)
    with pytest.raises(DeliveryError) as exc:
        p.produce(impl.topic, 0, items)
    assert exc.value.kind == "poison" and exc.value.index == 1
    poll_until(p, sink, 1)
    assert sink == [(0, None)], "the record before it was queued and delivered; the one after it was not"
    p.close()


def test_purge_reports_everything_outstanding(impl: Impl) -> None:
    p = impl.make(wan=True)
    assert p.partitions(impl.topic, 10) == 2
    impl.cut()
    reports: list[Any] = []
    for i in range(10):
        p.produce(impl.topic, i % 2, one(b"v%d" % i, reports, i))
    p.poll(0.2)
    assert reports == [], "nothing is confirmed while the WAN is cut"
    p.purge()
    poll_until(p, reports, 10)
    assert {p.describe(e).kind for _, e in reports} == {"purged"}
    impl.restore()
    p.close()


def test_a_full_queue_is_reported_not_blocked(impl: Impl) -> None:
    p = impl.make(queue=5, wan=True)
    impl.cut()
    sink: list[Any] = []
    items = [x for i in range(50) for x in one(b"v%d" % i, sink, i)]
    queued = p.produce(impl.topic, 0, items)
    assert 0 < queued < 50
    assert p.produce(impl.topic, 0, items[queued:]) == 0, "still full: nothing more goes in"
    impl.restore()
    p.purge()
    p.close()
