"""The Grafana dashboards type-check against Grafana's published schema (npm @grafana/schema + tsc), are what
dashboards/build.py makes, and keep the conventions every edgestream dashboard shares.

Needs `npm ci --prefix dashboards` (the Makefile runs it before the tests); node_modules is not in git.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASH = ROOT / "dashboards"
sys.path.insert(0, str(DASH))
import checks  # noqa: E402

TSC = DASH / "node_modules" / "typescript" / "bin" / "tsc"


def _tsc(tmp_path: Path, dashboards: dict[str, dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    if not TSC.exists() or not (DASH / "node_modules" / "@grafana" / "schema").exists():
        pytest.fail("dashboards/node_modules is missing: run `npm ci --prefix dashboards` (make test does)",
                    pytrace=False)
    (tmp_path / "node_modules").symlink_to(DASH / "node_modules")
    for name, d in dashboards.items():
        (tmp_path / name.replace(".json", ".ts")).write_text(checks.typescript_for(d))
    (tmp_path / "tsconfig.json").write_text(json.dumps({**checks.TSCONFIG, "include": ["*.ts"]}))
    return subprocess.run(["node", str(TSC), "-p", str(tmp_path)], capture_output=True, text=True, timeout=120)


def test_dashboards_type_check_against_grafanas_schema(tmp_path: Path) -> None:
    r = _tsc(tmp_path, {n: checks.load(n) for n in checks.DASHBOARDS})
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_type_check_catches_typos_and_bad_enum_values(tmp_path: Path) -> None:
    d = copy.deepcopy(checks.load("gateway.json"))
    series = [p for p in checks.panels(d) if p["type"] == "timeseries"]
    d["graphTooltip"] = "shared"  # an enum (number) given as text
    d["panels"][0]["gridPoss"] = d["panels"][0].pop("gridPos")  # unknown key on a panel
    series[0]["options"]["tooltip"]["mode"] = "everything"  # not a TooltipDisplayMode
    series[1]["fieldConfig"]["defaults"]["custom"]["lineWidht"] = 2  # unknown key in the plugin's field config
    series[2]["targets"][0]["legendFromat"] = "{{topic}}"  # unknown key on a Prometheus query
    r = _tsc(tmp_path, {"gateway.json": d})
    assert r.returncode != 0
    for needle in ("DashboardCursorSync", "'\"gridPoss\"' does not exist", "'\"everything\"' is not assignable",
                   "'\"lineWidht\"' does not exist", "'\"legendFromat\"' does not exist"):
        assert needle in r.stdout, f"{needle} not reported:\n{r.stdout}"


def test_json_files_are_what_build_py_makes() -> None:
    r = subprocess.run([sys.executable, str(DASH / "build.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", checks.DASHBOARDS)
def test_dashboard_conventions(name: str) -> None:
    d = checks.load(name)
    assert d["schemaVersion"] == 42 and d["uid"].startswith("edgestream-") and "edgestream" in d["tags"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["gateway"]["query"]["query"] == "label_values(edgestream_gateway_info, gateway)"
    assert variables["instance"]["hide"] == 2 and "$gateway" in variables["instance"]["query"]["query"]
    ids = [p["id"] for p in checks.panels(d)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells: set[tuple[int, int]] = set()
    for p in checks.panels(d):
        gp = p["gridPos"]
        assert gp["x"] >= 0 and gp["x"] + gp["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(gp["x"], gp["x"] + gp["w"]) for y in range(gp["y"], gp["y"] + gp["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p.get("description"), f"{p['title']}: say what the panel shows"
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            # Every query is scoped to the selected gateway(s): no panel mixes in other gateways' series.
            assert '$instance"' in t["expr"], f"{p['title']}: {t['expr']}"
            assert not re.search(r"\[\d+[smh]\]", t["expr"]) or "changes(" in t["expr"] or "deriv(" in t["expr"], \
                f"{p['title']}: use $__rate_interval or $__range, not a fixed window: {t['expr']}"


def test_every_metric_the_dashboards_and_alerts_use_is_documented() -> None:
    import yaml

    doc = (ROOT / "docs" / "metrics.md").read_text()
    names: set[str] = set()
    for name in checks.DASHBOARDS:
        for q in checks.queries(name, checks.load(name)):
            names |= checks.metric_names(q.expr)
    for g in yaml.safe_load(checks.ALERTS.read_text())["groups"]:
        for r in g["rules"]:
            names |= checks.metric_names(r["expr"])
    names.discard("up")
    missing = sorted(n for n in names if f"`{n.removesuffix('_bucket')}`" not in doc)
    assert not missing, f"not in docs/metrics.md: {missing}"
