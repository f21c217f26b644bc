"""The router (the gateway's Sink): routes, keys, partitions, decode errors, dead letters, error mapping."""

from __future__ import annotations

import asyncio

import pytest

from edgestream.edge.errors import RecordRejectedError, SinkClosedError
from edgestream.edge.source import DeadLetter, Reading
from edgestream.gateway.config import SourceSpec, TopicSpec
from edgestream.gateway.router import Router, compile_key_template, make_route
from edgestream.store import AsyncLog, Log, LogConfig, TopicConfig


@pytest.fixture
def log(tmp_path):
    lg = Log.open(str(tmp_path), LogConfig(min_free_bytes=0))
    lg.create_topic("t", TopicConfig(partitions=4, linger_ms=0, max_record_bytes=100))
    lg.create_topic("t.dlq", TopicConfig(partitions=1, linger_ms=0))
    yield lg
    lg.close()


def _router(log: Log, *, key: str = "{sensor}", partition: str = "key_hash", decoder: str = "json") -> Router:
    topic = TopicSpec("t", log.topic("t").config, decoder=decoder)
    spec = SourceSpec("src", "simulated", "t", partition, key, settings=None)
    return Router(AsyncLog(log), {"src": make_route(spec, topic)})


def _reading(payload: bytes, **fields: str) -> Reading:
    return Reading("src", payload, 1_700_000_000_000, fields, (("h", b"v"),))


@pytest.mark.parametrize(("template", "fields", "expected"), [
    ("{sensor}", {"sensor": "s1"}, b"s1"),
    ("{topic_levels[1]}/{topic_levels[3]}", {"topic": "factory/line3/temp/s9"}, b"line3/s9"),
    ("{port}:{unit}", {"port": "/dev/ttyUSB0", "unit": "3"}, b"/dev/ttyUSB0:3"),
    ("{source}", {}, b"src"),
    ("{topic_levels[7]}", {"topic": "a/b"}, None),
    ("{missing}", {}, None),
    ("{unit:>3}", {"unit": "7"}, b"  7"),
    ("", {"sensor": "s1"}, None),
])
def test_key_templates(template: str, fields: dict[str, str], expected: bytes | None) -> None:
    fn = compile_key_template(template)
    got = fn(Reading("src", b"", 0, fields)) if fn is not None else None
    assert got == expected


async def test_records_are_stored_with_key_partition_and_headers(log: Log) -> None:
    router = _router(log)
    await asyncio.gather(*(router.submit(_reading(b'{"v":%d}' % i, sensor=f"s{i % 3}")) for i in range(30)))
    stored = [r for p in range(4) for r in log.read("t", p, 0)]
    assert len(stored) == 30
    by_key: dict[bytes | None, set[int]] = {}
    for r in stored:
        by_key.setdefault(r.key, set()).add(r.partition)
        assert r.headers == (("h", b"v"),)
    assert set(by_key) == {b"s0", b"s1", b"s2"}
    assert all(len(parts) == 1 for parts in by_key.values()), "one key, one partition: order per key"
    st = router.statistics()
    assert st.records_in == (("src", "t", 30),)


async def test_fixed_and_source_partition_rules(log: Log) -> None:
    await _router(log, partition="fixed:2").submit(_reading(b"{}"))
    assert log.partition("t", 2).high_watermark == 1
    r = _router(log, partition="source")
    await asyncio.gather(*(r.submit(_reading(b"{}")) for _ in range(5)))
    assert sorted(log.partition("t", p).high_watermark for p in range(4))[-1] >= 5


async def test_undecodable_payload_is_stored_raw_counted_and_marked(log: Log) -> None:
    router = _router(log, partition="fixed:0")
    await router.submit(_reading(b"not json", sensor="s"))
    [rec] = log.read("t", 0, 0)
    assert rec.value == b"not json"
    assert ("decode_error", b"bad_json") in rec.headers
    assert router.statistics().decode_errors == (("t", "bad_json", 1),)


async def test_oversized_record_goes_to_the_dead_letter_topic_and_is_rejected(log: Log) -> None:
    router = _router(log, partition="fixed:0")
    big = b'{"x":"' + b"a" * 200 + b'"}'
    with pytest.raises(RecordRejectedError) as exc:
        await router.submit(_reading(big, sensor="s"))
    assert exc.value.reason == "too_large"
    assert await asyncio.wait_for(_dlq_count(log, 1), 5) == 1
    [dl] = log.read("t.dlq", 0, 0)
    assert dl.value == big
    assert dict(dl.headers)["dlq.reason"] == b"too_large"
    assert dict(dl.headers)["field.sensor"] == b"s"
    assert log.partition("t", 0).high_watermark == 0
    await router.submit(_reading(b'{"ok":1}', sensor="s"))  # the next one flows
    assert log.partition("t", 0).high_watermark == 1


async def _dlq_count(log: Log, n: int) -> int:
    while log.partition("t.dlq", 0).high_watermark < n:
        await asyncio.sleep(0.01)
    return log.partition("t.dlq", 0).high_watermark


async def test_dead_letters_from_sources_carry_reason_and_detail(log: Log) -> None:
    router = _router(log)
    await router.dead_letter(DeadLetter("src", b"\x00garbage", "garbage", 5, detail="no terminator",
                                        fields={"port": "/dev/ttyS0"}))
    [dl] = log.read("t.dlq", 0, 0)
    h = dict(dl.headers)
    assert (h["dlq.reason"], h["dlq.detail"], h["dlq.source"], h["field.port"]) == (
        b"garbage", b"no terminator", b"src", b"/dev/ttyS0")
    assert router.statistics().dead_letters == (("t", "garbage", 1),)


async def test_closed_router_and_unknown_source_refuse_without_ack(log: Log) -> None:
    router = _router(log)
    with pytest.raises(SinkClosedError):
        await router.submit(Reading("nobody", b"{}", 0))
    router.close()
    with pytest.raises(SinkClosedError):
        await router.submit(_reading(b"{}", sensor="s"))


async def test_full_topic_with_reject_new_is_a_counted_rejection(tmp_path) -> None:
    lg = Log.open(str(tmp_path), LogConfig(min_free_bytes=1 << 62))  # "the disk is always full"
    lg.create_topic("t", TopicConfig(partitions=1, on_full="reject_new", linger_ms=0))
    lg.create_topic("t.dlq", TopicConfig(partitions=1))
    try:
        router = _router(lg, partition="fixed:0")
        with pytest.raises(RecordRejectedError) as exc:
            await router.submit(_reading(b"{}", sensor="s"))
        assert exc.value.reason == "full"
        assert router.statistics().rejected == (("src", "full", 1),)
    finally:
        lg.close()
