"""The upstream producer: a small Protocol, and its adapter around confluent-kafka's `Producer`.

The mirror talks to Kafka only through `UpstreamProducer` (the scripted `FakeProducer` in fake.py implements it for
unit tests; tests/unit/test_mirror_producer_contract.py runs one contract against both). Delivery reports come
back through the per-record `on_delivery(error, message)` callable, run by `poll()` on the caller's thread;
`error` is None on success, else something `describe()` maps to a DeliveryError. The callable is bound to the
record's offset by the caller (the delivery report carries no headers, so nothing else tells which record it was).

Settings the guarantee rests on (DESIGN 6), set here and refused in `properties`:
- `enable.idempotence` (acks=all, at most 5 requests in flight, retries without reordering or duplicates inside one
  producer session) and `enable.gapless.guarantee`: a batch that fails for good makes the producer fatal instead of
  letting later batches through. What a producer got written to a partition is therefore always a contiguous run
  of what it was given, so after a rewind the centre's "keep the max (epoch, offset)" drops exactly the copies.
- `message.timeout.ms = 0` (never): librdkafka's own timeout drops queued records and moves on (a gap). The
  mirror's stall timeout (`delivery_timeout_s`) purges the whole producer and rewinds instead, which keeps the run
  contiguous.
- `queue.buffering.max.kbytes` / `.messages` from the in-flight bounds: memory stays bounded through any outage;
  the log is the buffer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .errors import (
    AUTHORIZATION,
    DeliveryError,
    KafkaTopicError,
    KafkaUnreachableError,
    MirrorUnavailableError,
    kind_of,
)
from .settings import KiB, TargetSettings

log = logging.getLogger("edgestream.mirror")

OnDelivery = Callable[[Any, Any], None]
Headers = list[tuple[str, bytes]]


Item = tuple[bytes, "bytes | None", Headers, int, OnDelivery]  # value, key, headers, timestamp ms, on_delivery


class UpstreamProducer(Protocol):
    def produce(self, topic: str, partition: int, items: Sequence[Item]) -> int:
        """Queue records for one partition (-1: the partitioner decides by key), in order. Returns how many were
        queued before the bounded queue filled up (the rest are not queued: produce them later). Raises
        DeliveryError for a record refused at once (e.g. larger than the client's message.max.bytes), with
        `index` set to its position; the ones before it were queued."""

    def poll(self, timeout: float) -> int:
        """Serve delivery reports and error events for up to `timeout` seconds; returns how many were served."""

    def describe(self, error: Any) -> DeliveryError:
        """The DeliveryError for an error object a delivery report carried."""

    def take_events(self) -> list[DeliveryError]:
        """Client-level errors since the last call (broker down, authentication, fatal), oldest first."""

    def partitions(self, topic: str, timeout: float) -> int:
        """How many partitions `topic` has. KafkaTopicError if it is missing or forbidden, KafkaUnreachableError
        if no broker answered."""

    def purge(self) -> None:
        """Drop everything queued or in flight; their reports (errors) come with the next poll."""

    def close(self) -> None:
        """Release the client (after purge: nothing is waited for)."""


def producer_config(target: TargetSettings, gateway_id: str) -> dict[str, Any]:
    """The librdkafka settings of one target (see the module docstring for the ones that carry the guarantee)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": target.bootstrap,
        "client.id": f"edgestream-{gateway_id}-{target.name}"[:200],
        "compression.type": "zstd",  # sensor JSON compresses 5-10x; zstd beats lz4 on ratio at similar CPU
        "socket.keepalive.enable": True,
        "reconnect.backoff.ms": 500,
        "reconnect.backoff.max.ms": 10_000,
    }
    conf.update(target.properties)
    conf.update({
        "enable.idempotence": True,
        "acks": "all",
        "enable.gapless.guarantee": True,
        "message.timeout.ms": 0,
        "linger.ms": target.linger_ms,
        "queue.buffering.max.kbytes": max(1, target.max_in_flight_bytes // KiB),
        # Records are counted by the mirror; the client's own count also holds internal events: leave it room.
        "queue.buffering.max.messages": target.max_in_flight_records + 10_000,
        # Java's default partitioner (murmur2 of the key): partitioning = "key" lands where a JVM producer would.
        "partitioner": "murmur2_random",
    })
    return conf


class _QuietExperimental(logging.Filter):
    """librdkafka warns at every start that enable.gapless.guarantee is experimental: we chose it on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "gapless.guarantee is experimental" not in record.getMessage()


_rdkafka_log = logging.getLogger("edgestream.mirror.rdkafka")
_rdkafka_log.addFilter(_QuietExperimental())


class KafkaProducer:
    """UpstreamProducer over confluent_kafka.Producer. Not thread-safe: one thread produces and polls."""

    def __init__(self, config: dict[str, Any]) -> None:
        try:
            from confluent_kafka import KafkaException, Producer
        except ImportError as exc:  # the [kafka] extra is optional (no armv7 wheels)
            raise MirrorUnavailableError(str(exc)) from None
        self._kafka_exception = KafkaException
        self._events: list[DeliveryError] = []
        self.fatal: DeliveryError | None = None
        conf = dict(config)
        conf["error_cb"] = self._on_error
        conf["logger"] = _rdkafka_log
        try:
            self._p = Producer(conf)
        except KafkaException as exc:
            raise self.describe(exc.args[0]) from None

    def produce(self, topic: str, partition: int, items: Sequence[Item]) -> int:
        produce = self._p.produce  # the hot loop: one C call per record, nothing else
        i = 0
        try:
            for i, (value, key, headers, ts, cb) in enumerate(items):  # noqa: B007 - `i` names a refused record
                # (list is invariant: confluent-kafka's stub wants list[tuple[str, str | bytes | None]])
                produce(topic, value, key, partition, on_delivery=cb, timestamp=ts, headers=headers)  # type: ignore[arg-type]
        except BufferError:
            return i
        except self._kafka_exception as exc:
            err = self.describe(exc.args[0])
            err.index = i
            raise err from None
        return len(items)

    def poll(self, timeout: float) -> int:
        try:
            return int(self._p.poll(timeout))
        except self._kafka_exception as exc:
            # A fatal error (with gapless: a batch failed for good) is raised from poll() once; the delivery
            # reports that say which records failed come with the next polls.
            err = self.describe(exc.args[0])
            self.fatal = err
            self._events.append(err)
            return 0

    def describe(self, error: Any) -> DeliveryError:
        name = error.name() if hasattr(error, "name") else type(error).__name__
        if name == "_FATAL" and self.fatal is not None:
            return DeliveryError("_FATAL", f"producer stopped: {self.fatal}", code=error.code(), fatal=True)
        text = error.str() if hasattr(error, "str") else str(error)
        code = error.code() if hasattr(error, "code") else 0
        fatal = bool(error.fatal()) if hasattr(error, "fatal") else False
        return DeliveryError(name, text, code=code, fatal=fatal)

    def _on_error(self, error: Any) -> None:
        err = self.describe(error)
        if err.kind == "fatal" or getattr(error, "fatal", lambda: False)():
            self.fatal = err
        self._events.append(err)

    def take_events(self) -> list[DeliveryError]:
        events, self._events = self._events, []
        return events

    def partitions(self, topic: str, timeout: float) -> int:
        try:
            md = self._p.list_topics(topic=topic, timeout=timeout)
        except self._kafka_exception as exc:
            raise KafkaUnreachableError(f"no metadata for {topic!r} within {timeout:g} s: {exc.args[0]}") from None
        meta = md.topics.get(topic)
        if meta is None:
            raise KafkaTopicError(topic, "does not exist; create it (auto-creation is usually off)")
        if meta.error is not None:
            name = meta.error.name()
            if kind_of(name) == AUTHORIZATION:
                raise KafkaTopicError(topic, f"not authorized ({name}): grant this gateway's principal Write and "
                                             "Describe on it", kind=AUTHORIZATION)
            if name in ("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC"):
                raise KafkaTopicError(topic, "does not exist; create it (auto-creation is usually off)")
            raise KafkaUnreachableError(f"metadata for {topic!r}: {meta.error.str()}")
        return len(meta.partitions)

    def purge(self) -> None:
        self._p.purge(in_queue=True, in_flight=True, blocking=True)

    def close(self) -> None:
        self.purge()
        self._p.poll(0)
        self._p.close()
