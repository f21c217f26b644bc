"""The installed `edgestream` binary: `tier run|status`, `query` (formats, shell, refusals), a gateway that tiers
in the background and answers POST /query, and a gateway on a machine without pyarrow/duckdb."""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq
import pytest

from edgestream.store import CursorPosition, Log, TopicConfig
from edgestream.store.tier.testing import append_payloads
from tests import cli
from tests.harness.gateway import running_gateway, simple_config
from tests.harness.procs import wait_until

TS0 = 1_780_000_000_000
CONFIG = """[gateway]
id = "cli-gw"
data_dir = "{data}"
[[topics]]
name = "telemetry"
decoder = "json"
partitions = 2
[tier]
enabled = true
"""


@pytest.fixture
def setup(tmp_path: Any) -> Iterator[tuple[str, str]]:
    """A data dir with 2 sealed segments and an active one per partition, and a config naming the decoder."""
    data = str(tmp_path / "data")
    clock = [TS0]
    log = Log.open(data, wall_ms=lambda: clock[0])
    log.create_topic("telemetry", TopicConfig(partitions=2, segment_ms=1000, retention_ms=None))
    for rnd in range(3):
        for p in (0, 1):
            append_payloads(log, "telemetry", p, [b'{"sensor": "s%d", "v": %d}' % (i % 4, i) for i in range(100)]
                            + [b"not json"], ts0=TS0 + rnd * 1000)
        clock[0] += 2000
    log.close()
    config = str(tmp_path / "gateway.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(data=data))
    yield data, config


def test_tier_run_status_and_query_formats(setup: tuple[str, str], tmp_path: Any) -> None:
    data, config = setup
    r = cli.run("tier", "status", "-c", config, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["available"] and doc["files"] == 0 and not doc["tierer"]["running"]
    assert [p["backlog_segments"] for p in doc["topics"]["telemetry"]["partitions"]] == [2, 2]
    r = cli.run("tier", "run", "-c", config)
    assert r.code == 0, r.err
    assert "tiered 4 segments, 404 rows" in r.out
    assert "2 compactions" in r.out  # the records are from a past day: its small files were merged
    doc = json.loads(cli.run("tier", "status", "-c", config, "--json").out)
    assert doc["files"] == 2 and doc["topics"]["telemetry"]["decoder"] == "json"
    assert [p["tiered_upto"] for p in doc["topics"]["telemetry"]["partitions"]] == [202, 202]
    text = cli.run("tier", "status", "-c", config).out
    assert "telemetry" in text and "TIERED_UPTO" in text

    q = 'SELECT partition, count(*) AS n, count(DISTINCT "offset") AS d, count(decode_error) AS bad, sum(v) AS s ' \
        "FROM telemetry GROUP BY partition ORDER BY partition"
    r = cli.run("query", q, "-c", config, "--format", "json")
    assert r.code == 0, r.err
    assert [json.loads(x) for x in r.out.splitlines()] == [
        {"partition": p, "n": 303, "d": 303, "bad": 3, "s": 3 * sum(range(100))} for p in (0, 1)]
    r = cli.run("query", q, "-c", config, "--format", "csv")
    assert next(csv.reader(io.StringIO(r.out))) == ["partition", "n", "d", "bad", "s"]
    r = cli.run("query", q, "-c", config)
    assert r.out.splitlines()[0].split() == ["partition", "n", "d", "bad", "s"] and "(2 rows)" in r.out
    out = str(tmp_path / "r.parquet")
    r = cli.run("query", "SELECT * FROM telemetry WHERE sensor = 's1'", "-c", config, "--format", "parquet",
                "--output", out)
    assert r.code == 0 and "wrote 150 rows" in r.err, r.err
    assert pq.read_table(out).num_rows == 150
    r = cli.run("--data-dir", data, "query", "SELECT count(*) AS n FROM telemetry", "--format", "json", "--no-hot")
    assert json.loads(r.out) == {"n": 404}  # the cold tier alone (decoders from the manifest)


@pytest.mark.parametrize(("sql", "needle"), [
    ("SELECT * FROM read_csv('/etc/passwd')", "disabled by configuration"),
    ("COPY telemetry TO '/tmp/stolen.csv'", "COPY statements are not allowed"),
    ("INSTALL httpfs", "INSTALL and LOAD statements are not allowed"),
    ("SELECT * FROM nosuchtopic", "nosuchtopic"),
])
def test_query_errors_are_one_clear_line(setup: tuple[str, str], sql: str, needle: str) -> None:
    r = cli.run("query", sql, "-c", setup[1])
    cli.assert_clean_error(r, needle)


def test_query_shell(setup: tuple[str, str]) -> None:
    script = ".tables\nSELECT count(*) AS n\n  FROM telemetry;\n.schema telemetry\nDELETE FROM telemetry;\n" \
             ".format csv\nSELECT 41 + 1 AS answer;\n.quit\n"
    r = cli.run("query", "--shell", "-c", setup[1], input=script)
    assert r.code == 0, r.err
    assert "telemetry  (0 cold files, 606 hot rows)" in r.out
    assert "606" in r.out and "sensor  VARCHAR" in r.out
    assert "DELETE statements are not allowed" in r.out
    assert "answer\n42\n" in r.out


BLOCKER = """import sys
for _name in ("pyarrow", "duckdb"):
    sys.modules[_name] = None  # as on armv7: `import pyarrow` fails and find_spec says it is absent
"""


def test_without_pyarrow_and_duckdb(setup: tuple[str, str], tmp_path: Any) -> None:
    data, config = setup
    hook = tmp_path / "nopyarrow"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": str(hook)}
    r = cli.run("tier", "status", "-c", config, env=env)
    assert r.code == 0 and "NOT INSTALLED" in r.out and "pip install 'edgestream[tier]'" in r.out, r.err
    for args in (("query", "SELECT 1"), ("tier", "run"), ("replay", "telemetry", "--to", "file:/tmp/x.csv")):
        cli.assert_clean_error(cli.run(*args, "-c", config, env=env), "pip install 'edgestream[tier]'")

    # A gateway configured to tier, on a machine without the extra: it runs, says so once, tiers nothing and
    # deletes nothing the tier has not got (a required tier cursor from an earlier life protects offset 0 on).
    with Log.open(data) as log:
        log.cursors.commit("tier", {("telemetry", p): CursorPosition(0) for p in (0, 1)}, required=True)
    sections = simple_config(data, topics=[{"name": "telemetry", "partitions": 2, "decoder": "json",
                                            "segment_ms": 1000, "retention_bytes": 0, "retention_ms": 1}],
                             tier={"enabled": True, "interval_s": 0.2})
    with running_gateway(str(tmp_path), sections, env=env) as gw:
        def segments() -> int:
            with Log.open(data, readonly=True) as ro:
                return min(len(p.segments) for p in ro.topic("telemetry").partitions)

        # Segments roll every second and retention (retention_bytes = 0) would delete every sealed one at each
        # maintenance round: wait until several such rounds have passed.
        wait_until(lambda: segments() >= 6, timeout=30, what="6 segments per partition")
        status, body = gw.get("/v1/status")
        assert status == 200 and json.loads(body)["tier_available"] is False
        assert gw.metrics()["edgestream_tier_available"] == 0.0
        assert gw.get("/tier/status")[0] == 404
        assert gw.stop() == 0
        assert gw.log_text().count("tier is not installed") == 1
    assert not os.path.exists(os.path.join(data, "tier", "manifest"))
    with Log.open(data, readonly=True) as log:
        for p in log.topic("telemetry").partitions:
            assert p.log_start == 0 and len(p.segments) > 3


def test_gateway_tiers_in_the_background_and_answers_queries(tmp_path: Any) -> None:
    data = str(tmp_path / "data")
    sections = simple_config(data, topics=[{"name": "telemetry", "partitions": 2, "decoder": "json",
                                            "segment_ms": 1000, "linger_ms": 2}],
                             tier={"enabled": True, "interval_s": 0.3, "query_max_rows": 50})
    with running_gateway(str(tmp_path), sections) as gw:
        wait_until(lambda: gw.metric_sum("edgestream_tier_segments_total") >= 4, timeout=30,
                   what="4 segments tiered")
        status, body = gw.get("/tier/status")
        assert status == 200 and json.loads(body)["files"] >= 4
        assert gw.metric_sum("edgestream_tier_rows_total", topic="telemetry") > 0
        assert gw.metric_sum("edgestream_tier_bytes", topic="telemetry") > 0

        def post(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            req = urllib.request.Request(f"http://127.0.0.1:{gw.port}/query", data=json.dumps(payload).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        code, doc = post({"sql": 'SELECT count(*) AS n, count(DISTINCT (partition, "offset")) AS d FROM telemetry'})
        assert code == 200, doc
        (n, d), = doc["rows"]
        assert n == d > 0 and doc["columns"][0]["name"] == "n"
        code, doc = post({"sql": "SELECT sensor, ts FROM telemetry"})
        assert code == 200 and doc["truncated"] and doc["row_count"] == 50
        code, doc = post({"sql": "DROP VIEW telemetry"})
        assert code == 400 and doc["error"] == "query_refused"
        code, doc = post({"sql": "SELECT nope FROM telemetry"})
        assert code == 400 and doc["error"] == "query_failed"
        # The CLI beside the running gateway: a read-only snapshot, still each offset once.
        r = cli.run("query", 'SELECT count(*) = count(DISTINCT (partition, "offset")) AS once FROM telemetry',
                    "--format", "json", data_dir=data)
        assert r.code == 0 and json.loads(r.out) == {"once": True}, r.err
        cli.assert_clean_error(cli.run("tier", "run", data_dir=data), "being tiered by another edgestream process")
        assert gw.stop() == 0
