"""A config reload of the mirror: the plan per target (pure), the token bucket's new rate, and `Mirror.reload` over a
real log with the scripted FakeProducer, its target threads running for real."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from edgestream.gateway.identity import Identity
from edgestream.gateway.mirror.fake import FakeCluster
from edgestream.gateway.mirror.flow import TokenBucket
from edgestream.gateway.mirror.mirror import Mirror
from edgestream.gateway.mirror.reload import KEEP, LIVE, RESTART, START, STOP, plan
from edgestream.gateway.mirror.settings import MirrorSettings, parse
from edgestream.store import Log, RecordIn, TopicConfig
from tests.harness.procs import wait_until

T0_MS = 1_700_000_000_000


def target(name: str = "central", **kw: Any) -> dict[str, Any]:
    return {"name": name, "bootstrap": "kafka:9092", "topics": [{"topic": "t"}], **kw}


def section(*targets: dict[str, Any], **mirror: Any) -> MirrorSettings:
    return parse({"targets": list(targets) or [target()], **mirror})


def actions(running: MirrorSettings, new: MirrorSettings | None, **kw: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    changes = plan({t.name: t for t in running.targets}, running, new, **kw)
    return {c.name: (c.action, c.fields) for c in changes}


# -- the plan -------------------------------------------------------------------------------------------------------


def test_an_unchanged_section_keeps_every_target() -> None:
    old = section(target("a"), target("b", bandwidth_bytes_per_s=1000))
    new = section(target("a"), target("b", bandwidth_bytes_per_s=1000, topics=["t"]))  # same, written otherwise
    assert actions(old, new) == {"a": (KEEP, ()), "b": (KEEP, ())}


def test_settings_read_at_every_turn_are_applied_live() -> None:
    old = section(target(topics=[{"topic": "t", "priority": 0}, {"topic": "u"}]))
    new = section(target(topics=[{"topic": "t", "priority": 5}, {"topic": "u"}], bandwidth_bytes_per_s=2_000_000,
                         live_share=0.5, batch_records=1000))
    assert actions(old, new) == {"central": (LIVE, ("priority", "bandwidth_bytes_per_s", "live_share",
                                                    "batch_records"))}
    wide = section(target(), persist_interval_s=5.0)
    assert actions(section(target()), wide) == {"central": (LIVE, ("persist_interval_s",))}
    assert actions(old, old, dead_letters_changed=True) == {"central": (LIVE, ("dead_letter",))}


def test_anything_the_producer_or_the_cursor_depends_on_restarts_the_target() -> None:
    old = section(target(properties={"sasl.password": "old-secret"}))
    cases = {
        "bootstrap": target(bootstrap="kafka-2:9092", properties={"sasl.password": "old-secret"}),
        "properties": target(properties={"sasl.password": "new-secret"}),
        "topics": target(topics=[{"topic": "t", "kafka_topic": "other"}], properties={"sasl.password": "old-secret"}),
        "max_in_flight_records": target(max_in_flight_records=10, properties={"sasl.password": "old-secret"}),
    }
    for field, new in cases.items():
        (change,) = plan({"central": old.targets[0]}, old, section(new))
        assert (change.action, change.fields) == (RESTART, (field,))
        assert "secret" not in change.describe(), "names of settings only: values may be credentials"
    # A restart needed by one field is not made live by the others changing too.
    both = target(bandwidth_bytes_per_s=5, bootstrap="kafka-2:9092", properties={"sasl.password": "old-secret"})
    (change,) = plan({"central": old.targets[0]}, old, section(both))
    assert change.action == RESTART and set(change.fields) == {"bootstrap", "bandwidth_bytes_per_s"}


def test_targets_added_removed_disabled_and_the_section_removed() -> None:
    old = section(target("a"), target("b"))
    assert actions(old, section(target("a"), target("c"))) == {"a": (KEEP, ()), "b": (STOP, ()), "c": (START, ())}
    assert actions(old, section(target("a"), target("b", enabled=False))) == {"a": (KEEP, ()), "b": (STOP, ())}
    assert actions(old, None) == {"a": (STOP, ()), "b": (STOP, ())}
    # Compared with what runs: a target that is not running (it failed to start) is started again.
    assert plan({"a": old.targets[0]}, old, old)[1].action == START


def test_a_new_cap_keeps_what_was_earned_up_to_the_new_burst_and_keeps_a_debt() -> None:
    b = TokenBucket(rate=1000, burst=1000, now=0.0)
    b.take(400)
    b.set_rate(100, 300, now=0.0)
    assert b.available(0.0) == 300, "no more than the new burst"
    b.take(500)
    b.set_rate(10_000, 5000, now=0.0)
    assert b.available(0.0) == -200, "a debt stays a debt"
    assert b.available(0.1) == 800
    free = TokenBucket(rate=0, burst=0, now=0.0)
    free.take(10**9)
    free.set_rate(1000, 500, now=50.0)
    assert free.available(50.0) <= 500 and math.isclose(free.wait_s(50.0), 0.0)
    b.set_rate(0, 0, now=1.0)
    assert b.unlimited and b.available(1.0) == math.inf


# -- Mirror.reload over a real log -----------------------------------------------------------------------------------


class Rig:
    def __init__(self, path: str) -> None:
        self.log = Log.open(path)
        self.log.create_topic("t", TopicConfig(partitions=2, linger_ms=0))
        self.log.create_topic("t.dlq", TopicConfig(partitions=1, linger_ms=0))
        self.cluster = FakeCluster(topics={"t": 2, "t2": 2, "backup": 2})
        self.dead_letters = {"t": "t.dlq"}

    def mirror(self, settings: MirrorSettings) -> Mirror:
        m = Mirror.create(settings, self.log, gateway_id="gw-1", dead_letters=self.dead_letters,
                          producer_factory=lambda ts: self.cluster())
        m.open_and_start()
        return m

    def append(self, n: int) -> None:
        for p in (0, 1):
            base = self.log.partition("t", p).high_watermark
            recs = [RecordIn(T0_MS + base + i, b"k", b"%d/%d" % (p, base + i)) for i in range(n)]
            self.log.append_batch("t", p, recs).result(10)

    def wait_caught_up(self, m: Mirror) -> None:
        def caught_up() -> bool:
            return all(part.cursor.acked == part.partition.high_watermark for t in m.targets for part in t.parts)

        wait_until(caught_up, timeout=30, interval=0.01, what="every target caught up")

    def written(self, kafka_topics: tuple[str, ...]) -> tuple[dict[int, list[int]], int]:
        """Offsets per edge partition across `kafka_topics`, after the centre's dedupe (in the order written),
        and how many copies it dropped."""
        best: dict[tuple[str, str, int], tuple[int, int]] = {}
        kept: dict[int, list[int]] = {}
        dropped = 0
        for (topic, _), recs in sorted(self.cluster.written.items()):
            if topic not in kafka_topics:
                continue
            for _, _, headers in recs:
                ident = Identity.from_headers(headers)
                assert ident is not None
                if ident.stream in best and ident.position <= best[ident.stream]:
                    dropped += 1
                    continue
                best[ident.stream] = ident.position
                kept.setdefault(ident.partition, []).append(ident.offset)
        return kept, dropped

    def all_offsets(self) -> dict[int, list[int]]:
        return {p: list(range(self.log.partition("t", p).high_watermark)) for p in (0, 1)}


@pytest.fixture
def rig(tmp_path: Any) -> Iterator[Rig]:
    r = Rig(str(tmp_path / "data"))
    yield r
    r.log.close()


async def test_reload_applies_live_restarts_starts_and_stops_targets(rig: Rig) -> None:
    m = rig.mirror(section(target("central")))
    try:
        rig.append(300)
        rig.wait_caught_up(m)
        (central,) = m.targets

        # Unchanged: nothing happens to the thread or its producer.
        result = await m.reload(section(target("central")), rig.dead_letters)
        assert result.describe() == "mirror unchanged" and not result.errors
        assert m.targets == [central] and len(rig.cluster.producers) == 1
        assert m.reloads == {}

        # The cap and a priority: applied in place, same thread, same producer.
        live = target("central", bandwidth_bytes_per_s=500_000, topics=[{"topic": "t", "priority": 7}])
        result = await m.reload(section(live), rig.dead_letters)
        assert result.describe() == "mirror central updated live (priority, bandwidth_bytes_per_s)"
        assert m.targets == [central] and central.alive and len(rig.cluster.producers) == 1
        assert central.bucket.rate == 500_000 and central.status().bandwidth_bytes_per_s == 500_000
        assert [p.priority for p in central.status().partitions] == [7, 7]
        rig.append(200)
        rig.wait_caught_up(m)

        # Another Kafka topic: restarted (persisted, closed, a new thread from the cursor); a second target starts.
        new = section(target("central", bandwidth_bytes_per_s=500_000, topics=[{"topic": "t", "kafka_topic": "t2"}]),
                      target("backup", topics=[{"topic": "t", "kafka_topic": "backup"}]))
        result = await m.reload(new, rig.dead_letters)
        assert not result.errors
        assert result.describe() == "mirror central restarted (topics), backup started"
        assert not central.alive and central.stopped
        assert [t.name for t in m.targets] == ["central", "backup"] and m.targets[0] is not central
        assert m.reloads == {"central": {"live": 1, "restart": 1}}
        assert m.status()["targets"][0]["reloads"] == {"restart": 1, "live": 1}
        rig.append(300)
        rig.wait_caught_up(m)
        kept, _ = rig.written(("t", "t2"))
        assert kept == rig.all_offsets(), "every record once after dedupe, in order, across the old and new topic"
        assert all(len(rig.cluster.values("t2", p)) >= 300 for p in (0, 1)), "new records went to the new topic"
        kept, dropped = rig.written(("backup",))
        assert kept == rig.all_offsets() and dropped == 0, "a new target starts at the log start"

        # The section is gone: every target stops and persists.
        stopping = list(m.targets)
        result = await m.reload(None, rig.dead_letters)
        assert result.describe() == "mirror central stopped, backup stopped"
        assert m.targets == [] and not any(t.alive for t in stopping)
        for name in ("mirror.central", "mirror.backup"):
            cur = rig.log.cursors.get(name)
            assert cur is not None
            assert [pos.offset if pos else None for pos in (cur.get("t", 0), cur.get("t", 1))] == [800, 800]
    finally:
        await m.stop()


async def test_a_target_that_cannot_start_is_reported_the_others_apply_and_the_next_reload_retries(rig: Rig) -> None:
    m = rig.mirror(section(target("central")))
    try:
        m.targets[0].call(m.targets[0].pause).result(10)  # an operator's pause
        broken = section(target("central", bootstrap="kafka-2:9092"), target("extra", topics=[{"topic": "nope"}]))
        result = await m.reload(broken, rig.dead_letters)
        assert result.describe() == "mirror central restarted (bootstrap)"
        (error,) = result.errors
        assert error.startswith("mirror extra is NOT running") and "'nope' does not exist" in error
        assert [t.name for t in m.targets] == ["central"]
        assert m.targets[0].paused == "operator", "a reload does not undo an operator's pause"
        rig.log.create_topic("nope", TopicConfig(partitions=1, linger_ms=0))
        result = await m.reload(broken, rig.dead_letters)  # the same file again: compared with what runs
        assert result.describe() == "mirror extra started" and not result.errors
        assert [t.name for t in m.targets] == ["central", "extra"]
    finally:
        await m.stop()
