"""The systemd unit passes `systemd-analyze verify`, rates at most 2.0 in `systemd-analyze security`, says what
the service needs (notify, watchdog, restart, state dir, dedicated user), and its sysusers.d entry makes the user.

This machine runs no systemd, so both tools work offline: `verify --root=<throwaway root>` (holding systemd's own
units, /bin/kill and a stand-in for the ExecStart binary) and `security --offline=true`.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edgestream.service"
SERIAL = ROOT / "systemd" / "edgestream-serial.conf"
SYSUSERS = ROOT / "systemd" / "edgestream.sysusers"
MAX_EXPOSURE = 2.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian package systemd)", pytrace=False)
    return path


def make_root(root: Path, unit_text: str, *, serial: bool = False) -> Path:
    """A directory systemd-analyze can treat as /: systemd's units, /bin/kill, the unit, its ExecStart."""
    (root / "usr" / "lib" / "systemd").mkdir(parents=True, exist_ok=True)
    if not (root / "usr" / "lib" / "systemd" / "system").exists():
        shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/kill", root / "bin" / "kill")
    exec_start = re.search(r"^ExecStart=(\S+)", unit_text, re.M)
    assert exec_start
    binary = root / exec_start.group(1).lstrip("/")
    if not binary.exists():  # a staged install brings the real one
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True, exist_ok=True)
    (units / "edgestream.service").write_text(unit_text)
    if serial:
        (units / "edgestream.service.d").mkdir(exist_ok=True)
        shutil.copy2(SERIAL, units / "edgestream.service.d" / "serial.conf")
    return root


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("systemd-analyze"), "verify", "--man=no", f"--root={root}", "edgestream.service"],
                          capture_output=True, text=True, timeout=60)


def exposure(root: Path) -> float:
    r = subprocess.run([_tool("systemd-analyze"), "security", "--offline=true", f"--root={root}", "--no-pager",
                        "edgestream.service"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = re.search(r"Overall exposure level for edgestream\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout
    return float(m.group(1))


@pytest.mark.parametrize("serial", [False, True], ids=["unit", "with-serial-drop-in"])
def test_unit_verifies_cleanly(tmp_path: Path, serial: bool) -> None:
    r = verify(make_root(tmp_path, UNIT.read_text(), serial=serial))
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """Meta: the offline verify does read our unit (a typo'd setting is reported)."""
    broken = UNIT.read_text().replace("Type=notify", "Type=notifyy").replace("WatchdogSec=30s", "WatchdogSecs=30s")
    r = verify(make_root(tmp_path, broken))
    assert "Failed to parse service type" in r.stderr and "WatchdogSecs" in r.stderr


@pytest.mark.parametrize("serial", [False, True], ids=["unit", "with-serial-drop-in"])
def test_security_exposure_is_at_most_2(tmp_path: Path, serial: bool) -> None:
    level = exposure(make_root(tmp_path, UNIT.read_text(), serial=serial))
    assert level <= MAX_EXPOSURE, f"systemd-analyze security rates the unit {level} (> {MAX_EXPOSURE})"


def test_security_rates_an_unhardened_unit_worse(tmp_path: Path) -> None:
    """Meta: the score does reflect the hardening lines."""
    text = "\n".join(line for line in UNIT.read_text().splitlines()
                     if not re.match(r"(Protect|Private|Restrict|SystemCall|Capability|NoNewPriv)", line))
    assert exposure(make_root(tmp_path, text)) > 5.0


def test_the_unit_says_what_the_service_needs() -> None:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    s = cp["Service"]
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["WatchdogSec"] == "30s" and s["Restart"] == "on-failure"
    assert s["User"] == "edgestream" and s["StateDirectory"] == "edgestream"
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes" and s["PrivateTmp"] == "yes"
    assert "kill -HUP $MAINPID" in s["ExecReload"]
    assert s["ExecStart"].endswith("run --config /etc/edgestream/gateway.toml")
    # The stop budget covers the gateway's own (shutdown_timeout_s defaults to 20 s) with room to spare.
    assert int(s["TimeoutStopSec"].removesuffix("s")) >= 20 + 15
    assert s["Environment"] == "EDGESTREAM_DATA_DIR=/var/lib/edgestream"
    assert cp["Install"]["WantedBy"] == "multi-user.target"


def test_sysusers_makes_an_unprivileged_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    r = subprocess.run([_tool("systemd-sysusers"), f"--root={tmp_path}", str(SYSUSERS)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    entry = next(line for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
                 if line.startswith("edgestream:"))
    _name, _, uid, gid, _, home, shell = entry.split(":")
    assert 0 < int(uid) < 1000 and int(gid) == int(uid), "a system user with its own group"
    assert (home, shell) == ("/var/lib/edgestream", "/usr/sbin/nologin")
