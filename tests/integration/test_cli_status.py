"""`edgestream status` against a running gateway: the one-screen summary, rates from two samples, JSON, exit
codes (0 healthy, 3 degraded, 1 unreachable or refused) and one clear line on stderr when it fails."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import assert_clean_error, run
from tests.harness.gateway import running_gateway, simple_config
from tests.harness.procs import free_port


def test_status_of_a_healthy_gateway(tmp_path: Path) -> None:
    cfg = simple_config(str(tmp_path / "data"))
    cfg["http"] = {"listen": "127.0.0.1:0", "token": "tok"}
    with running_gateway(str(tmp_path), cfg) as gw:
        api = f"http://127.0.0.1:{gw.port}"
        r = run("status", "--api", api, "--token", "tok", "--sample", "0.5")
        assert r.code == 0, r.err
        lines = r.out.splitlines()
        assert lines[0].startswith("gateway  test-gw  edgestream ") and lines[0].endswith("READY")
        assert lines[1].startswith("summary  ") and "sources" in lines[1]
        assert any(line.startswith("disk     ") and str(tmp_path / "data") in line for line in lines)
        ingest = next(line for line in lines if line.startswith("ingest   "))
        assert "/s)" in ingest, "a rate from the two samples"
        sim = next(line for line in lines if line.startswith("sim "))
        assert "simulated" in sim and "running" in sim and "/s" in sim
        assert any(line.startswith("telemetry ") for line in lines)
        assert "mirror   not configured" in lines and "PROBLEM" not in r.out
        assert len(lines) < 40, "one screen"
        # the same from the environment, as JSON
        r = run("status", "--json", env={"EDGESTREAM_API": api, "EDGESTREAM_TOKEN": "tok"})
        assert r.code == 0
        doc = json.loads(r.out)
        assert doc["gateway"] == "test-gw" and doc["ready"] is True and doc["sources"][0]["name"] == "sim"
        # a wrong token: one line, exit 1
        r = run("status", "--api", api, "--token", "nope", "--sample", "0")
        assert_clean_error(r, "HTTP 401", "Bearer")


def test_status_of_a_degraded_gateway_exits_3_and_says_why(tmp_path: Path) -> None:
    cfg = simple_config(str(tmp_path / "data"))
    cfg["log"] = {"min_free_bytes": 1 << 60}  # an exabyte: this disk is always "full"
    cfg["topics"][0]["on_full"] = "reject_new"  # so the gateway keeps running and refusing
    with running_gateway(str(tmp_path), cfg) as gw:
        r = run("status", "--api", f"http://127.0.0.1:{gw.port}", "--sample", "0")
        assert r.code == 3, r.out + r.err
        assert "LOW" in r.out and "PROBLEM  disk free" in r.out and "below min_free_bytes" in r.out


def test_status_without_a_gateway_says_how_to_fix_it() -> None:
    r = run("status", "--api", f"http://127.0.0.1:{free_port()}", "--sample", "0")
    assert_clean_error(r, "cannot reach the gateway", "edgestream run", "EDGESTREAM_API")
