"""The partitions a target mirrors: opening them against the saved cursor (DESIGN 6, step 6), what each knows
about its Kafka destination, copying a poison record to the dead-letter topic, and its status snapshot.

Everything here runs in the target's thread (target.py) and reads the log; nothing here talks to Kafka.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from dataclasses import dataclass, field
from functools import partial

from ...store import CursorPosition, Log
from ...store.errors import OffsetOutOfRangeError, StoreError, TopicNotFoundError
from ...store.partition import Partition
from ..errors import GatewayError
from ..identity import Identity
from .core import MirrorCursor, reconcile
from .errors import DeliveryError
from .settings import TargetSettings, TopicMapping
from .stats import PartitionMeters, PartitionStatus, partition_status

log = logging.getLogger("edgestream.mirror")

_DEAD_LETTER_TIMEOUT_S = 30.0


@dataclass
class MirroredPartition:
    """One mirrored partition: its cursor, the log partition, where it goes, its constant identity headers."""

    cursor: MirrorCursor
    partition: Partition
    mapping: TopicMapping
    kafka_partition: int  # the edge partition (ordered) or -1 (by key)
    const_headers: tuple[tuple[str, bytes], tuple[str, bytes], tuple[str, bytes]]  # edge.gw, edge.log, edge.p
    meters: PartitionMeters = field(default_factory=PartitionMeters)
    blocked: str = ""  # why it waits for its Kafka topic ("" = it does not)
    recheck_at: float = 0.0
    last_ts: int | None = None  # timestamp of the last record produced
    clamps: dict[str, int] = field(default_factory=dict)
    epoch_raise_needed: bool = False
    live: bool = False

    def check_result(self, partitions: int | Exception, now: float, recheck_s: float) -> str:
        """Apply a metadata look-up of the Kafka topic: returns a line to log when the state changed ("" if not)."""
        was = self.blocked
        dest, index = self.mapping.destination, self.cursor.partition
        if isinstance(partitions, Exception):
            self.blocked = str(partitions)
        elif self.mapping.ordered and partitions <= index:
            self.blocked = (f"Kafka topic {dest!r} has {partitions} partitions; edge partition {index} needs at "
                            f"least {index + 1} (partitioning = \"same\")")
        else:
            self.blocked = ""
        self.recheck_at = now + recheck_s
        if self.blocked and self.blocked != was:
            return f"{self.cursor.topic}/{index} waits: {self.blocked}"
        if was and not self.blocked:
            return f"{self.cursor.topic}/{index}: Kafka topic {dest} is there now"
        return ""


def open_partitions(target: TargetSettings, log_: Log, gateway_id: str) -> list[MirroredPartition]:
    """Step 6: load the saved cursor, check every partition against the recovered log (clamp, recreated, deleted,
    rewritten: core.reconcile), report what changed, and persist the result as a required cursor (it protects
    unmirrored records from retention)."""
    name = target.name
    saved = log_.cursors.get(target.cursor_name)
    positions: dict[tuple[str, int], CursorPosition] = {}
    parts = []
    for mapping in target.topics:
        try:
            topic = log_.topic(mapping.topic)
        except TopicNotFoundError:
            raise GatewayError(f"mirror {name}: edge topic {mapping.topic!r} does not exist in the log; add it to "
                               "[[topics]]") from None
        for p in topic.partitions:
            pos = saved.get(topic.name, p.index) if saved else None
            log_id = p.log_id.hex()
            resume = reconcile(pos.offset if pos else None, pos.log_id if pos else "", pos.epoch if pos else 0,
                               log_id=log_id, epoch=p.epoch, log_start=p.log_start, end=p.high_watermark,
                               epoch_at=partial(read_epoch, log_, topic.name, p.index))
            epoch = p.epoch
            if resume.epoch_raise_needed:
                # DESIGN 6, step 6: offsets from the clamp point on were mirrored already and new records will
                # reuse them: raise the epoch (durably, before any of them is written) so their identity differs.
                try:
                    epoch = log_.raise_epoch(topic.name, p.index,
                                             f"mirror {name}: cursor ahead of the recovered log end")
                    resume = dataclasses.replace(resume, epoch_raise_needed=False,
                                                 detail=f"{resume.detail}; epoch raised to {epoch}")
                except StoreError as exc:  # reported (metric + warning); mirroring still never skips
                    log.error("mirror %s: %s/%d: could not raise the epoch: %s", name, topic.name, p.index, exc)
            cursor = MirrorCursor(topic.name, p.index, log_id, epoch, acked=resume.offset)
            ident = Identity(gateway_id, log_id, 0, p.index, 0, 0).headers()
            part = MirroredPartition(cursor, p, mapping, p.index if mapping.ordered else -1,
                                     (ident[0], ident[1], ident[3]))
            if resume.skipped:
                cursor.skipped["deleted"] = resume.skipped
            if resume.action not in ("", "new"):
                part.clamps[resume.action] = 1
                part.epoch_raise_needed = resume.epoch_raise_needed
                log.warning("mirror %s: %s/%d: %s", name, topic.name, p.index, resume.detail)
            elif resume.action == "new":
                log.info("mirror %s: %s/%d: %s", name, topic.name, p.index, resume.detail)
            positions[(topic.name, p.index)] = CursorPosition(resume.offset, log_id, epoch)
            parts.append(part)
    if saved is not None and set(saved.offsets) - set(positions):
        log_.cursors.delete(target.cursor_name)  # topics no longer mirrored must not pin retention forever
    log_.cursors.commit(target.cursor_name, positions, required=True)
    return parts


def read_epoch(log_: Log, topic: str, partition: int, offset: int) -> int | None:
    try:
        recs = log_.read(topic, partition, offset, max_records=1, max_bytes=1)
    except OffsetOutOfRangeError:
        return None
    return recs[0].epoch if recs and recs[0].offset == offset else None


def read_timestamp(log_: Log, topic: str, partition: int, offset: int) -> int | None:
    try:
        recs = log_.read(topic, partition, offset, max_records=1, max_bytes=1)
    except StoreError:
        return None
    return recs[0].timestamp_ms if recs else None


def dead_letter(log_: Log, target: str, dead_letters: dict[str, str], part: MirroredPartition, offset: int,
                err: DeliveryError) -> bool:
    """Copy a poison record to its edge topic's dead-letter topic with Kafka's error in headers; True once that
    copy is durable (or when there is nowhere to copy it: a dead-letter topic's own poison, counted)."""
    c = part.cursor
    dlq = dead_letters.get(c.topic, f"{c.topic}.dlq")
    if dlq not in log_.topic_names():
        c.skipped["poison"] = c.skipped.get("poison", 0) + 1
        log.error("mirror %s: %s/%d@%d refused by Kafka (%s) and there is no dead-letter topic %s: left out of the "
                  "mirror (it stays in the local log; counted as skipped, reason poison)", target, c.topic,
                  c.partition, offset, err, dlq)
        return True
    try:
        rec = log_.read(c.topic, c.partition, offset, max_records=1)[0]
        headers = (*rec.headers,
                   ("edge.mirror.target", target.encode()),
                   ("edge.mirror.error", err.name.encode()),
                   ("edge.mirror.error_code", str(err.code).encode()),
                   ("edge.mirror.error_message", err.detail[:500].encode(errors="replace")),
                   ("edge.src.topic", c.topic.encode()),
                   ("edge.src.p", str(c.partition).encode()),
                   ("edge.src.off", str(offset).encode()),
                   ("edge.src.ep", str(rec.epoch).encode()),
                   ("edge.src.log", c.log_id.encode()))
        log_.append(dlq, 0, rec.value, key=rec.key, headers=headers,
                    timestamp_ms=rec.timestamp_ms).result(_DEAD_LETTER_TIMEOUT_S)
    except (StoreError, OSError, IndexError, concurrent.futures.TimeoutError) as exc:
        log.error("mirror %s: %s/%d@%d failed with %s and could not be dead-lettered to %s (%s); it will be retried",
                  target, c.topic, c.partition, offset, err.name, dlq, exc)
        return False
    log.warning("mirror %s: %s/%d@%d refused by Kafka (%s): copied to %s; the rest keep flowing", target, c.topic,
                c.partition, offset, err, dlq)
    return True


def snapshot(part: MirroredPartition, log_: Log, now: float, now_ms: int) -> PartitionStatus:
    p = part.partition
    return partition_status(
        part.cursor, kafka_topic=part.mapping.destination, kafka_partition=part.kafka_partition,
        priority=part.mapping.priority, log_start=p.log_start, high_watermark=p.high_watermark, segments=p.segments,
        meters=part.meters, now=now, now_ms=now_ms, live=part.live, blocked=part.blocked, clamps=part.clamps,
        epoch_raise_needed=part.epoch_raise_needed,
        read_ts=partial(read_timestamp, log_, part.cursor.topic, part.cursor.partition))
