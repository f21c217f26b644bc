"""sd_notify(3) for `Type=notify` units, in a few lines of our own (libsystemd bindings have no armv7 wheels).

What the gateway tells systemd, over the datagram socket named by $NOTIFY_SOCKET:

    STATUS=recovering the log        while partitions are recovered (start-up may take a while on a big tail)
    READY=1 + STATUS=<summary>       once recovery is done, sources run and the HTTP API listens
    WATCHDOG=1                       every WatchdogSec/2, sent by a task on the event loop, and only while the
                                     log writer is alive: a stalled loop or a dead writer stops the pings and
                                     systemd restarts the service (Restart=on-failure covers the watchdog)
    STATUS=<summary>                 when the one-line summary changes (`systemctl status edgestream`)
    STOPPING=1                       on SIGTERM, before flushing and marking the log clean

Without $NOTIFY_SOCKET (not under systemd) every call is a no-op that returns False. A leading '@' names an
abstract socket. The socket is non-blocking: if systemd's receive queue is full, a message is dropped and
counted rather than blocking the event loop (a lost WATCHDOG=1 is repaired by the next one).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        self.sent = 0
        self.errors = 0
        self.watchdog_pings = 0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> bool:
        if not self.address:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError:
            self.errors += 1  # systemd gone, restarting or its queue full: the watchdog decides, not us
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([_status_field(status)] if status else []))

    def status(self, status: str) -> bool:
        return self.notify(_status_field(status))

    def watchdog(self) -> bool:
        ok = self.notify("WATCHDOG=1")
        self.watchdog_pings += ok
        return ok

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([_status_field(status)] if status else []))

    def extend_timeout(self, seconds: float) -> bool:
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_field(text: str) -> str:
    # One datagram carries newline-separated assignments: a newline inside STATUS would start a new one.
    return "STATUS=" + " ".join(text.split())[:500]


def watchdog_interval(environ: dict[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between pings: half of $WATCHDOG_USEC, if the watchdog is on for this process (WatchdogSec=)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    target = env.get("WATCHDOG_PID")
    if not usec or (target and target != str(os.getpid() if pid is None else pid)):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


@dataclass(frozen=True, slots=True)
class HeartbeatStatistics:
    beats: int
    last_lag_seconds: float  # how late the last wake-up of the status loop was
    max_lag_seconds: float  # the worst since start: a loop that stalled for this long
    watchdog_interval_seconds: float  # 0 when systemd's watchdog is off


class Heartbeat:
    """Measures how late the event loop wakes a task that sleeps a fixed period.

    The status loop calls `beat()` after each `asyncio.sleep(period)`; anything beyond the period is time the
    loop spent on something else (a blocking call, a CPU-bound burst). The same loop sends WATCHDOG=1, so a lag
    longer than WatchdogSec is exactly what gets the service restarted; the gauge shows the near misses.
    """

    def __init__(self, period: float, watchdog: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.watchdog = watchdog or 0.0
        self._clock = clock
        self._expected = clock() + period
        self.beats = 0
        self.last_lag = 0.0
        self.max_lag = 0.0

    def beat(self) -> float:
        """Record a wake-up; returns its lag in seconds and expects the next one a period from now."""
        now = self._clock()
        lag = max(0.0, now - self._expected)
        self.beats += 1
        self.last_lag = lag
        self.max_lag = max(self.max_lag, lag)
        self._expected = now + self.period
        return lag

    def statistics(self) -> HeartbeatStatistics:
        return HeartbeatStatistics(self.beats, self.last_lag, self.max_lag, self.watchdog)
