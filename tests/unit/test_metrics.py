"""gateway/metrics.py: the families a scrape yields from real store and router statistics and from every source
type's statistics dataclass, checked against Prometheus' naming conventions, bounded labels and docs/metrics.md."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from edgestream.edge.modbus.poller import ModbusPollerStatistics, UnitStatistics
from edgestream.edge.mqtt.client import MqttClientStatistics
from edgestream.edge.mqtt.listener_stats import MqttListenerStatistics
from edgestream.edge.serial.source import SerialSourceStatistics
from edgestream.edge.simulate.source import SimulatedSourceStatistics
from edgestream.edge.source import Reading
from edgestream.gateway import config as gwconfig
from edgestream.gateway.metrics import DROP_REASONS, make_registry
from edgestream.gateway.metrics_sources import source_families
from edgestream.gateway.router import Router, make_route
from edgestream.gateway.sdnotify import Heartbeat, Notifier
from edgestream.store import AsyncLog, Log, TopicConfig

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_LABELS = {"topic", "partition", "source", "type", "reason", "unit", "qos", "route", "method", "code",
                  "target", "le", "version", "python", "machine", "gateway", "generation", "implementation", "major",
                  "minor", "patchlevel", "result"}
SOURCE_STATS = {"mqtt_client": MqttClientStatistics, "mqtt_listener": MqttListenerStatistics,
                "serial": SerialSourceStatistics, "modbus": ModbusPollerStatistics,
                "simulated": SimulatedSourceStatistics}


def sample_stats(cls: type[Any], n: int = 3) -> Any:
    """An instance of a statistics dataclass with every field set to something non-zero."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if t is bool:
            values[f.name] = True
        elif t in (int, float):
            values[f.name] = n * (1_700_000_000_000 if f.name.endswith("_ms") else 1)
        elif t is str:
            values[f.name] = "/dev/ttyUSB0" if f.name == "port" else "connection refused"
        elif f.name == "units":
            values[f.name] = (sample_stats(UnitStatistics, n),)
        elif f.name == "publishes_received":
            values[f.name] = {0: n, 1: n}
        else:  # Mapping[str, int] by reason
            values[f.name] = {"timeout": n, "crc": 1}
    return cls(**values)


class FakeSource:
    def __init__(self, stats: Any) -> None:
        self.stats = stats

    def statistics(self) -> Any:
        if isinstance(self.stats, Exception):
            raise self.stats
        return self.stats


class FakeExtension:
    def __init__(self, *families: Any) -> None:
        self.families = families

    def collect_metrics(self) -> Any:
        yield from self.families


@dataclasses.dataclass
class FakeGateway:
    """The attributes of gateway.service.Gateway that the collector reads."""

    log: Log
    router: Router | None
    specs: dict[str, Any]
    table: dict[str, tuple[str, Any, bool]]
    gateway_id: str = "gw-1"
    started_at: float = 1_700_000_000.0
    ready: bool = True
    reloads: int = 0
    reload_errors: int = 0
    tier_available: bool = False
    notifier: Notifier = dataclasses.field(default_factory=lambda: Notifier(""))
    mirror: Any = None
    tierer: Any = None
    heartbeat: Any = None

    def source_table(self) -> dict[str, tuple[str, Any, bool]]:
        return self.table

    def source_restarts(self) -> dict[str, int]:
        return {}

    def source_specs(self) -> dict[str, Any]:
        return self.specs


@pytest.fixture
def log(tmp_path: Path) -> Any:
    with Log.open(str(tmp_path / "data")) as lg:
        lg.create_topic("telemetry", TopicConfig(partitions=2, linger_ms=0))
        lg.create_topic("telemetry.dlq", TopicConfig(partitions=1, linger_ms=0))
        yield lg


