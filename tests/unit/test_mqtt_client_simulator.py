"""The MQTT sensor simulator's pure parts: topics, numbering, the message stream."""

from __future__ import annotations

import itertools
import json

from edgestream.edge.simulate import mqtt as sim
from edgestream.edge.simulate.telemetry import fleet


def test_topics_follow_prefix_line_kind_sensor() -> None:
    sensors = fleet(6)
    assert [sim.topic_for(s, "factory") for s in sensors[:3]] == [
        "factory/line1/temperature/temperature-0",
        "factory/line2/vibration/vibration-1",
        "factory/line3/current/current-2",
    ]


def test_numbered_json_stays_json_and_the_number_reads_back() -> None:
    payload = sim.numbered(b'{"sensor":"a","value":1.5}', 17, is_json=True)
    assert json.loads(payload) == {"n": 17, "sensor": "a", "value": 1.5}
    assert sim.sequence_number(payload) == 17
    assert sim.sequence_number(b'{"n":9}') == 9


def test_numbered_malformed_payloads_carry_the_number_too() -> None:
    for garbage in (b"", b"\xff\xfe|x", b'{"sensor":"line1/t', b"NaN,NaN"):
        assert sim.sequence_number(sim.numbered(garbage, 123456, is_json=False)) == 123456


def test_unnumbered_payloads_have_no_number() -> None:
    assert sim.sequence_number(b'{"sensor":"a"}') is None
    assert sim.sequence_number(b"\xff\x00") is None
    assert sim.sequence_number(b"12a|x") is None


def test_stream_numbers_every_message_once_in_order_and_mixes_in_malformed() -> None:
    msgs = list(itertools.islice(sim.messages(fleet(10), malformed_rate=0.2, numbered_from=0, seed=3,
                                              wall_ms=lambda: 1_700_000_000_000), 500))
    assert [sim.sequence_number(m.payload) for m in msgs] == list(range(500))
    bad = [m for m in msgs if m.malformed]
    assert 50 < len(bad) < 150
    good = [json.loads(m.payload) for m in msgs if not m.malformed]
    assert {g["kind"] for g in good} == {"temperature", "vibration", "current", "pressure", "counter"}
    assert all(m.topic.startswith("factory/line") for m in msgs)


def test_stream_is_deterministic_for_a_seed() -> None:
    def take(seed: int) -> list[bytes]:
        it = sim.messages(fleet(4, seed=seed), malformed_rate=0.1, seed=seed, wall_ms=lambda: 0)
        return [m.payload for m in itertools.islice(it, 50)]

    assert take(1) == take(1)
    assert take(1) != take(2)


def test_summary_line_names_the_counts() -> None:
    r = sim.SimulationResult(sent=10, acked=9, failed=1, malformed=2, elapsed_s=2.0, reconnects=0)
    assert r.summary().startswith("sent 10, acked 9, failed 1, malformed 2, reconnects 0 in 2.00 s")
