#!/usr/bin/env bash
# Install (or upgrade) edgestream as a systemd service: a virtualenv under --prefix, the unit, its user, a config.
#
#   sudo systemd/install.sh                          # from PyPI, extras chosen for this machine, start it
#   sudo systemd/install.sh --source ./dist/edgestream-0.2.0-py3-none-any.whl --serial
#   systemd/install.sh --destdir /tmp/root --no-start   # stage into a directory (no root, no systemctl)
#   systemd/install.sh --arch armv7l --extras tier --dry-run   # what would happen on a Pi 2/3 with 32-bit OS
#
# Running it again upgrades the package and the unit and keeps /etc/edgestream/gateway.toml and the data.
# Files (under --destdir if given):
#   <prefix>/venv                                    Python virtualenv with edgestream and the chosen extras
#   /etc/systemd/system/edgestream.service           the unit (ExecStart points into <prefix>/venv)
#   /etc/systemd/system/edgestream.service.d/serial.conf   with --serial: serial devices and the dialout group
#   /etc/sysusers.d/edgestream.conf                  the `edgestream` system user, applied by systemd-sysusers
#   /etc/edgestream/gateway.toml                     only if absent: a starting config (never overwritten)
#   /var/lib/edgestream                              the data dir, made by systemd (StateDirectory=) at start
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX=/opt/edgestream
DESTDIR=""
EXTRAS="auto"
SOURCE="edgestream"
SERIAL=0
START=1
DRY=0
PYTHON="${PYTHON:-python3}"
ARCH="$(uname -m)"

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*"; }
run() { if [ "$DRY" = 1 ]; then echo "    would run: $*"; else "$@"; fi; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --destdir) DESTDIR="$2"; shift 2 ;;
    --extras) EXTRAS="$2"; shift 2 ;;
    --source) SOURCE="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --arch) ARCH="$2"; shift 2 ;;
    --serial) SERIAL=1; shift ;;
    --no-start) START=0; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
  esac
done

case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path (got $PREFIX)";; esac
if [ -n "$DESTDIR" ]; then
  DESTDIR="$(mkdir -p "$DESTDIR" && cd "$DESTDIR" && pwd)"
  START=0
elif [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo), or stage into a directory with --destdir"
fi

# -- which extras work here -------------------------------------------------------------------------------------
# PyPI has no armv7 wheels for pyarrow, duckdb (tier) nor confluent-kafka (kafka): pip would try to compile them
# for hours and fail. On armv7 the gateway runs without them (no mirror, no Parquet tier).
case "$ARCH" in
  aarch64|arm64|x86_64|amd64) KAFKA_OK=1; TIER_OK=1 ;;
  armv7l|armv6l|armhf) KAFKA_OK=0; TIER_OK=0 ;;
  *) KAFKA_OK=0; TIER_OK=0; echo "install.sh: warning: unknown architecture $ARCH: installing without extras" >&2 ;;
esac
if [ "$EXTRAS" = auto ]; then
  EXTRAS=""
  [ "$KAFKA_OK" = 1 ] && EXTRAS="kafka"
fi
for extra in ${EXTRAS//,/ }; do
  case "$extra" in
    kafka) [ "$KAFKA_OK" = 1 ] || die "the kafka extra needs confluent-kafka, which has no wheels for $ARCH; use a 64-bit OS (aarch64) for the Kafka mirror" ;;
    tier) [ "$TIER_OK" = 1 ] || die "the tier extra needs pyarrow and duckdb, which have no wheels for $ARCH; use a 64-bit OS (aarch64) for the Parquet tier" ;;
    modbus) ;;
    "") ;;
    *) die "unknown extra $extra (kafka, tier, modbus)" ;;
  esac
done

PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
  || die "$PYTHON not found: install python3 (apt install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "edgestream needs Python 3.11 or newer; $PYTHON is $PYVER (Raspberry Pi OS bookworm has 3.11)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "the venv module is missing: apt install python3-venv"

SPEC="$SOURCE"
[ -n "$EXTRAS" ] && SPEC="$SOURCE[$EXTRAS]"
VENV="$PREFIX/venv"
say "edgestream on $ARCH with Python $PYVER: $SPEC into $DESTDIR$VENV"

# -- the virtualenv -----------------------------------------------------------------------------------------------
if [ ! -x "$DESTDIR$VENV/bin/python" ]; then
  run mkdir -p "$DESTDIR$PREFIX"
  run "$PYTHON" -m venv "$DESTDIR$VENV"
fi
run "$DESTDIR$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$SPEC"

# -- unit, drop-in, user, config ---------------------------------------------------------------------------------
UNIT_DIR="$DESTDIR/etc/systemd/system"
say "unit: $UNIT_DIR/edgestream.service"
if [ "$DRY" = 0 ]; then
  mkdir -p "$UNIT_DIR"
  sed "s#/opt/edgestream/venv#$VENV#g" "$HERE/edgestream.service" > "$UNIT_DIR/edgestream.service.tmp"
  mv "$UNIT_DIR/edgestream.service.tmp" "$UNIT_DIR/edgestream.service"
  chmod 0644 "$UNIT_DIR/edgestream.service"
  if [ "$SERIAL" = 1 ]; then
    mkdir -p "$UNIT_DIR/edgestream.service.d"
    install -m 0644 "$HERE/edgestream-serial.conf" "$UNIT_DIR/edgestream.service.d/serial.conf"
  fi
  mkdir -p "$DESTDIR/etc/sysusers.d"
  install -m 0644 "$HERE/edgestream.sysusers" "$DESTDIR/etc/sysusers.d/edgestream.conf"
fi

say "user: edgestream (systemd-sysusers)"
if [ -n "$DESTDIR" ]; then
  run systemd-sysusers --root="$DESTDIR" "$DESTDIR/etc/sysusers.d/edgestream.conf"
else
  run systemd-sysusers /etc/sysusers.d/edgestream.conf
fi

CONF="$DESTDIR/etc/edgestream/gateway.toml"
if [ -e "$CONF" ]; then
  say "config: keeping $CONF"
else
  say "config: $CONF (a starting point: edit sources and topics)"
  if [ "$DRY" = 0 ]; then
    mkdir -p "$DESTDIR/etc/edgestream"
    install -m 0640 "$HERE/gateway.toml" "$CONF"
    if [ -z "$DESTDIR" ]; then chgrp edgestream "$DESTDIR/etc/edgestream" "$CONF"; chmod 0750 "$DESTDIR/etc/edgestream"; fi
  fi
fi
if [ "$DRY" = 0 ]; then
  "$DESTDIR$VENV/bin/edgestream" config check "$CONF" || die "fix $CONF, then run install.sh again"
fi

# -- start ----------------------------------------------------------------------------------------------------------
if [ "$START" = 1 ]; then
  run systemctl daemon-reload
  run systemctl enable edgestream.service
  run systemctl restart edgestream.service
  say "started: systemctl status edgestream; journalctl -u edgestream -f; $VENV/bin/edgestream status"
else
  say "not started. On the target: systemctl daemon-reload && systemctl enable --now edgestream"
fi
