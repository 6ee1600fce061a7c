#!/usr/bin/env bash
# Set up everything the project needs on a Debian/Ubuntu machine: system packages
# (only when run as root), then a venv in .venv with edge-agent installed editable.
# Idempotent and quick when nothing changed. Usage: scripts/bootstrap.sh [runtime|test]
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-runtime}"
VENV="${VENV:-.venv}"

# System packages. Runtime: what the agent itself needs to run and to build the
# systemd extra. Test: the real peers the tests use (serf, blackbox_exporter,
# systemd-analyze, openssl, iproute2 for network namespaces, haproxy for tests/lb,
# prometheus and prometheus-alertmanager (promtool included) for tests/monitoring).
runtime_pkgs=(python3 python3-venv python3-dev gcc pkg-config libsystemd-dev)
test_pkgs=(serf prometheus-blackbox-exporter prometheus prometheus-alertmanager haproxy systemd openssl iproute2 procps nftables avahi-daemon avahi-utils dbus chromium chromium-driver fonts-dejavu-core)

need_pkgs=("${runtime_pkgs[@]}")
[ "$profile" = test ] && need_pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: not root, so not installing system packages: ${missing[*]}" >&2
    echo "bootstrap: (run 'sudo make ...' once, or 'sudo apt-get install ${missing[*]}')" >&2
  fi
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: edge-agent needs Python >= 3.11; $PY is $("$PY" -V 2>&1)" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "bootstrap: '$PY -m venv' failed; install python3-venv (sudo apt-get install python3-venv)" >&2
    exit 1
  fi
fi

# systemd-python (the [systemd] extra) is a dependency wherever libsystemd is: it is how the
# agent notifies systemd and writes to the journal. Only a machine without libsystemd (macOS,
# a laptop without systemd) installs without it, and the agent falls back; never in CI.
extras="dev"
if pkg-config --exists libsystemd 2>/dev/null; then
  extras="dev,systemd"
elif [ "${CI:-}" = true ]; then
  echo "bootstrap: CI=true and libsystemd is missing: systemd-python cannot be built" >&2
  echo "bootstrap: (apt-get install libsystemd-dev pkg-config, or run this script as root)" >&2
  exit 1
elif [ "$(uname -s)" = Linux ]; then
  echo "bootstrap: libsystemd-dev/pkg-config missing: installing without systemd-python;" \
    "the agent uses its fallback (sudo apt-get install libsystemd-dev pkg-config)" >&2
fi
stamp="$VENV/.installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ harness/pyproject.toml -nt "$stamp" ]; then
  # the runtime, and the test/demo harness (harness/: `make demo`, tests, bench), which
  # is a distribution of its own so that a Pi's install leaves it out
  echo "bootstrap: installing edge-agent[$extras] and edge-agent-harness into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[$extras]" -e ./harness
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
if [ "$extras" = dev,systemd ] && ! "$VENV/bin/python" -c 'import systemd.daemon, systemd.journal'; then
  echo "bootstrap: systemd-python does not import in $VENV; rm -rf $VENV and run me again" >&2
  exit 1
fi