def _gateway(log: Log, tmp_path: Path, **kw: Any) -> FakeGateway:
    raw = {"gateway": {"data_dir": str(tmp_path / "data")},
           "topics": [{"name": "telemetry", "partitions": 2, "decoder": "json"}],
           "sources": [{"name": "line1", "type": "simulated", "topic": "telemetry", "key": "{topic_levels[1]}"}]}
    cfg = gwconfig.parse(str(tmp_path / "gateway.toml"), raw)
    specs = {s.name: s for s in cfg.sources}
    router = Router(AsyncLog(log), {n: make_route(s, cfg.topics[0]) for n, s in specs.items()})
    table = {name: (typ, FakeSource(sample_stats(cls)), True) for typ, cls in SOURCE_STATS.items()
             for name in [f"src-{typ}"]}
    table["line1"] = ("simulated", FakeSource(sample_stats(SimulatedSourceStatistics)), True)
    return FakeGateway(log, router, specs, table, **kw)


def scrape(gw: FakeGateway) -> str:
    return generate_latest(make_registry(gw)).decode()  # type: ignore[arg-type]


async def test_a_scrape_follows_the_prometheus_conventions(log: Log, tmp_path: Path) -> None:
    gw = _gateway(log, tmp_path)
    assert gw.router is not None
    for i in range(20):  # readings from MQTT topics: the topic and the key must not become label values
        await gw.router.submit(Reading("line1", b'{"v": %d}' % i, 1_700_000_000_000 + i,
                                       fields={"topic": f"factory/press-{i}/temperature"}))
    await gw.router.submit(Reading("line1", b"not json", 1_700_000_000_100, fields={"topic": "factory/x/y"}))
    text = scrape(gw)
    families = list(text_string_to_metric_families(text))
    assert len(families) > 60
    for fam in families:
        assert re.fullmatch(r"(edgestream|process|python)_[a-z0-9_]+", fam.name), fam.name
        assert not re.search(r"_(ms|milliseconds|kb|mb|kib|mib|percent|total_total)(_|$)", fam.name), fam.name
        for s in fam.samples:
            assert set(s.labels) <= ALLOWED_LABELS, (fam.name, s.labels)
            if fam.type == "counter":
                assert s.name.endswith(("_total", "_created")), s.name
    assert "press-" not in text and "factory/" not in text, "no MQTT topic (nor a key made from it) in a label"
    assert 'edgestream_records_in_total{source="line1",topic="telemetry"} 21.0' in text
    assert 'edgestream_decode_errors_total{reason=' in text


async def test_zero_series_exist_for_every_reason_an_alert_waits_for(log: Log, tmp_path: Path) -> None:
    text = scrape(_gateway(log, tmp_path))
    for topic in ("telemetry", "telemetry.dlq"):
        for reason in DROP_REASONS:
            assert f'edgestream_dropped_records_total{{reason="{reason}",topic="{topic}"}} 0.0' in text
    assert 'edgestream_dead_letters_total{reason="too_large",topic="telemetry"} 0.0' in text
    for reason in ("full", "too_large"):
        assert f'edgestream_source_rejected_records_total{{reason="{reason}",source="line1"}} 0.0' in text
    assert 'edgestream_records_in_total{source="line1",topic="telemetry"} 0.0' in text


def test_fsync_latency_is_one_histogram_over_every_partition(log: Log, tmp_path: Path) -> None:
    for p in (0, 1):
        for _ in range(5):
            log.append("telemetry", p, b"x" * 100).result(10)
    log.append("telemetry.dlq", 0, b"y").result(10)
    fams = {f.name: f for f in text_string_to_metric_families(scrape(_gateway(log, tmp_path)))}
    hist = fams["edgestream_fsync_duration_seconds"]
    buckets = [(s.labels["le"], s.value) for s in hist.samples if s.name.endswith("_bucket")]
    count = next(s.value for s in hist.samples if s.name.endswith("_count"))
    fsyncs = sum(s.value for s in fams["edgestream_log_fsyncs"].samples if s.name.endswith("_total"))
    assert count == fsyncs >= 11
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets)), "cumulative"
    assert buckets[-1] == ("+Inf", count)
    assert all(not s.labels or set(s.labels) == {"le"} for s in hist.samples)


