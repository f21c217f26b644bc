#!/usr/bin/env bash
# Installs the real services the tests and the demo run against (Debian/Raspberry Pi OS packages).
# Idempotent: does nothing when every command is already there. Needs root (or sudo) the first time.
set -euo pipefail

# command -> Debian package
declare -A wanted=(
  [mosquitto]=mosquitto
  [mosquitto_pub]=mosquitto-clients
  [kcat]=kcat
  [promtool]=prometheus
  [nats-server]=nats-server
  [socat]=socat
  [java]=openjdk-17-jre-headless
  [mvn]=maven
  [openssl]=openssl
  [npm]=npm
  [node]=nodejs
  [systemd-analyze]=systemd
)
missing=()
for cmd in "${!wanted[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("${wanted[$cmd]}")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "error: need root to install ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
