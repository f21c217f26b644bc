"""Running the real gateway (`edgestream run`) as a child process, the way systemd does.

`GatewayProcess` writes a TOML config into a temp dir, starts `edgestream run -c <file> --http-listen
127.0.0.1:0`, reads the bound HTTP port from the gateway's log, and waits for /readyz. Tests then scrape
/metrics, send SIGHUP/SIGTERM/SIGKILL, and read the data dir with the store API or the CLI.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.cli import EDGESTREAM

_HTTP_RE = re.compile(r"HTTP on [^\s:]+:(\d+)")


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def render_config(sections: dict[str, Any]) -> str:
    """{"gateway": {...}, "topics": [{...}], "sources": [{...}]} -> TOML text."""
    out: list[str] = []
    for name, body in sections.items():
        if isinstance(body, list):
            for item in body:
                out.append(f"[[{name}]]")
                out.extend(f"{k} = {toml_value(v)}" for k, v in item.items())
                out.append("")
        else:
            out.append(f"[{name}]")
            nested = {k: v for k, v in body.items() if isinstance(v, dict) and k.startswith("_table_")}
            out.extend(f"{k} = {toml_value(v)}" for k, v in body.items() if k not in nested)
            out.append("")
    return "\n".join(out)


class GatewayProcess:
    def __init__(self, workdir: str, sections: dict[str, Any], *, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config_path = os.path.join(workdir, "gateway.toml")
        self.log_path = os.path.join(workdir, "gateway.log")
        self.sections = sections
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._log_lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def data_dir(self) -> str:
        return str(self.sections["gateway"]["data_dir"])

    def write_config(self, sections: dict[str, Any] | None = None) -> None:
        if sections is not None:
            self.sections = sections
        with open(self.config_path, "w") as f:
            f.write(render_config(self.sections))

    def start(self, *, wait_ready: float = 60.0) -> GatewayProcess:
        self.write_config()
        self.port = None
        self._log_lines = []
        self.proc = subprocess.Popen(
            [EDGESTREAM, "run", "-c", self.config_path, "--http-listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **self.env},
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_log, args=(self.proc,), daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_ready(wait_ready)
        return self

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with open(self.log_path, "a") as f:
            for raw in proc.stderr:
                line = raw.decode(errors="replace")
                f.write(line)
                f.flush()
                self._log_lines.append(line)
                m = _HTTP_RE.search(line)
                if m and self.port is None:
                    self.port = int(m.group(1))

    def log_text(self) -> str:
        return "".join(self._log_lines)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if self.port is not None:
                try:
                    status, _ = self.get("/readyz")
                    if status == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"gateway not ready within {timeout} s:\n{self.log_text()[-3000:]}")

    def get(self, path: str, *, token: str | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> dict[str, float]:
        """Flat {"name{labels}": value} of the /metrics text."""
        status, body = self.get("/metrics")
        assert status == 200, body
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
        return out

    def metric_sum(self, prefix: str, **labels: str) -> float:
        total = 0.0
        for name, value in self.metrics().items():
            if not (name == prefix or name.startswith(prefix + "{")):
                continue
            if all(f'{k}="{v}"' in name for k, v in labels.items()):
                total += value
        return total

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        if self._reader:
            self._reader.join(5)
        return code

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self._reader:
            self._reader.join(5)


@contextmanager
def running_gateway(workdir: str, sections: dict[str, Any], **kw: Any) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(workdir, sections, **kw).start()
    try:
        yield gw
    finally:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.kill()


def simple_config(data_dir: str, *, sources: list[dict[str, Any]] | None = None,
                  topics: list[dict[str, Any]] | None = None, **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "gateway": {"id": "test-gw", "data_dir": data_dir, "shutdown_timeout_s": 20},
        "log": {"min_free_bytes": 1 << 20},
        "http": {"listen": "127.0.0.1:0"},
        "topics": topics if topics is not None else [
            {"name": "telemetry", "partitions": 2, "decoder": "json", "linger_ms": 2},
        ],
        "sources": sources if sources is not None else [
            {"name": "sim", "type": "simulated", "topic": "telemetry", "key": "{sensor}", "sensors": 10,
             "rate": 200},
        ],
    }
    cfg.update(sections)
    return cfg
