"""systemd/install.sh, tried as a new user would, staged into a throwaway root (--destdir): a virtualenv with
edgestream from a freshly built wheel and its real dependencies from PyPI, the unit, the user, a config that
checks, a gateway that starts from that install and tells systemd READY=1; a second run upgrades and keeps the
config; the architecture rules refuse extras that have no wheels (armv7).
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.mosquitto import MOSQUITTO
from tests.harness.procs import ManagedProcess, free_port, port_open, wait_until
from tests.integration.test_systemd_unit import exposure, make_root, verify

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "systemd" / "install.sh"

pytestmark = pytest.mark.slow


def _install(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return next(out.glob("edgestream-*.whl"))


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    root = tmp_path_factory.mktemp("root")
    r = _install("--destdir", str(root), "--source", str(wheel), "--extras", "", "--serial", "--python", sys.executable)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not started" in r.stdout
    return root


def test_staged_install_lays_out_venv_unit_user_and_config(staged: Path) -> None:
    binary = staged / "opt" / "edgestream" / "venv" / "bin" / "edgestream"
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("edgestream ")
    unit = (staged / "etc" / "systemd" / "system" / "edgestream.service").read_text()
    assert "ExecStart=/opt/edgestream/venv/bin/edgestream run --config /etc/edgestream/gateway.toml" in unit
    assert (staged / "etc" / "systemd" / "system" / "edgestream.service.d" / "serial.conf").exists()
    assert any(line.startswith("edgestream:") for line in (staged / "etc" / "passwd").read_text().splitlines())
    conf = staged / "etc" / "edgestream" / "gateway.toml"
    assert oct(conf.stat().st_mode & 0o777) == "0o640", "the config may hold credentials: not world-readable"
    r = subprocess.run([str(binary), "config", "check", str(conf)], capture_output=True, text=True)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


def test_the_installed_unit_verifies_and_is_hardened(staged: Path) -> None:
    root = make_root(staged, (staged / "etc" / "systemd" / "system" / "edgestream.service").read_text(),
                     serial=True)
    r = verify(root)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert exposure(root) <= 2.0


def test_the_installed_gateway_starts_and_notifies_ready(staged: Path, tmp_path: Path) -> None:
    """What systemd would run, with the data dir moved into the test's temp dir and a stand-in notify socket."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    binary = staged / "opt" / "edgestream" / "venv" / "bin" / "edgestream"
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "EDGESTREAM_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen([str(binary), "run", "--config", str(staged / "etc" / "edgestream" / "gateway.toml"),
                             "--http-listen", "127.0.0.1:0"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        messages: list[str] = []

        def ready() -> bool:
            messages.extend(notify.recv(4096).decode().split("\n"))
            return "READY=1" in messages

        wait_until(ready, timeout=60, what="READY=1 from the installed gateway")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert "stopped cleanly" in log, log
    assert (tmp_path / "data" / "topics" / "telemetry").is_dir()


def test_running_it_again_upgrades_and_keeps_the_config(staged: Path, wheel: Path) -> None:
    conf = staged / "etc" / "edgestream" / "gateway.toml"
    edited = conf.read_text().replace('partitions = 4', 'partitions = 2  # edited by the operator')
    conf.write_text(edited)
    r = _install("--destdir", str(staged), "--source", str(wheel), "--extras", "", "--python", sys.executable)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"config: keeping {conf}" in r.stdout
    assert conf.read_text() == edited


@pytest.mark.parametrize(("arch", "extras", "ok", "needle"), [
    ("aarch64", "auto", True, "edgestream[kafka]"),  # 64-bit Raspberry Pi OS: the mirror's wheels exist
    ("aarch64", "kafka,tier", True, "edgestream[kafka,tier]"),
    ("armv7l", "auto", True, "edgestream on armv7l"),  # 32-bit: no extras by default
    ("armv7l", "tier", False, "no wheels for armv7l"),
    ("armv7l", "kafka", False, "no wheels for armv7l"),
    ("x86_64", "pandas", False, "unknown extra pandas"),
])
def test_extras_follow_the_architecture(tmp_path: Path, arch: str, extras: str, ok: bool, needle: str) -> None:
    r = _install("--destdir", str(tmp_path), "--arch", arch, "--extras", extras, "--dry-run")
    assert (r.returncode == 0) == ok, r.stdout + r.stderr
    assert needle in r.stdout + r.stderr
    if arch == "armv7l" and ok:
        assert "[" not in r.stdout.splitlines()[0], "no extras on armv7"
    assert not list(tmp_path.iterdir()), "a dry run changes nothing"


def test_an_old_python_is_refused_with_the_reason(tmp_path: Path) -> None:
    fake = tmp_path / "python3.9"
    fake.write_text("#!/bin/sh\ncase \"$2\" in *version_info\\ \\>=*) exit 1;; esac\necho 3.9\n")
    fake.chmod(0o755)
    r = _install("--destdir", str(tmp_path / "root"), "--python", str(fake), "--dry-run")
    assert r.returncode != 0 and "needs Python 3.11 or newer" in r.stderr, r.stderr


def test_the_mosquitto_settings_in_the_install_guide_are_accepted_and_keep_a_session(tmp_path: Path) -> None:
    """The `edgestream.conf` block of docs/install-raspberry-pi.md, run by the real Mosquitto (with the listener
    and the persistence dir moved into the test's temp dir): the broker starts with it, and QoS 1 messages queued
    for an offline persistent session survive a broker restart."""
    guide = (ROOT / "docs" / "install-raspberry-pi.md").read_text()
    block = re.search(r"/etc/mosquitto/conf\.d/edgestream\.conf`:\n\n```conf\n(.*?)```", guide, re.S)
    assert block, "the guide's Mosquitto block"
    port = free_port()
    conf = block.group(1).replace("listener 1883", f"listener {port} 127.0.0.1").replace(
        "persistence_location /var/lib/mosquitto/", f"persistence_location {tmp_path}/")
    assert "max_queued_messages 200000" in conf and "autosave_interval 60" in conf
    (tmp_path / "mosquitto.conf").write_text(f"user {pwd.getpwuid(os.geteuid()).pw_name}\n{conf}")
    broker = ManagedProcess([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")], log_path=tmp_path / "mosquitto.log")

    def start() -> None:
        broker.start()
        wait_until(lambda: broker.check_running() or port_open("127.0.0.1", port), timeout=15,
                   what="Mosquitto with the guide's settings listening")

    def mqtt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args, "-h", "127.0.0.1", "-p", str(port)], capture_output=True, text=True,
                              timeout=30)

    start()
    try:
        # A persistent session for the gateway, then the gateway goes away.
        assert mqtt("mosquitto_sub", "-i", "edgestream", "-c", "-q", "1", "-t", "sensors/#", "-W", "1").returncode \
            in (0, 27)  # 27: timed out waiting for messages, as intended
        for i in range(5):
            assert mqtt("mosquitto_pub", "-t", f"sensors/s{i}/t", "-q", "1", "-m", str(i)).returncode == 0
        broker.terminate()  # SIGTERM: Mosquitto saves its database on the way out
        start()
        got = mqtt("mosquitto_sub", "-i", "edgestream", "-c", "-q", "1", "-t", "sensors/#", "-C", "5", "-W", "10")
        assert got.returncode == 0 and sorted(got.stdout.split()) == ["0", "1", "2", "3", "4"], got
    finally:
        broker.kill()
    assert "Error" not in (tmp_path / "mosquitto.log").read_text()
