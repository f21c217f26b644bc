"""A real Mosquitto for tests: generated config, ephemeral loopback port, temp persistence dir.

`MosquittoBroker` owns one broker process at a time on a fixed port and persistence dir, so a test can stop
it (SIGTERM: Mosquitto saves its database on the way out), kill it (SIGKILL: only the last autosave
survives), start it again on the same port and find the queued QoS 1 messages and persistent sessions still
there.

The config raises the defaults that lose data (DESIGN.md section 5): `persistence true` with an autosave
every second, `max_queued_messages 0` (no cap; the default 1000 drops messages for an offline client) and a
large `max_inflight_messages`. When Mosquitto cannot start, the fixture FAILS with the broker's log tail,
never skips.

`make_test_pki` makes a throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate
with the openssl CLI, for TLS and client-certificate tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO = os.environ.get("EDGESTREAM_MOSQUITTO", "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = os.environ.get("EDGESTREAM_MOSQUITTO_PASSWD", "/usr/bin/mosquitto_passwd")
START_TIMEOUT_S = 15.0  # generous: two shared cores, other suites starting JVMs at the same time


class MosquittoStartError(RuntimeError):
    """Mosquitto did not start listening; the message carries the command and the log tail."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener or client. `client_cert`/`client_key` are for client-certificate auth."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out and released; the broker binds it next (a small race, retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One Mosquitto process on 127.0.0.1:`port` with its config, log and persistence under `workdir`.

    `tls` turns the listener into a TLS one (and `require_certificate` asks clients for a certificate signed
    by the CA); `users` (name -> password) writes a password file and turns anonymous access off.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        users: dict[str, str] | None = None,
        max_inflight_messages: int = 1000,
        max_queued_messages: int = 0,
        autosave_interval_s: int = 1,
        extra_config: str = "",
    ) -> None:
        self.host = "127.0.0.1"
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir = self.workdir / "data"
        self.persistence_dir.mkdir(exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.tls = tls
        self.require_certificate = require_certificate
        self.users = dict(users or {})
        self.max_inflight_messages = max_inflight_messages
        self.max_queued_messages = max_queued_messages
        self.autosave_interval_s = autosave_interval_s
        self.extra_config = extra_config
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- config ----------------------------------------------------------------------------------------------

    def render_config(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            # Run as root, Mosquitto switches to the `mosquitto` user, which cannot write the temp dir.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {self.autosave_interval_s}",
            "autosave_on_changes false",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            f"max_inflight_messages {self.max_inflight_messages}",
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
        ]
        if self.users:
            pwfile = self.workdir / "passwords"
            lines.append(f"password_file {pwfile}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        if self.extra_config:
            lines.append(self.extra_config.strip())
        return "\n".join(lines) + "\n"

    def _write_password_file(self) -> None:
        pwfile = self.workdir / "passwords"
        pwfile.unlink(missing_ok=True)
        for i, (user, password) in enumerate(self.users.items()):
            args = [MOSQUITTO_PASSWD, "-b"] + (["-c"] if i == 0 else []) + [str(pwfile), user, password]
            subprocess.run(args, check=True, capture_output=True, timeout=30)
        pwfile.chmod(0o600)

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = START_TIMEOUT_S) -> MosquittoBroker:
        if self.running:
            raise RuntimeError(f"mosquitto already running on port {self.port}")
        if self.users:
            self._write_password_file()
        attempts = 1 if self._fixed_port or self.starts else 3
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                break
            except MosquittoStartError:
                # Another process may have taken the ephemeral port between free_port() and bind(): try a new
                # one. A restart keeps its port (clients reconnect to it), so it gets no second chance.
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
        self.starts += 1
        return self

    def _start_once(self, timeout: float) -> None:
        self.config_path.write_text(self.render_config())
        cmd = [MOSQUITTO, "-c", str(self.config_path)]
        stderr_path = self.workdir / "mosquitto.stderr"
        with open(stderr_path, "ab") as err:
            try:
                self._proc = subprocess.Popen(cmd, stdout=err, stderr=err, start_new_session=True)
            except OSError as exc:
                raise MosquittoStartError(f"cannot run {MOSQUITTO}: {exc}; install the Debian package "
                                          "`mosquitto`") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _port_open(self.host, self.port):
                return
            time.sleep(0.02)
        code = self._proc.poll()
        self._terminate(signal.SIGKILL)
        stderr = stderr_path.read_text(errors="replace")[-2000:] if stderr_path.exists() else ""
        raise MosquittoStartError(
            f"mosquitto did not listen on {self.host}:{self.port} within {timeout:.0f}s "
            f"(exit code {code}); command: {' '.join(cmd)}\n--- stderr ---\n{stderr}\n"
            f"--- log tail ---\n{self.log_tail()}"
        )

    def _terminate(self, sig: signal.Signals, timeout: float = 10.0) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait(timeout)
        return proc.returncode

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Mosquitto writes its persistence file, closes every connection and exits."""
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: like a power cut for the broker; what it held since the last autosave is gone."""
        self._terminate(signal.SIGKILL)

    def restart(self, timeout: float = START_TIMEOUT_S) -> MosquittoBroker:
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._terminate(signal.SIGTERM, timeout=5.0)

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.host}:{self.port}, running={self.running})"


# -- PKI ------------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def make_test_pki(directory: Path, *, client_cn: str = "edgestream-gw") -> TlsFiles:
    """A throwaway CA, a server certificate valid for 127.0.0.1 and localhost, and a client certificate."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=edgestream test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "localhost"), ("client", client_cn)):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    for key in ("ca.key", "server.key", "client.key"):
        (d / key).chmod(0o644)  # readable by the broker whatever user it runs as
    return TlsFiles(ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
                    client_cert=d / "client.pem", client_key=d / "client.key")


# -- fixtures -------------------------------------------------------------------------------------------


def _start_or_fail(broker: MosquittoBroker) -> MosquittoBroker:
    try:
        return broker.start()
    except MosquittoStartError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A fresh persistent Mosquitto for one test (starting one takes ~20 ms, so no sharing is needed)."""
    broker = _start_or_fail(MosquittoBroker(tmp_path / "mosquitto"))
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """`mosquitto_factory(tls=..., users=...)` starts brokers with their own config; all stopped after."""
    brokers: list[MosquittoBroker] = []

    def make(**kwargs: object) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"mosquitto-{len(brokers)}", **kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        return _start_or_fail(broker)

    try:
        yield make
    finally:
        for broker in brokers:
            broker.close()


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One broker shared by a whole run, for read-mostly tests that use their own client ids and topics."""
    broker = _start_or_fail(MosquittoBroker(tmp_path_factory.mktemp("mosquitto-session")))
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA, server and client certificates shared by the run's TLS tests."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))
