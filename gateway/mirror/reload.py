"""What a config reload (SIGHUP) does to the mirror's targets: the least that applies the new `[mirror]` section.
Pure: `plan()` compares the settings the running targets have with the new section; `Mirror.reload` (mirror.py)
carries the plan out.

    keep     nothing this target uses changed: its thread, producer and cursor are left alone
    live     only settings the target's thread reads at every turn changed (LIVE_FIELDS, the mirror-wide
             MIRROR_LIVE_FIELDS, dead-letter topics): applied between two turns, no reconnect, nothing re-sent
    restart  anything else changed (bootstrap, properties and credentials, topic mappings, in-flight bounds,
             backoff, ...): the target stops the way SIGTERM stops it (in-flight records get `stop_flush_s` to be
             confirmed, the acked prefix is persisted, the producer closed) and a new one goes on from the cursor;
             what was sent but not confirmed is sent again (at least once: the centre drops the copies)
    start    a new or newly enabled target (a new name is a new cursor: it starts at the log start)
    stop     a removed or disabled target, stopped as above

The plan compares with what runs, not with the previous file: a target that failed to start is started again by
the next reload even if the file did not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .settings import MirrorSettings, TargetSettings

# Read from `TargetMirror.settings` at every turn (or, for the cap, moved into the token bucket by `retune`), and
# not part of the producer's configuration: changing them needs no new producer. "priority" stands for topic lists
# that differ only in priorities (`changed_fields`); any other change of `topics` restarts the target.
LIVE_FIELDS = frozenset({"bandwidth_bytes_per_s", "burst_bytes", "live_share", "live_age_s", "batch_records",
                         "batch_bytes", "priority"})
MIRROR_LIVE_FIELDS = ("persist_interval_s", "persist_records", "stop_flush_s")

KEEP, LIVE, RESTART, START, STOP = "keep", "live", "restart", "start", "stop"


@dataclass(frozen=True)
class TargetChange:
    name: str
    action: str  # keep | live | restart | start | stop
    fields: tuple[str, ...] = ()  # the settings that differ (names only: values may be credentials)

    def describe(self) -> str:
        verb = {KEEP: "unchanged", LIVE: "updated live", RESTART: "restarted", START: "started",
                STOP: "stopped"}[self.action]
        return f"{self.name} {verb}" + (f" ({', '.join(self.fields)})" if self.fields else "")


def changed_fields(old: TargetSettings, new: TargetSettings) -> tuple[str, ...]:
    """Names of the settings that differ; topic lists that differ only in priorities say `priority`."""
    out: list[str] = []
    for name in TargetSettings.__struct_fields__:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if name == "topics" and _only_priorities(a, b):
            out.append("priority")
        else:
            out.append(name)
    return tuple(out)


def _only_priorities(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    key = [(m.topic, m.kafka_topic, m.partitioning) for m in a]  # type: ignore[attr-defined]
    return key == [(m.topic, m.kafka_topic, m.partitioning) for m in b]  # type: ignore[attr-defined]


def plan(running: Mapping[str, TargetSettings], old: MirrorSettings, new: MirrorSettings | None, *,
         dead_letters_changed: bool = False) -> list[TargetChange]:
    """One change per running or wanted target: stops first, then the new section's targets in its order.
    `new = None`: the section is gone, every target stops."""
    wanted = {t.name: t for t in new.targets if t.enabled} if new is not None else {}
    changes = [TargetChange(name, STOP) for name in running if name not in wanted]
    if new is None:
        return changes
    mirror_wide = tuple(f for f in MIRROR_LIVE_FIELDS if getattr(old, f) != getattr(new, f))
    if dead_letters_changed:
        mirror_wide += ("dead_letter",)
    for name, target in wanted.items():
        current = running.get(name)
        if current is None:
            changes.append(TargetChange(name, START))
            continue
        fields = changed_fields(current, target)
        if any(f not in LIVE_FIELDS for f in fields):
            changes.append(TargetChange(name, RESTART, fields))
        elif fields or mirror_wide:
            changes.append(TargetChange(name, LIVE, fields + mirror_wide))
        else:
            changes.append(TargetChange(name, KEEP))
    return changes


@dataclass(frozen=True)
class MirrorReload:
    """What a reload did to the mirror, for the gateway's log line, and what failed (each failure is logged where
    it happened and counted once by the gateway in `edgestream_config_reload_errors_total`)."""

    changes: tuple[TargetChange, ...] = ()
    errors: tuple[str, ...] = ()

    def describe(self) -> str:
        done = [c.describe() for c in self.changes if c.action != KEEP]
        return "mirror " + (", ".join(done) if done else "unchanged")
