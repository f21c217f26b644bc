"""A real Prometheus (Debian `prometheus`, /usr/bin/prometheus) for tests: loopback, ephemeral port, temp dir.

`prometheus` (session-scoped) scrapes the job "edgestream" every second from targets that tests add at run time
(`add_target("127.0.0.1:<port>")`, file-based service discovery re-read every second) and evaluates
dashboards/alerts.yml every second. Tests query it through its HTTP API (`query`, `query_range`, `rules`) exactly
as Grafana and Alertmanager would. A Prometheus that cannot start FAILS the test (never a skip), with its log tail.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .procs import ManagedProcess, ProcessExitedError, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "dashboards" / "alerts.yml"
START_TIMEOUT = 60.0

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: edgestream
    file_sd_configs:
      - files: [{targets}]
        refresh_interval: 1s
"""


class PrometheusError(AssertionError):
    """Prometheus refused a query or could not be reached."""


class PrometheusServer:
    def __init__(self, root: Path, binary: str, rules: Path = ALERTS) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets_file = root / "targets.json"
        self._targets: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._write_targets()
        (root / "prometheus.yml").write_text(CONFIG.format(rules=json.dumps(str(rules)),
                                                           targets=json.dumps(str(self.targets_file))))
        self.proc = ManagedProcess(
            [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle", "--log.level=warn",
             "--storage.tsdb.retention.time=1d"],
            log_path=root / "prometheus.log", name="prometheus",
        )

    def start(self) -> PrometheusServer:
        self.proc.start()

        def ready() -> bool:
            self.proc.check_running()
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200

        wait_until(ready, timeout=START_TIMEOUT, what=f"Prometheus ready on {self.url}",
                   ignore=(OSError, urllib.error.URLError))
        return self

    def stop(self) -> None:
        self.proc.terminate(10)

    # -- targets ------------------------------------------------------------------------------------------------

    def _write_targets(self) -> None:
        groups = [{"targets": [t], "labels": labels} for t, labels in sorted(self._targets.items())]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)  # Prometheus watches the file: never let it read half of one

    def add_target(self, address: str, **labels: str) -> None:
        with self._lock:
            self._targets[address] = labels
            self._write_targets()

    def remove_target(self, address: str) -> None:
        with self._lock:
            self._targets.pop(address, None)
            self._write_targets()

    def wait_scrapes(self, address: str, samples: int, timeout: float = 60.0) -> None:
        """Until Prometheus holds `samples` successful scrapes of `address` (within the last 5 minutes)."""
        expr = f'sum_over_time(up{{instance="{address}"}}[5m])'

        def enough() -> bool:
            self.proc.check_running()
            res = self.query(expr)
            return bool(res) and float(res[0]["value"][1]) >= samples

        wait_until(enough, timeout=timeout, what=f"{samples} scrapes of {address}", ignore=(PrometheusError,))

    # -- the HTTP API -------------------------------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 400/422: a PromQL error, with Prometheus' explanation
            try:
                detail = json.loads(exc.read()).get("error", "")
            except ValueError:
                detail = exc.reason
            raise PrometheusError(f"{path} {params}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            try:
                self.proc.check_running()
            except ProcessExitedError as died:
                raise PrometheusError(str(died)) from None
            raise PrometheusError(f"{url}: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        data = self.api("query", query=expr, **({"time": f"{at:.3f}"} if at is not None else {}))
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return list(data["result"])

    def rules(self) -> list[dict[str, Any]]:
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["activeTargets"])


def prometheus_binary() -> str:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("Prometheus is not installed (Debian package `prometheus`; `make system` installs it)",
                    pytrace=False)
    return binary


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    root = tmp_path_factory.mktemp("prometheus")
    server = PrometheusServer(root, prometheus_binary())
    failure = ""
    try:
        server.start()
    except (ProcessExitedError, TimeoutError) as exc:
        failure = f"{exc}\n{server.proc.log_tail()}"
    if failure:
        server.proc.kill()
        pytest.fail(f"Prometheus did not start: {failure}", pytrace=False)
    yield server
    server.stop()


def wait_for(server: PrometheusServer, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The first non-empty result of `expr` within `timeout` (series appear one scrape after they exist)."""
    deadline = time.monotonic() + timeout
    while True:
        res = server.query(expr)
        if res or time.monotonic() > deadline:
            return res
        time.sleep(0.5)