def test_per_partition_and_per_topic_families(log: Log, tmp_path: Path) -> None:
    log.append("telemetry", 1, b"abc", key=b"k").result(10)
    text = scrape(_gateway(log, tmp_path))
    assert 'edgestream_log_end_offset{partition="1",topic="telemetry"} 1.0' in text
    assert 'edgestream_log_end_offset{partition="0",topic="telemetry"} 0.0' in text
    assert 'edgestream_log_records{topic="telemetry"} 1.0' in text
    assert 'edgestream_log_appended_bytes_total{topic="telemetry"} 4.0' in text
    assert "edgestream_disk_size_bytes " in text and "edgestream_disk_free_bytes " in text
    assert 'edgestream_gateway_info{gateway="gw-1"} 1.0' in text


def test_source_statistics_become_families_by_field_kind() -> None:
    table = {"plc": ("modbus", FakeSource(sample_stats(ModbusPollerStatistics)), True),
             "listener": ("mqtt_listener", FakeSource(sample_stats(MqttListenerStatistics)), False),
             "sim": ("simulated", FakeSource(sample_stats(SimulatedSourceStatistics)), True),
             "broken": ("serial", FakeSource(RuntimeError("statistics() bug")), True)}
    fams = {f.name: f for f in source_families(table, {"plc": 2})}
    up = {s.labels["source"]: s.value for s in fams["edgestream_source_up"].samples}
    assert up == {"plc": 1.0, "listener": 0.0, "sim": 1.0, "broken": 1.0}, "a failing statistics() costs its series"
    restarts = {s.labels["source"]: s.value for s in fams["edgestream_source_restarts"].samples}
    assert restarts == {"plc": 2, "listener": 0, "sim": 0, "broken": 0}
    # `malformed` is a number for the simulated source and a mapping by reason for the listener: one family.
    malformed = fams["edgestream_source_malformed"]
    assert isinstance(malformed, CounterMetricFamily)
    by = {(s.labels["source"], s.labels["reason"]) for s in malformed.samples}
    assert by == {("listener", "timeout"), ("listener", "crc"), ("sim", "")}
    assert isinstance(fams["edgestream_source_connected"], GaugeMetricFamily)
    assert isinstance(fams["edgestream_source_in_flight"], GaugeMetricFamily), "MQTT's inflight is renamed"
    assert "edgestream_source_inflight" not in fams
    qos = {s.labels["qos"] for s in fams["edgestream_source_publishes_received"].samples}
    assert qos == {"0", "1"}
    unit = fams["edgestream_source_unit_errors"].samples[0].labels
    assert unit["unit"] == "3" and unit["source"] == "plc"
    ts = fams["edgestream_source_unit_last_reading_timestamp_seconds"].samples[0].value
    assert ts == pytest.approx(3 * 1_700_000_000.0)
    assert not any("port" in n or "last_error" in n for n in fams), "text fields are not metrics"


def test_extensions_and_heartbeat_add_their_families(log: Log, tmp_path: Path) -> None:
    lag = GaugeMetricFamily("edgestream_mirror_lag_records", "x", labels=["target", "topic", "partition"])
    lag.add_metric(["central", "telemetry", "0"], 5)
    hb = Heartbeat(5.0, 15.0, clock=iter([0.0, 7.5]).__next__)
    hb.beat()
    text = scrape(_gateway(log, tmp_path, mirror=FakeExtension(lag), heartbeat=hb))
    assert 'edgestream_mirror_lag_records{partition="0",target="central",topic="telemetry"} 5.0' in text
    assert "edgestream_event_loop_lag_seconds 2.5" in text and "edgestream_watchdog_interval_seconds 15.0" in text


def test_every_family_is_in_the_metrics_reference(log: Log, tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    names = {f.name for f in text_string_to_metric_families(scrape(_gateway(log, tmp_path)))}
    names |= {f.name for f in source_families(
        {t: (t, FakeSource(sample_stats(c)), True) for t, c in SOURCE_STATS.items()})}
    missing = sorted(n for n in names if f"`{n}`" not in doc and f"`{n}_total`" not in doc)
    assert not missing, f"add to docs/metrics.md: {missing}"


def test_store_and_edge_never_import_prometheus_client() -> None:
    for package in ("store", "edge"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                assert not any(n.split(".")[0] == "prometheus_client" for n in names), path
