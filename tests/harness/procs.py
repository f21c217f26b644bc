"""Subprocesses, ports and deadlines for tests that run real services.

Nothing here knows about a particular service. A harness module (kafka.py, mosquitto.py, ...) renders its
config, picks ports with `free_port`, starts the daemon as a `ManagedProcess` whose output goes to a log file,
and waits for it with `wait_until`, which fails with a message naming what was awaited.

Processes are started in their own session (a Ctrl-C in the terminal reaches pytest, not the daemons) and,
where util-linux `setpriv` exists (it is Essential in Debian), with a parent-death signal, so a pytest that is
killed outright does not leave JVMs behind. The death signal fires when the *thread* that started the process
exits: start daemons from the main thread, as fixtures are.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

__all__ = [
    "ConditionTimeoutError",
    "Deadline",
    "ManagedProcess",
    "ProcessExitedError",
    "free_port",
    "port_open",
    "wait_until",
]


class Deadline:
    """A time budget measured on an injectable monotonic clock."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self._end


class ConditionTimeoutError(TimeoutError):
    """A condition did not become true within its deadline. `last_error` is the last exception the
    condition raised while being polled, if any: usually the most useful hint."""

    def __init__(self, what: str, seconds: float, last_error: BaseException | None) -> None:
        hint = f"; last error: {last_error!r}" if last_error is not None else ""
        super().__init__(f"{what}: not true within {seconds:g} s{hint}")
        self.what = what
        self.seconds = seconds
        self.last_error = last_error


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Poll `condition` until it returns something truthy and return that.

    Exceptions of the types in `ignore` count as "not yet" (a broker refusing connections while it starts);
    anything else propagates at once, so a condition can abort the wait by raising (a daemon that exited).
    """
    deadline = Deadline(timeout, clock)
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
        except ignore as exc:
            last_error = exc
        else:
            if result:
                return result
        if deadline.expired():
            raise ConditionTimeoutError(what, timeout, last_error)
        sleep(min(interval, deadline.remaining()))


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on now, for a daemon that must be told its port up front.

    Ports come from below the kernel's ephemeral range: a port from inside it (what binding port 0 returns)
    can be taken by any outgoing connection in the gap between this check and the daemon's bind, which on a
    busy machine does happen. Ports are never handed out twice by one process.
    """
    low = 15000
    high = max(low + 1000, _ephemeral_range()[0] - 1)
    for _ in range(200):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free TCP port on {host} in {low}-{high} after 200 tries")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ProcessExitedError(RuntimeError):
    """A managed process is not running when it should be. The message carries the tail of its log."""

    def __init__(self, name: str, returncode: int | None, log_path: Path, tail: str) -> None:
        super().__init__(f"{name} exited with status {returncode}; log {log_path}, last lines:\n{tail}")
        self.name = name
        self.returncode = returncode
        self.log_path = log_path
        self.tail = tail


_live: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        proc.kill()


class ManagedProcess:
    """One daemon run as a child process, its stdout and stderr appended to `log_path`.

    `start()` may be called again after the process ended (a broker restarted on the same data); each start
    appends a marker line to the log, so the tail shows which run it belongs to.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        name: str | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.name = name or Path(self.argv[0]).name
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.die_with_parent = die_with_parent
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        if self.running:
            raise RuntimeError(f"{self.name} is already running as pid {self.pid}")
        argv = self.argv
        setpriv = shutil.which("setpriv")
        if self.die_with_parent and setpriv:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            marker = f"=== {time.strftime('%H:%M:%S')} starting {self.name}: {' '.join(self.argv)}\n"
            log.write(marker.encode())
            log.flush()
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        _live.add(self)
        return self

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def check_running(self) -> None:
        """Raise ProcessExitedError (with the log tail) unless the process is alive."""
        if not self.running:
            raise ProcessExitedError(self.name, self.returncode, self.log_path, self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the process and everything in its session, and reap it."""
        self._signal(signal.SIGKILL)
        self.wait(10.0)

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`. Returns the exit status."""
        self._signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.returncode

    def wait(self, timeout: float) -> int | None:
        if self._popen is None:
            return None
        status = self._popen.wait(timeout)
        _live.discard(self)
        return status

    def _signal(self, signum: int) -> None:
        if not self.running:
            return
        assert self._popen is not None
        # The process leads its own session (start_new_session), so its group id is its pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._popen.pid, signum)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else f"exited {self.returncode}"
        return f"<ManagedProcess {self.name} {state}>"
