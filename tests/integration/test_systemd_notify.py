"""What systemd hears from a running gateway, on a real AF_UNIX datagram socket standing in for $NOTIFY_SOCKET:
STATUS while recovering, READY=1 only once the log is recovered and the API answers, WATCHDOG=1 every
WatchdogSec/2 from the event loop (and not while the loop is stalled), STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgestream.gateway import config as gwconfig
from edgestream.gateway.sdnotify import Notifier
from edgestream.gateway.service import Gateway
from tests.harness.gateway import GatewayProcess, simple_config
from tests.harness.procs import wait_until


class FakeSystemd:
    """Binds the notify socket and records every message with its arrival time (monotonic)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode().split("\n")))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def times(self, field: str) -> list[float]:
        return [t for t, fields in list(self.messages) if field in fields]

    def fields(self) -> list[str]:
        return [f for _, fields in list(self.messages) for f in fields]

    def first(self, prefix: str) -> int:
        return next(i for i, f in enumerate(self.fields()) if f.startswith(prefix))


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    s = FakeSystemd(tmp_path / "notify")
    yield s
    s.close()


async def test_watchdog_pings_come_from_the_event_loop_and_stop_while_it_stalls(
        tmp_path: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2s: a ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    raw = simple_config(str(tmp_path / "data"))
    raw["http"] = {"enabled": False}
    gw = Gateway(gwconfig.parse(str(tmp_path / "gateway.toml"), raw), notifier=Notifier(systemd.path))
    await gw.start()
    try:
        await asyncio.sleep(0.8)  # real time must pass for real pings: the loop runs meanwhile
        before = systemd.times("WATCHDOG=1")
        assert len(before) >= 4, systemd.messages

        # A stalled event loop: a blocking call on it, as a bug or a hung library would make.
        stall_start = time.monotonic()
        time.sleep(1.5)
        stall_end = time.monotonic()
        await asyncio.sleep(0.6)
        during = [t for t in systemd.times("WATCHDOG=1") if stall_start + 0.05 < t < stall_end]
        after = [t for t in systemd.times("WATCHDOG=1") if t > stall_end]
        assert not during, "no ping while the loop is blocked: systemd would restart the service"
        assert len(after) >= 2, "pings resume with the loop"
        assert gw.heartbeat.statistics().max_lag_seconds >= 1.0, "the heartbeat saw the stall"
    finally:
        await gw.stop()
    fields = systemd.fields()
    assert fields[0] == "STATUS=recovering the log"
    assert fields.index("READY=1") > 0
    assert "STOPPING=1" in fields


def test_a_real_gateway_notifies_ready_after_recovery_and_stopping_on_sigterm(
        tmp_path: Path, systemd: FakeSystemd) -> None:
    gw = GatewayProcess(str(tmp_path), simple_config(str(tmp_path / "data")),
                        env={"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "1000000"})
    gw.start(wait_ready=0)
    ready_at = wait_until(lambda: (systemd.times("READY=1") or [0.0])[0], timeout=60, what="READY=1")
    # READY=1 is sent once the log is recovered and the API listens: /readyz agrees at once.
    wait_until(lambda: gw.port, timeout=10, what="the HTTP port in the log")
    status, _ = gw.get("/readyz")
    assert status == 200
    assert systemd.first("STATUS=recovering") < systemd.fields().index("READY=1")
    ready_status = next(f for _, fs in systemd.messages if "READY=1" in fs for f in fs if f.startswith("STATUS="))
    assert "records" in ready_status and "sources" in ready_status
    wait_until(lambda: len([t for t in systemd.times("WATCHDOG=1") if t > ready_at]) >= 3, timeout=30,
               what="three watchdog pings (every 0.5 s)")
    # A stopped process (SIGSTOP stands in for a hang) sends nothing; SIGCONT and the pings are back.
    gw.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    time.sleep(1.5)  # the hang being simulated
    gw.signal(signal.SIGCONT)
    resumed_at = time.monotonic()
    assert not [t for t in systemd.times("WATCHDOG=1") if stopped_at + 0.2 < t < resumed_at]
    wait_until(lambda: [t for t in systemd.times("WATCHDOG=1") if t > resumed_at], timeout=10,
               what="pings after SIGCONT")
    assert gw.stop() == 0, gw.log_text()
    fields = systemd.fields()
    stopping = fields.index("STOPPING=1")
    assert stopping > fields.index("READY=1")
    assert fields[stopping + 1].startswith("STATUS=stopping")
