"""Every dashboard panel's query and every alert expression returns data from a real Prometheus that scraped a
running gateway under simulated load: no empty panel, no typo'd metric name, no join that matches nothing.

Queries go through Prometheus' HTTP API as Grafana sends them, with the dashboard variables and macros replaced
(dashboards/checks.py). An alert expression such as `increase(x[10m]) > 0` is empty while all is well, so each
side of its comparisons must return series instead. The mirror's and the tier's panels and alerts need a gateway
with a `[mirror]` section (against the real Kafka, with its WAN cut for a few seconds so delivery errors, lag and
ETA have values) and a `[tier]` section. Where an extension is not installed in this tree (its start function
cannot be imported), exactly its checks are expected to fail, strictly: a check that passes without it is a bug in
the test.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.gateway import GatewayProcess, running_gateway, simple_config
from tests.harness.procs import wait_until
from tests.harness.prometheus import PrometheusServer, prometheus  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "dashboards"))
import checks  # noqa: E402

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]



def _importable(module: str, name: str, *extras: str) -> bool:
    try:
        getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return all(importlib.util.find_spec(e) is not None for e in extras)


MIRROR_AVAILABLE = _importable("edgestream.gateway.mirror", "start_mirror", "confluent_kafka")
TIER_AVAILABLE = _importable("edgestream.gateway.tiering", "start_tierer", "pyarrow", "duckdb")
MIRROR_XFAIL = pytest.mark.xfail(not MIRROR_AVAILABLE, strict=True, reason="the mirror (gateway/mirror) is not "
                                 "installed here, so nothing exports edgestream_mirror_*")
TIER_XFAIL = pytest.mark.xfail(not TIER_AVAILABLE, strict=True, reason="the tier (gateway/tiering.py with the "
                               "[tier] extra) is not installed here, so nothing exports edgestream_tier_*")
TIER_SECTION: dict[str, Any] = {"enabled": True, "interval_s": 1}
SCRAPES = 12  # one per second: enough for rate() over the 10 s rate interval used below
RATE_INTERVAL = "10s"


def _kind(expr: str) -> str:
    names = checks.metric_names(expr)
    if any(n.startswith("edgestream_mirror_") for n in names):
        return "mirror"
    if any(n.startswith("edgestream_tier_") and n != "edgestream_tier_available" for n in names):
        return "tier"
    return "base"


def _all_queries() -> list[checks.Query]:
    return [q for name in checks.DASHBOARDS for q in checks.queries(name, checks.load(name))]


def _params(kind: str, mark: Any = None) -> list[Any]:
    out = []
    for q in _all_queries():
        if _kind(q.expr) == kind:
            out.append(pytest.param(q, id=q.id, marks=[mark] if mark else []))
    return out


def _alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(checks.ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]


def _alert_params() -> list[Any]:
    marks = {"mirror": [MIRROR_XFAIL], "tier": [TIER_XFAIL], "base": []}
    return [pytest.param(r, id=r["alert"], marks=marks[_kind(r["expr"])]) for r in _alerts()]


class Scraped:
    """A gateway that Prometheus has scraped for a while, and the values of the dashboard variables for it."""

    def __init__(self, gw: GatewayProcess, prom: PrometheusServer, gateway_id: str) -> None:
        self.gw = gw
        self.prom = prom
        self.instance = f"127.0.0.1:{gw.port}"
        self.values = {"datasource": "prometheus", "gateway": gateway_id, "instance": self.instance, "topic": ".*",
                       "target": ".*"}

    def promql(self, expr: str) -> str:
        return checks.grafana_to_promql(expr, self.values, rate_interval=RATE_INTERVAL, range_="5m")

    def assert_returns_data(self, expr: str, what: str, legend: str = "") -> None:
        """Series come back, and carry every label the legend names (a `by (...)` that drops one leaves the
        legend blank: the data is there, the panel still lies)."""
        promql = self.promql(expr)
        result = self.prom.query(promql)
        assert result, f"{what}: no series\n  {promql}"
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            assert any(label in r["metric"] for r in result), f"{what}: no series has label {label!r}\n  {promql}"


def _produce(gw: GatewayProcess, topic: str, n: int) -> None:
    body = json.dumps({"records": [{"key": f"k{i % 4}", "value": {"alarm": i}} for i in range(n)]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/v1/topics/{topic}/records", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def _config(data: str, gateway_id: str, segment_bytes: int = 16 << 20, **sections: Any) -> dict[str, Any]:
    cfg = simple_config(
        data,
        topics=[{"name": "telemetry", "partitions": 2, "decoder": "json", "linger_ms": 2,
                 "segment_bytes": segment_bytes},
                {"name": "alarms", "partitions": 1, "linger_ms": 2}],
        sources=[{"name": "sim", "type": "simulated", "topic": "telemetry", "key": "{sensor}", "sensors": 10,
                  "rate": 200, "malformed_rate": 0.05}],
        **sections,
    )
    cfg["gateway"]["id"] = gateway_id
    return cfg


@pytest.fixture(scope="module")
def started(prometheus: PrometheusServer,  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Scraped]]:
    """Start a gateway (once per kind), let Prometheus scrape it under load, and hand it out."""
    running: dict[str, Scraped] = {}
    stack: list[Any] = []

    def start(kind: str, **sections: Any) -> Scraped:
        if kind in running:
            return running[kind]
        work = tmp_path_factory.mktemp(f"prom-{kind}")
        gateway_id = f"prom-{kind}"
        cm = running_gateway(str(work), _config(str(work / "data"), gateway_id, **sections))
        gw = cm.__enter__()
        stack.append(cm)
        scraped = Scraped(gw, prometheus, gateway_id)
        prometheus.add_target(scraped.instance)
        for _ in range(3):
            _produce(gw, "alarms", 50)
        prometheus.wait_scrapes(scraped.instance, SCRAPES)
        running[kind] = scraped
        return scraped

    yield start
    for scraped in running.values():
        prometheus.remove_target(scraped.instance)
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def base(started: Callable[..., Scraped]) -> Scraped:
    return started("base")


def _extensions(started: Callable[..., Scraped], request: pytest.FixtureRequest, kind: str) -> Scraped:
    """One gateway with every extension installed here: a [mirror] to the real Kafka and a [tier]."""
    if kind == "mirror" and not MIRROR_AVAILABLE:
        pytest.fail("the mirror is not installed")
    if kind == "tier" and not TIER_AVAILABLE:
        pytest.fail("the tier is not installed")
    if "ext" in _EXT:
        return _EXT["ext"]
    sections: dict[str, Any] = {}
    kafka = None
    if MIRROR_AVAILABLE:
        kafka = request.getfixturevalue("kafka")
        topic = kafka.new_topic("prom-mirror", partitions=2)
        sections["mirror"] = {"targets": [{
            "name": "central", "bootstrap": kafka.wan_bootstrap, "bandwidth_bytes_per_s": 2_000_000,
            "delivery_timeout_s": 2, "topics": [{"topic": "telemetry", "kafka_topic": topic}]}]}
    if TIER_AVAILABLE:
        sections["tier"] = TIER_SECTION
    # Small segments: the tier only takes sealed ones, and should have some within seconds.
    scraped = started("ext", segment_bytes=64 << 10, **sections)

    def scraped_a_while(metric: str) -> bool:
        res = scraped.prom.query(f'count_over_time({metric}{{instance="{scraped.instance}"}}[1m])')
        return bool(res) and min(float(r["value"][1]) for r in res) >= 5

    if TIER_AVAILABLE:
        wait_until(lambda: scraped_a_while("edgestream_tier_rows_total"), timeout=60,
                   what="segments tiered and scraped")
    if kafka is not None:
        # Some real trouble for the mirror's panels: the WAN goes down for longer than the delivery timeout, so
        # deliveries fail and the backlog and its age grow; then it comes back and the backlog drains.
        errors = f'edgestream_mirror_delivery_errors_total{{instance="{scraped.instance}"}}'
        kafka.wan.cut()
        try:
            wait_until(lambda: scraped.prom.query(errors), timeout=60, what="a delivery error scraped")
        finally:
            kafka.wan.restore()
        wait_until(lambda: scraped_a_while("edgestream_mirror_delivery_errors_total"), timeout=30,
                   what="delivery errors scraped for a few seconds")
    _EXT["ext"] = scraped
    return scraped


_EXT: dict[str, Scraped] = {}


# -- panels --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", _params("base"))
def test_panel_query_returns_data(base: Scraped, query: checks.Query) -> None:
    base.assert_returns_data(query.expr, query.id, query.legend)


@pytest.mark.parametrize("query", _params("mirror", MIRROR_XFAIL))
def test_mirror_panel_query_returns_data(started: Callable[..., Scraped], request: pytest.FixtureRequest,
                                         query: checks.Query) -> None:
    _extensions(started, request, "mirror").assert_returns_data(query.expr, query.id, query.legend)


@pytest.mark.parametrize("query", _params("tier", TIER_XFAIL))
def test_tier_panel_query_returns_data(started: Callable[..., Scraped], request: pytest.FixtureRequest,
                                       query: checks.Query) -> None:
    _extensions(started, request, "tier").assert_returns_data(query.expr, query.id, query.legend)


def test_variables_list_the_gateway_and_its_topics(base: Scraped) -> None:
    for name in checks.DASHBOARDS:
        for q in checks.variable_queries(name, checks.load(name)):
            if _kind(q.expr) != "base":
                continue
            base.assert_returns_data(q.expr, f"{q.dashboard} / {q.panel}")
    result = base.prom.api("label/gateway/values", **{"match[]": "edgestream_gateway_info"})
    assert "prom-base" in result


def test_the_fleet_table_has_one_row_per_gateway_with_its_figures(base: Scraped) -> None:
    table = next(p for p in checks.panels(checks.load("fleet.json")) if p["type"] == "table")
    rows: dict[str, dict[str, float]] = {}
    for t in table["targets"]:
        if _kind(t["expr"]) != "base":
            continue
        for series in base.prom.query(base.promql(t["expr"])):
            rows.setdefault(series["metric"]["gateway"], {})[t["refId"]] = float(series["value"][1])
    row = rows["prom-base"]
    assert row["A"] > 10, "ingest rate: the simulated source sends 200 readings/s"
    assert row["C"] > 0, "disk headroom"
    assert row["E"] == 0 and row["F"] == 0, "no drops, no dead letters"
    assert row["H"] == 1, "ready"


# -- alerts --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", _alert_params())
def test_alert_expression_operands_return_data(started: Callable[..., Scraped], request: pytest.FixtureRequest,
                                               rule: dict[str, Any]) -> None:
    kind = _kind(rule["expr"])
    scraped = started("base") if kind == "base" else _extensions(started, request, kind)
    operands = checks.operands(rule["expr"])
    assert operands, rule["expr"]
    for op in operands:
        # Scope to this gateway: other tests' gateways come and go in the same Prometheus.
        scoped = f'({op}) and on(instance) edgestream_gateway_info{{instance="{scraped.instance}"}}'
        scraped.assert_returns_data(scoped if "edgestream_" in op else op, f"{rule['alert']}: {op}")
        labels = set(re.findall(r"\$labels\.(\w+)", json.dumps(rule.get("annotations", {}))))
        by = re.search(r"\bby \(([^)]*)\)", op)
        if by:  # an aggregation must keep every label the annotations print
            missing = labels - {x.strip() for x in by.group(1).split(",")}
            assert not missing, f"{rule['alert']}: {op} drops {missing}, which the annotations use"


def test_alert_rules_evaluate_without_errors(base: Scraped) -> None:
    base.prom.wait_scrapes(base.instance, SCRAPES + 2)
    rules = base.prom.rules()
    names = {r["name"] for r in rules}
    assert names == {r["alert"] for r in _alerts()}
    bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
    assert not bad, bad
    firing = {r["name"] for r in rules if r.get("state") == "firing" and any(
        a["labels"].get("instance") == base.instance for a in r.get("alerts", []))}
    assert not firing, f"a healthy gateway under load fires {firing}"


def test_every_exported_family_is_in_the_metrics_reference(base: Scraped) -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    series = base.prom.api("series", **{"match[]": f'{{instance="{base.instance}"}}'})
    names = {s["__name__"] for s in series if s["__name__"].startswith("edgestream_")}
    assert len(names) > 40
    base_names = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in names}
    missing = sorted(n for n in base_names if f"`{n}`" not in doc)
    assert not missing, f"exported but not in docs/metrics.md: {missing}"
