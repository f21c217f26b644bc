"""The gateway service end to end: `edgestream run` started as systemd would, stopped and reloaded by signals."""

from __future__ import annotations

import signal
import time

from edgestream.store import Log
from tests.cli import run
from tests.harness.gateway import GatewayProcess, running_gateway, simple_config
from tests.harness.procs import wait_until


def test_runs_ingests_and_stops_cleanly_on_sigterm(tmp_path) -> None:
    data = str(tmp_path / "data")
    with running_gateway(str(tmp_path), simple_config(data)) as gw:
        wait_until(lambda: gw.metric_sum("edgestream_records_in_total") >= 100, timeout=30,
                   what="100 simulated readings acknowledged")
        m = gw.metrics()
        assert m['edgestream_ready'] == 1.0
        assert m['edgestream_source_up{source="sim",type="simulated"}'] == 1.0
        assert gw.metric_sum("edgestream_log_fsyncs_total", topic="telemetry") > 0
        assert "process_resident_memory_bytes" in m
        status, body = gw.get("/readyz")
        assert status == 200 and b"records" in body
        t0 = time.monotonic()
        code = gw.stop()
        assert code == 0, gw.log_text()
        assert time.monotonic() - t0 < 25, "shutdown is bounded by shutdown_timeout_s"
        assert "stopped cleanly" in gw.log_text()
    with Log.open(data) as log:
        reports = log.recovery_reports()
        assert reports and all(r.clean for r in reports), [r.describe() for r in reports]
        total = sum(log.partition("telemetry", p).high_watermark for p in (0, 1))
        assert total >= 100
    assert run("check", data_dir=data).code == 0


def test_sighup_adds_a_source_and_a_bad_config_is_refused(tmp_path) -> None:
    data = str(tmp_path / "data")
    cfg = simple_config(data)
    with running_gateway(str(tmp_path), cfg) as gw:
        wait_until(lambda: gw.metric_sum("edgestream_records_in_total", source="sim") > 0, timeout=30,
                   what="first source delivering")
        cfg["sources"].append({"name": "sim2", "type": "simulated", "topic": "telemetry", "partition": "fixed:1",
                               "sensors": 3, "rate": 100, "seed": 7})
        gw.write_config(cfg)
        gw.signal(signal.SIGHUP)
        wait_until(lambda: gw.metric_sum("edgestream_records_in_total", source="sim2") > 20, timeout=30,
                   what="the source added by SIGHUP delivering")
        assert gw.metric_sum("edgestream_config_reloads_total") == 1
        before = gw.metric_sum("edgestream_records_in_total", source="sim")
        with open(gw.config_path, "w") as f:
            f.write("[gateway]\nlog_level = 'chatty'\n")
        gw.signal(signal.SIGHUP)
        wait_until(lambda: gw.metric_sum("edgestream_config_reload_errors_total") == 1, timeout=15,
                   what="the broken reload counted")
        wait_until(lambda: gw.metric_sum("edgestream_records_in_total", source="sim") > before, timeout=15,
                   what="the old config still running")
        assert "reload refused" in gw.log_text() and "log_level" in gw.log_text()
        assert gw.stop() == 0


def test_broken_config_and_locked_data_dir_fail_with_clear_messages(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[topics]]\nname = 't'\npartitions = -1\n[[sources]]\nname = 's'\ntype = 'simulated'\n"
                   "topic = 'missing'\n")
    r = run("run", "-c", str(bad))
    assert r.code == 1 and "Traceback" not in r.err
    assert "topics[0] (t).partitions" in r.err and "sources[0] (s).topic" in r.err
    r = run("config", "check", str(bad))
    assert r.code == 1 and "2 problem(s)" in r.err
    data = str(tmp_path / "data")
    with Log.open(data):
        gw = GatewayProcess(str(tmp_path), simple_config(data))
        gw.start(wait_ready=0)
        assert gw.proc is not None
        assert gw.proc.wait(60) != 0
        gw._reader.join(5)  # type: ignore[union-attr]
        assert "in use by another edgestream process" in gw.log_text()
        assert "Traceback" not in gw.log_text()


def test_sigkill_then_restart_recovers_and_raises_the_epoch(tmp_path) -> None:
    data = str(tmp_path / "data")
    cfg = simple_config(data)
    with running_gateway(str(tmp_path), cfg) as gw:
        wait_until(lambda: gw.metric_sum("edgestream_records_in_total") >= 50, timeout=30, what="ingesting")
        gw.kill()
    with running_gateway(str(tmp_path), cfg) as gw:
        assert gw.metric_sum("edgestream_recovery_epoch_bumps_total", topic="telemetry") == 2  # both partitions
        assert gw.metric_sum("edgestream_log_epoch", topic="telemetry") == 2
        assert gw.stop() == 0
