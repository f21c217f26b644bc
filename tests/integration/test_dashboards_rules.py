"""The alert rules pass `promtool check rules` and their `promtool test rules` unit tests; every alert has a
firing test, a severity and a runbook section; every dashboard query is valid PromQL (checked offline by promtool,
so the mirror's and the tier's queries are parsed even where those extensions are not running).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASH = ROOT / "dashboards"
sys.path.insert(0, str(DASH))
import checks  # noqa: E402

RUNBOOK = ROOT / "docs" / "runbook.md"


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed (Debian package `prometheus`; `make system` installs it)",
                    pytrace=False)
    return tool


def _rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(checks.ALERTS.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules() -> None:
    r = subprocess.run([_promtool(), "check", "rules", str(checks.ALERTS)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in r.stdout


def test_promtool_unit_tests_of_the_alerts() -> None:
    r = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"], cwd=DASH / "tests", capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_tested_firing_and_has_severity_and_runbook() -> None:
    tests = yaml.safe_load((DASH / "tests" / "alerts_test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for case in tests for t in case["alert_rule_test"] if not t["exp_alerts"]}
    headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)}
    for rule in _rules():
        name = rule["alert"]
        assert name in fired, f"{name}: no promtool test where it fires"
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        anchor = rule["annotations"]["runbook_url"].partition("#")[2]
        assert rule["annotations"]["runbook_url"].startswith("docs/runbook.md#"), name
        assert anchor == name.lower() and anchor in headings, f"{name}: no '## {name}' section in docs/runbook.md"
    assert len(quiet) >= len(fired) // 2, "most alerts are also tested staying quiet"


def test_the_rule_tests_catch_a_broken_threshold(tmp_path: Path) -> None:
    """Meta: the unit tests fail when an alert is broken (here: the drop alert can never fire)."""
    broken = checks.ALERTS.read_text().replace("increase(edgestream_dropped_records_total[10m]) > 0",
                                               "increase(edgestream_dropped_records_total[10m]) > 1e9")
    (tmp_path / "alerts.yml").write_text(broken)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "alerts_test.yml").write_text((DASH / "tests" / "alerts_test.yml").read_text())
    r = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"], cwd=tmp_path / "tests",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "EdgestreamRecordsDropped" in r.stdout + r.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    values = {"datasource": "prometheus", "gateway": "gw", "instance": "127.0.0.1:8080", "topic": ".*",
              "target": ".*"}
    rules = []
    for name in checks.DASHBOARDS:
        d = checks.load(name)
        for i, q in enumerate([*checks.queries(name, d), *checks.variable_queries(name, d)]):
            rules.append({"record": f"check:{q.dashboard}:{i}", "expr": checks.grafana_to_promql(q.expr, values)})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    r = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(rules) > 80


def test_operands_split_comparisons_and_set_operators() -> None:
    assert checks.operands("sum by (instance) (rate(x[10m])) == 0\nand on(instance) sum by (instance) (y) > 0") == \
        ["sum by (instance) (rate(x[10m]))", "sum by (instance) (y)"]
    assert checks.operands("a > 0 and on(instance) (time() - b < 3600)") == ["a", "time() - b"]
    assert checks.operands('up{job="a > b"} == 0') == ['up{job="a > b"}']
    assert checks.operands("max_over_time(x[10m]) > 0.5 * y") == ["max_over_time(x[10m])", "0.5 * y"]
