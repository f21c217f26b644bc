"""Moving a mirror cursor by hand: `edgestream mirror reset`, through the API or offline on the cursor file.

Backwards re-sends (duplicates the centre drops); forwards skips records on purpose (they are never mirrored, and
retention may delete them). Either way the new position is persisted before the answer, and the answer says what
changed: `{"target", "topic", "partition", "from", "to"}` per partition.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...store import CursorPosition, Log
from ...store.cursors import CursorStore
from ...store.errors import StoreError
from ...store.fs import OsFileSystem
from ...store.lock import DataDirLock
from .errors import ResetError

if TYPE_CHECKING:
    from .partitions import MirroredPartition
    from .settings import TargetSettings

log = logging.getLogger("edgestream.mirror")

CURSOR_PREFIX = "mirror."


@dataclass(frozen=True)
class ResetRequest:
    topic: str
    partition: int | None = None  # None: every partition of the topic
    to_offset: int | None = None
    to_time_ms: int | None = None
    target: str | None = None  # None: every target that mirrors the topic

    @classmethod
    def from_json(cls, body: Any) -> ResetRequest:
        if not isinstance(body, dict):
            raise ResetError('the body must be a JSON object: {"topic": "t", "to_offset": 0}')
        topic = body.get("topic")
        if not isinstance(topic, str) or not topic:
            raise ResetError('"topic" is required')
        partition = body.get("partition")
        if partition is not None and (not isinstance(partition, int) or isinstance(partition, bool) or partition < 0):
            raise ResetError('"partition" must be a non-negative integer')
        to_offset = body.get("to_offset")
        to_time = body.get("to_time")
        if (to_offset is None) == (to_time is None):
            raise ResetError('give exactly one of "to_offset" (an offset) and "to_time" (ISO 8601 or epoch ms)')
        if to_offset is not None and (not isinstance(to_offset, int) or isinstance(to_offset, bool) or to_offset < 0):
            raise ResetError('"to_offset" must be a non-negative integer')
        target = body.get("target")
        if target is not None and not isinstance(target, str):
            raise ResetError('"target" must be a string')
        return cls(topic, partition, to_offset, parse_time_ms(to_time) if to_time is not None else None, target)


def parse_time_ms(value: Any) -> int:
    """ISO 8601 (naive means UTC) or milliseconds since the epoch."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ResetError(f"{text!r} is not ISO 8601 (e.g. 2026-11-27T08:00:00Z) nor epoch milliseconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def target_offset(log: Log, topic: str, partition: int, req: ResetRequest) -> int:
    """Where the request puts this partition's cursor; refuses offsets outside what the log holds."""
    p = log.partition(topic, partition)
    if req.to_time_ms is not None:
        return log.offset_for_time(topic, partition, req.to_time_ms)
    assert req.to_offset is not None
    if not p.log_start <= req.to_offset <= p.high_watermark:
        raise ResetError(f"offset {req.to_offset} is outside {topic}/{partition}: the log holds "
                         f"{p.log_start}..{p.high_watermark} (the high watermark means: only new records)",
                         code="offset_out_of_range")
    return req.to_offset


def reset_offline(data_dir: str, req: ResetRequest) -> list[dict[str, Any]]:
    """Reset on the cursor files of a stopped gateway. Takes the data dir's lock, so a running gateway is refused
    (its cursor lives in memory too: reset it through the API)."""
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except FileNotFoundError:
        raise ResetError(f"data dir {data_dir} does not exist") from None
    except StoreError as exc:
        raise ResetError(f"{exc}. The gateway is running: reset through its API (leave out --data-dir)",
                         code="gateway_running") from None
    try:
        with Log.open(data_dir, readonly=True) as log:
            names = [n for n in log.cursors.names() if n.startswith(CURSOR_PREFIX)]
            if req.target is not None:
                names = [n for n in names if n == CURSOR_PREFIX + req.target]
                if not names:
                    raise ResetError(f"no cursor of mirror target {req.target!r} in {data_dir} (it has "
                                     f"{', '.join(n[len(CURSOR_PREFIX):] for n in log.cursors.names()) or 'none'})",
                                     code="unknown_target")
            store = CursorStore(OsFileSystem(), log.data_dir)
            changes: list[dict[str, Any]] = []
            topic = log.topic(req.topic)
            parts = [p.index for p in topic.partitions] if req.partition is None else [req.partition]
            for name in names:
                cur = log.cursors.get(name)
                if cur is None or not any(t == req.topic for t, _ in cur.offsets):
                    continue
                positions = {}
                for index in parts:
                    p = log.partition(req.topic, index)
                    to = target_offset(log, req.topic, index, req)
                    old = cur.get(req.topic, index)
                    positions[(req.topic, index)] = CursorPosition(to, p.log_id.hex(), p.epoch)
                    changes.append({"target": name[len(CURSOR_PREFIX):], "topic": req.topic, "partition": index,
                                    "from": old.offset if old else None, "to": to})
                store.commit(name, positions, required=True)
            if not changes:
                raise ResetError(f"no mirror target in {data_dir} mirrors topic {req.topic!r}", code="not_mirrored")
            return changes
    finally:
        lock.release()


def reset_partitions(log_: Log, target: TargetSettings, parts: Sequence[MirroredPartition],
                     req: ResetRequest) -> list[dict[str, Any]]:
    """Reset in a running target (its thread calls this): persist the new positions first, then move the cursors.
    Records of the old position still in flight are forgotten: if they land in Kafka, the centre's dedupe treats
    them like any other copy."""
    chosen = [p for p in parts if p.cursor.topic == req.topic and
              (req.partition is None or p.cursor.partition == req.partition)]
    if not chosen:
        where = req.topic if req.partition is None else f"{req.topic}/{req.partition}"
        raise ResetError(f"target {target.name} does not mirror {where}", code="not_mirrored")
    moves = [(p, target_offset(log_, req.topic, p.cursor.partition, req)) for p in chosen]
    log_.cursors.commit(target.cursor_name, {
        (p.cursor.topic, p.cursor.partition): CursorPosition(to, p.cursor.log_id, p.partition.epoch)
        for p, to in moves}, required=True)
    changes = []
    for p, to in moves:
        old = p.cursor.acked
        p.cursor.reset(to)
        p.meters.oldest = (-1, None)
        changes.append({"target": target.name, "topic": p.cursor.topic, "partition": p.cursor.partition,
                        "from": old, "to": to})
        log.warning("mirror %s: %s/%d reset by the operator from %d to %d", target.name, p.cursor.topic,
                    p.cursor.partition, old, to)
    return changes
