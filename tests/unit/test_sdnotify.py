"""sd_notify messages on a real AF_UNIX datagram socket, the watchdog interval from the environment, the heartbeat."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgestream.gateway.sdnotify import Heartbeat, Notifier, watchdog_interval


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """What systemd holds: a bound datagram socket, and its path for $NOTIFY_SOCKET."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_watchdog_stopping_arrive_as_datagrams(systemd: tuple[str, socket.socket]) -> None:
    path, sock = systemd
    n = Notifier(path)
    assert n.enabled
    assert n.ready("1,000 records, 2/2 sources")
    assert _recv(sock) == ["READY=1", "STATUS=1,000 records, 2/2 sources"]
    assert n.watchdog()
    assert _recv(sock) == ["WATCHDOG=1"]
    assert n.extend_timeout(90)
    assert _recv(sock) == ["EXTEND_TIMEOUT_USEC=90000000"]
    assert n.stopping("stopping: flushing")
    assert _recv(sock) == ["STOPPING=1", "STATUS=stopping: flushing"]
    assert (n.sent, n.errors, n.watchdog_pings) == (4, 0, 1)
    n.close()


def test_a_status_with_newlines_stays_one_assignment(systemd: tuple[str, socket.socket]) -> None:
    path, sock = systemd
    Notifier(path).status("disk full\nREADY=1")
    assert _recv(sock) == ["STATUS=disk full READY=1"]


def test_abstract_socket_names_start_with_at() -> None:
    name = f"edgestream-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert Notifier("@" + name).ready()
        assert _recv(sock) == ["READY=1"]
    finally:
        sock.close()


def test_without_notify_socket_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.status("x")
    assert n.sent == n.errors == 0


def test_the_environment_names_the_socket(monkeypatch: pytest.MonkeyPatch, systemd: tuple[str, socket.socket]) -> None:
    path, sock = systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert Notifier().watchdog()
    assert _recv(sock) == ["WATCHDOG=1"]


def test_systemd_gone_is_counted_not_raised(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "nobody-listens"))
    assert not n.ready()
    assert not n.watchdog()
    assert (n.sent, n.errors, n.watchdog_pings) == (0, 2, 0)


@pytest.mark.timeout(30)
def test_a_full_receive_queue_does_not_block_the_event_loop(systemd: tuple[str, socket.socket]) -> None:
    path, _sock = systemd  # nobody reads: the queue fills up
    n = Notifier(path)
    t0 = time.monotonic()
    results = [n.status("x" * 200) for _ in range(5000)]
    assert not all(results), "the kernel queue of a datagram socket is bounded"
    assert n.errors > 0 and n.sent > 0
    assert time.monotonic() - t0 < 10, "sends to a full queue fail at once instead of blocking"


@pytest.mark.parametrize(("env", "pid", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 42, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, 42, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, 42, None),
    ({"WATCHDOG_USEC": "soon"}, 42, None),
    ({}, 42, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str], pid: int, expected: float | None) -> None:
    assert watchdog_interval(env, pid) == expected


def test_heartbeat_measures_how_late_the_loop_wakes() -> None:
    now = [100.0]
    hb = Heartbeat(5.0, 15.0, clock=lambda: now[0])
    now[0] = 105.2
    assert hb.beat() == pytest.approx(0.2)
    now[0] = 112.0  # expected at 110.2: 1.8 s late (a blocking call)
    assert hb.beat() == pytest.approx(1.8)
    now[0] = 116.9  # early wake-ups are not negative lag
    assert hb.beat() == 0.0
    st = hb.statistics()
    assert (st.beats, st.last_lag_seconds, st.watchdog_interval_seconds) == (3, 0.0, 15.0)
    assert st.max_lag_seconds == pytest.approx(1.8)
