"""FakeProducer: a scripted UpstreamProducer for unit tests (the same Protocol as the confluent-kafka adapter).

It keeps what it "wrote" per (topic, partition) in `written`, and serves delivery reports on `poll()`:

    fake = FakeProducer(topics={"t": 2}, max_message_bytes=1000)
    fake.script.append(Script(fail=lambda topic, partition, value: partition == 1, error="_MSG_TIMED_OUT"))
    fake.reachable = False            # nothing is delivered; reports wait, like a WAN cut
    fake.reorder = True               # reports of one poll come in reverse order (defensive tests)
    fake.fatal_on_failure = True      # like enable.gapless.guarantee: a failed record fails everything queued

Like librdkafka with `enable.gapless.guarantee`, a failure (scripted, or a record over `max_message_bytes`)
writes nothing after it in that producer when `fatal_on_failure` is set: the later records fail with `_FATAL`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import AUTHORIZATION, DeliveryError, KafkaTopicError, KafkaUnreachableError
from .producer import Headers, Item, OnDelivery


@dataclass(frozen=True)
class FakeError:
    name: str
    message: str = ""


@dataclass
class Script:
    """Fail the records `fail` matches (`times` in all; None: always) with `error`. `persisted`: the record is
    written all the same and only its acknowledgement is lost (librdkafka's "possibly persisted")."""

    fail: Callable[[str, int, bytes], bool]
    error: str = "_MSG_TIMED_OUT"
    times: int | None = 1
    persisted: bool = False


@dataclass
class _Pending:
    topic: str
    partition: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int
    on_delivery: OnDelivery
    error: FakeError | None = None


@dataclass
class FakeProducer:
    topics: dict[str, int] = field(default_factory=dict)  # topic -> partitions; unknown topics are "missing"
    forbidden: set[str] = field(default_factory=set)  # topics that answer TOPIC_AUTHORIZATION_FAILED
    max_message_bytes: int = 1_000_000  # per record, like a broker's message.max.bytes
    client_max_bytes: int = 10_000_000  # refused at produce() already, like librdkafka's message.max.bytes
    queue_limit: int = 1_000_000
    reachable: bool = True
    reorder: bool = False
    fatal_on_failure: bool = True
    deliver_per_poll: int | None = None  # None: everything pending
    script: list[Script] = field(default_factory=list)
    written: dict[tuple[str, int], list[tuple[bytes | None, bytes, Headers]]] = field(default_factory=dict)
    events: list[DeliveryError] = field(default_factory=list)
    closed: bool = False
    produced: int = 0
    _pending: list[_Pending] = field(default_factory=list)
    _fatal: bool = False

    def produce(self, topic: str, partition: int, items: Sequence[Item]) -> int:
        if self.closed:
            raise RuntimeError("produce on a closed FakeProducer")
        for i, (value, key, headers, timestamp_ms, on_delivery) in enumerate(items):
            size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
            if size > self.client_max_bytes:
                err = DeliveryError("MSG_SIZE_TOO_LARGE", f"{size} bytes is over message.max.bytes")
                err.index = i
                raise err
            if len(self._pending) >= self.queue_limit:
                return i
            p = partition
            if p < 0:
                count = self.topics.get(topic, 1)
                p = (sum(key) if key else self.produced) % count
            self.produced += 1
            self._pending.append(_Pending(topic, p, key, value, list(headers), timestamp_ms, on_delivery))
        return len(items)

    def poll(self, timeout: float = 0.0) -> int:
        if not self.reachable and not self._fatal:
            return 0
        n = len(self._pending) if self.deliver_per_poll is None else min(self.deliver_per_poll, len(self._pending))
        batch, self._pending = self._pending[:n], self._pending[n:]
        results: list[tuple[_Pending, FakeError | None]] = []
        for rec in batch:
            results.append((rec, self._outcome(rec)))
        if self.reorder:
            results.reverse()
        for rec, err in results:
            rec.on_delivery(err, rec)
        return len(results)

    def _outcome(self, rec: _Pending) -> FakeError | None:
        if rec.error is not None:
            return rec.error
        if self._fatal:
            return FakeError("_FATAL", "producer is fatal (gapless guarantee)")
        err: FakeError | None = None
        write_anyway = False
        if rec.topic in self.forbidden:
            err = FakeError("TOPIC_AUTHORIZATION_FAILED", "Topic authorization failed")
        elif rec.topic not in self.topics:
            err = FakeError("UNKNOWN_TOPIC_OR_PART", "unknown topic")
        elif rec.partition >= self.topics[rec.topic]:
            err = FakeError("_UNKNOWN_PARTITION", "unknown partition")
        elif len(rec.value) + len(rec.key or b"") > self.max_message_bytes:  # (a broker compares compressed size)
            err = FakeError("MSG_SIZE_TOO_LARGE", "Broker: Message size too large")
        else:
            for s in self.script:
                if s.times != 0 and s.fail(rec.topic, rec.partition, rec.value):
                    if s.times is not None:
                        s.times -= 1
                    err = FakeError(s.error, "scripted")
                    write_anyway = s.persisted
                    break
        if err is not None:
            if write_anyway:
                self.written.setdefault((rec.topic, rec.partition), []).append((rec.key, rec.value, rec.headers))
            if self.fatal_on_failure and err.name != "_MSG_TIMED_OUT":
                self._fatal = True
                self.events.append(DeliveryError("_FATAL", f"gapless guarantee after {err.name}", fatal=True))
            return err
        self.written.setdefault((rec.topic, rec.partition), []).append((rec.key, rec.value, rec.headers))
        return None

    def describe(self, error: Any) -> DeliveryError:
        return DeliveryError(error.name, error.message, fatal=error.name == "_FATAL")

    def take_events(self) -> list[DeliveryError]:
        events, self.events = self.events, []
        return events

    def partitions(self, topic: str, timeout: float) -> int:
        if not self.reachable:
            raise KafkaUnreachableError("fake broker unreachable")
        if topic in self.forbidden:
            raise KafkaTopicError(topic, "not authorized", kind=AUTHORIZATION)
        if topic not in self.topics:
            raise KafkaTopicError(topic, "does not exist")
        return self.topics[topic]

    def purge(self) -> None:
        for rec in self._pending:
            rec.error = FakeError("_PURGE_QUEUE", "purged")
        self._serve_all()

    def _serve_all(self) -> None:
        pending, self._pending = self._pending, []
        for rec in pending:
            rec.on_delivery(rec.error or FakeError("_PURGE_QUEUE", "purged"), rec)

    def close(self) -> None:
        self.purge()
        self.closed = True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def values(self, topic: str, partition: int) -> list[bytes]:
        return [v for _, v, _ in self.written.get((topic, partition), [])]


class FakeCluster:
    """Makes FakeProducers that share one "broker" (what was written survives producer restarts)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.written: dict[tuple[str, int], list[tuple[bytes | None, bytes, Headers]]] = {}
        self.producers: list[FakeProducer] = []
        self.reachable = True

    def __call__(self) -> FakeProducer:
        p = FakeProducer(**self.settings)
        p.written = self.written
        p.reachable = self.reachable
        self.producers.append(p)
        return p

    @property
    def current(self) -> FakeProducer:
        return self.producers[-1]

    def set_reachable(self, up: bool) -> None:
        self.reachable = up
        for p in self.producers:
            p.reachable = up

    def values(self, topic: str, partition: int) -> list[bytes]:
        return [v for _, v, _ in self.written.get((topic, partition), [])]
