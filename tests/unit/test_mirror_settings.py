"""The [mirror] config section: validation messages with key paths, `edgestream config check`, the demo helper."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from edgestream.gateway import config as gwconfig
from edgestream.gateway.errors import ConfigFileError
from edgestream.gateway.mirror import config_problems, render_mirror_section, toml_section
from edgestream.gateway.mirror.producer import producer_config
from edgestream.gateway.mirror.settings import parse
from tests.cli import run


class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dead_letter_topic = f"{name}.dlq"


TOPICS = [_Topic("telemetry"), _Topic("alarms")]


def problems(raw: Any) -> dict[str, str]:
    return dict(config_problems(raw, TOPICS))


def test_a_full_section_parses() -> None:
    s = parse({"persist_interval_s": 0.5, "targets": [{
        "name": "central", "bootstrap": "k1:9093,k2:9093", "bandwidth_bytes_per_s": 1_000_000,
        "properties": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "socket.nagle.disable": True,
                       "batch": {"size": 65536}},  # unquoted dotted keys in TOML make nested tables
        "topics": ["telemetry", {"topic": "alarms", "kafka_topic": "plant.alarms", "priority": 10},
                   {"topic": "telemetry.dlq", "partitioning": "key"}]}]}, TOPICS)
    t = s.targets[0]
    assert s.persist_interval_s == 0.5 and t.cursor_name == "mirror.central"
    assert [m.destination for m in t.topics] == ["telemetry", "plant.alarms", "telemetry.dlq"]
    assert t.properties["socket.nagle.disable"] == "true" and t.properties["batch.size"] == "65536"
    assert t.burst == 250_000
    conf = producer_config(t, "gw-7")
    assert conf["enable.idempotence"] is True and conf["acks"] == "all" and conf["enable.gapless.guarantee"] is True
    assert conf["message.timeout.ms"] == 0 and conf["security.protocol"] == "SASL_SSL"
    assert conf["compression.type"] == "zstd" and conf["partitioner"] == "murmur2_random"


@pytest.mark.parametrize(("raw", "key", "needle"), [
    ({"persist_interval_s": 1.0}, "mirror.targets", "required"),
    ({"targets": [{"name": "c", "bootstrap": "k:1", "topics": ["nope"]}]}, "mirror.targets[0] (c).topics[0].topic",
     "not a topic of this gateway"),
    ({"targets": [{"name": "c", "bootstrap": "nohostport", "topics": ["alarms"]}]}, "mirror.targets[0] (c).bootstrap",
     "host:port"),
    ({"targets": [{"name": "c", "bootstrap": "k:1", "topics": ["alarms"], "properties": {"acks": "1"}}]},
     "mirror.targets[0] (c).properties.acks", "set by the mirror"),
    ({"targets": [{"name": "c", "bootstrap": "k:1", "topics": ["alarms"], "batch_records": "many"}]},
     "mirror.targets[0].batch_records", "Expected `int`"),
    ({"targets": [{"name": "c", "bootstrap": "k:1", "topics": ["alarms"], "colour": "red"}]},
     "mirror.targets[0].colour", "unknown key"),
    ({"targets": [{"name": "c", "bootstrap": "k:1", "topics": [{"topic": "alarms", "partitioning": "hash"}]}]},
     "mirror.targets[0] (c).topics[0].partitioning", "same (ordered) or key"),
    ({"targets": [{"name": "c", "bootstrap": "k:1", "topics": ["alarms"], "live_share": 2}]},
     "mirror.targets[0] (c).live_share", "0 to 1"),
    ({"targets": [{"name": "c", "bootstrap": "k:1", "topics": ["alarms"]},
                  {"name": "c", "bootstrap": "k:2", "topics": ["alarms"]}]}, "mirror.targets[1].name", "two targets"),
    ({"targets": [{"name": "c", "bootstrap": "k:1", "topics": ["alarms", "alarms"]}]},
     "mirror.targets[0] (c).topics[1].topic", "mapped twice"),
])
def test_problems_name_the_key(raw: Any, key: str, needle: str) -> None:
    got = problems(raw)
    assert key in got, got
    assert needle in got[key]


def test_the_gateway_config_loader_reports_mirror_problems(tmp_path: Any) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[[topics]]\nname = \"telemetry\"\n\n[mirror]\n[[mirror.targets]]\nname = \"central\"\n"
                    "bootstrap = \"k:9092\"\ntopics = [\"telemetry\", \"missing\"]\nproperties = { acks = \"0\" }\n")
    with pytest.raises(ConfigFileError) as exc:
        gwconfig.load(str(path))
    keys = [k for k, _ in exc.value.problems]
    assert "mirror.targets[0] (central).topics[1].topic" in keys
    assert "mirror.targets[0] (central).properties.acks" in keys
    r = run("config", "check", str(path))
    assert r.code == 1 and "2 problem(s)" in r.err and "properties.acks" in r.err and "Traceback" not in r.err


def test_render_mirror_section_is_valid_toml_and_config() -> None:
    section = render_mirror_section("127.0.0.1:9092", ["telemetry"], persist_interval_s=0.5, batch_records=100,
                                    properties={"socket.nagle.disable": "true"})
    text = toml_section(section)
    doc = tomllib.loads(text)
    assert doc["mirror"]["persist_interval_s"] == 0.5
    s = parse(doc["mirror"], TOPICS)
    assert s.targets[0].batch_records == 100 and s.targets[0].topics[0].topic == "telemetry"
