"""Errors of the upstream mirror, and what each Kafka error means to the commit protocol.

Every failure the mirror meets is a `MirrorError` (a GatewayError) with a `retriable` attribute. Delivery failures
are `DeliveryError`s whose `kind` decides what the mirror does (DESIGN 6, step 5: an error is "possibly delivered"):

    kind            examples (librdkafka names)                          the mirror
    transient       _MSG_TIMED_OUT, _TRANSPORT, NOT_ENOUGH_REPLICAS      rewind, back off, try again
    poison          MSG_SIZE_TOO_LARGE, INVALID_RECORD, INVALID_MSG      isolate the record; if it fails alone,
                                                                         copy it to the dead-letter topic
    authorization   TOPIC_/CLUSTER_AUTHORIZATION_FAILED                  pause the target, alert, probe slowly
    authentication  _AUTHENTICATION, SASL_AUTHENTICATION_FAILED          the same
    topic           UNKNOWN_TOPIC_OR_PART, _UNKNOWN_PARTITION            hold that topic, re-check its metadata
    purged          _PURGE_QUEUE, _PURGE_INFLIGHT                        ignored: we purged it ourselves
    fatal           _FATAL (idempotence state lost)                      new producer, rewind

The adapter (producer.py) maps confluent-kafka errors to these; nothing else matches on librdkafka names.
"""

from __future__ import annotations

from ..errors import GatewayError

POISON = "poison"
TRANSIENT = "transient"
AUTHORIZATION = "authorization"
AUTHENTICATION = "authentication"
TOPIC = "topic"
PURGED = "purged"
FATAL = "fatal"

# librdkafka error names by what they mean here (names, not numbers: they read well in logs and metrics).
_KINDS: dict[str, str] = {
    "MSG_SIZE_TOO_LARGE": POISON,
    "INVALID_RECORD": POISON,
    "INVALID_MSG": POISON,
    "INVALID_MSG_SIZE": POISON,
    "RECORD_LIST_TOO_LARGE": POISON,
    "INVALID_TIMESTAMP": POISON,
    "POLICY_VIOLATION": POISON,
    "TOPIC_AUTHORIZATION_FAILED": AUTHORIZATION,
    "CLUSTER_AUTHORIZATION_FAILED": AUTHORIZATION,
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED": AUTHORIZATION,
    "_AUTHENTICATION": AUTHENTICATION,
    "SASL_AUTHENTICATION_FAILED": AUTHENTICATION,
    "UNKNOWN_TOPIC_OR_PART": TOPIC,
    "_UNKNOWN_TOPIC": TOPIC,
    "_UNKNOWN_PARTITION": TOPIC,
    "UNKNOWN_TOPIC_ID": TOPIC,
    "_PURGE_QUEUE": PURGED,
    "_PURGE_INFLIGHT": PURGED,
    "_FATAL": FATAL,
    "_GAPLESS_GUARANTEE": FATAL,
    "_FENCED": FATAL,
    "OUT_OF_ORDER_SEQUENCE_NUMBER": FATAL,
    "UNKNOWN_PRODUCER_ID": FATAL,
    "INVALID_PRODUCER_ID_MAPPING": FATAL,
}


def kind_of(name: str) -> str:
    """What a librdkafka error name means to the mirror; anything unknown is transient (retry, never drop)."""
    return _KINDS.get(name, TRANSIENT)


def reason_label(name: str) -> str:
    """A metric label for an error name: `_MSG_TIMED_OUT` -> `msg_timed_out` (a bounded set: librdkafka's)."""
    return name.lstrip("_").lower() or "unknown"


class MirrorError(GatewayError):
    """Root of the mirror's errors."""


class MirrorUnavailableError(MirrorError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"the upstream mirror needs confluent-kafka: pip install 'edgestream[kafka]' ({detail}); "
                         "or remove the [mirror] section")


class TargetStillStoppingError(MirrorError):
    """A reload asked a target's thread to stop and it has not yet (a stuck flush or close): no second thread may
    run on its cursor, so the replacement waits for the next reload."""

    retriable = True

    def __init__(self, target: str) -> None:
        super().__init__("its previous thread has not stopped yet (one thread per cursor); reload again once it "
                         "has, or restart the service")
        self.target = target


class DeliveryError(MirrorError):
    """One record was not confirmed by Kafka. Treated as "possibly delivered": duplicates are allowed, gaps not."""

    def __init__(self, name: str, message: str, *, code: int = 0, fatal: bool = False) -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.code = code
        self.detail = message
        self.kind = FATAL if fatal and kind_of(name) == TRANSIENT else kind_of(name)
        self.retriable = self.kind in (TRANSIENT, FATAL, PURGED, TOPIC)
        self.index = -1  # for a record refused by produce(): its position in the batch

    @property
    def reason(self) -> str:
        return reason_label(self.name)


class KafkaTopicError(MirrorError):
    """A mapped Kafka topic is missing, has too few partitions, or cannot be described. The topic waits."""

    retriable = True

    def __init__(self, topic: str, problem: str, *, kind: str = TOPIC) -> None:
        super().__init__(f"Kafka topic {topic!r}: {problem}")
        self.topic = topic
        self.problem = problem
        self.kind = kind


class KafkaUnreachableError(MirrorError):
    """No broker answered in time (WAN down, wrong bootstrap): the log keeps everything; try again later."""

    retriable = True


class ResetError(MirrorError):
    """A cursor reset that cannot be done as asked (unknown topic, offset out of range, ...)."""

    def __init__(self, message: str, *, code: str = "invalid_reset") -> None:
        super().__init__(message)
        self.code = code
