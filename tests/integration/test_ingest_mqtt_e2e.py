"""Ingestion through real Mosquitto into the real gateway: outages, backpressure, examples."""

from __future__ import annotations

import glob
import os
import subprocess
import time

import pytest

from edgestream.gateway import config as gwconfig
from tests.harness.gateway import running_gateway
from tests.harness.ingest import mqtt_gateway_config, numbers_in_log, start_publisher
from tests.harness.procs import wait_until
from tests.harness.proxy import CutMode, TcpProxy

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_broker_stopped_for_ten_seconds_mid_stream_loses_nothing(tmp_path, mosquitto) -> None:
    data = str(tmp_path / "data")
    count = 6000
    with running_gateway(str(tmp_path), mqtt_gateway_config(data, mosquitto.port)) as gw:
        pub = start_publisher(mosquitto.port, count=count, rate=400, log_path=str(tmp_path / "pub.log"))
        wait_until(lambda: len(numbers_in_log(data)) > 1000, timeout=60, what="first thousand stored")
        mosquitto.stop()  # SIGTERM: the broker saves its persistent sessions
        down_since = time.monotonic()
        wait_until(lambda: gw.metric_sum("edgestream_source_connected", source="plant-broker") == 0, timeout=30,
                   what="the gateway noticing the broker is gone")
        time.sleep(max(0.0, 10 - (time.monotonic() - down_since)))  # the outage itself is the test: 10 s
        mosquitto.start()
        assert pub.wait(120) == 0, (tmp_path / "pub.log").read_text()[-2000:]
        wait_until(lambda: len(numbers_in_log(data)) == count, timeout=120, interval=1.0,
                   what=f"all {count} numbers after the broker came back")
        assert gw.metric_sum("edgestream_source_reconnects_total", source="plant-broker") >= 1
        assert gw.stop() == 0
    seen = numbers_in_log(data)
    assert set(seen) == set(range(count))


def test_network_cut_between_gateway_and_broker(tmp_path, mosquitto) -> None:
    data = str(tmp_path / "data")
    count = 5000
    proxy = TcpProxy(("127.0.0.1", mosquitto.port)).start()
    try:
        cfg = mqtt_gateway_config(data, proxy.port, keepalive_s=5)
        with running_gateway(str(tmp_path), cfg) as gw:
            pub = start_publisher(mosquitto.port, count=count, rate=400, log_path=str(tmp_path / "pub.log"))
            wait_until(lambda: len(numbers_in_log(data)) > 800, timeout=60, what="first records stored")
            proxy.cut(CutMode.RESET)
            cut_at = time.monotonic()
            wait_until(lambda: gw.metric_sum("edgestream_source_connected", source="plant-broker") == 0,
                       timeout=30, what="the gateway seeing the cut")
            time.sleep(max(0.0, 10 - (time.monotonic() - cut_at)))
            proxy.restore()
            assert pub.wait(120) == 0
            wait_until(lambda: len(numbers_in_log(data)) == count, timeout=120, interval=1.0,
                       what=f"all {count} numbers after the network came back")
            assert gw.stop() == 0
    finally:
        proxy.stop()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_blocked_log_keeps_memory_flat_and_the_backlog_flows_once_space_returns(tmp_path, mosquitto) -> None:
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], check=True)
    try:
        data = str(mnt / "data")
        cfg = mqtt_gateway_config(data, mosquitto.port, max_inflight=200)
        cfg["log"] = {"min_free_bytes": 24 << 20, "disk_check_interval_ms": 100}
        with running_gateway(str(tmp_path), cfg) as gw:
            assert gw.proc is not None
            ballast = mnt / "ballast"
            with open(ballast, "wb") as f:  # leave less than min_free_bytes: the log blocks (on_full = block)
                f.write(b"\0" * (30 << 20))
            count = 20000
            pub = start_publisher(mosquitto.port, count=count, rate=2000, sensors=50,
                                  log_path=str(tmp_path / "pub.log"))
            wait_until(lambda: gw.metric_sum("edgestream_log_blocked", topic="telemetry") >= 1, timeout=60,
                       what="the log blocking on the full disk")
            rss = []
            for _ in range(8):
                rss.append(_rss_mib(gw.proc.pid))
                time.sleep(1.0)
            stored_while_blocked = len(numbers_in_log(data))
            assert pub.wait(120) == 0, "the publisher got its PUBACKs from the broker: messages wait there"
            rss.append(_rss_mib(gw.proc.pid))
            growth = max(rss) - rss[0]
            print(f"\nRSS while blocked (MiB): {[round(x, 1) for x in rss]}; growth {growth:.1f} MiB; "
                  f"{stored_while_blocked} stored while blocked")
            assert growth < 15, f"memory grew by {growth:.1f} MiB while the log was blocked"
            assert stored_while_blocked < count // 2
            ballast.unlink()
            wait_until(lambda: len(numbers_in_log(data)) == count, timeout=120, interval=1.0,
                       what="the backlog flowing once space returned")
            assert gw.metric_sum("edgestream_log_blocked", topic="telemetry") == 0
            assert gw.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "examples", "*.toml"))))
def test_every_example_config_loads(path: str) -> None:
    cfg = gwconfig.load(path)
    assert cfg.topics and cfg.sources
