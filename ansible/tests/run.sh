#!/bin/bash
# make ansible-test: the edge_agent role and playbooks against 3 real hosts (systemd-nspawn
# containers booted with systemd, on a bridge in a network namespace of their own).
# Needs root. Uses Debian's apt mirror (host packages, the hosts' root filesystem, cached in
# /var/cache/edge-agent-ansible) and PyPI (ansible in ansible/.venv, the wheelhouses).
# Results: test-output/ansible/ (summary.txt and one log per playbook run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ansible_dir=$(dirname "$here")
repo=$(dirname "$ansible_dir")
CACHE=${EDGE_AGENT_ANSIBLE_CACHE:-/var/cache/edge-agent-ansible}
OUT=${OUT:-$repo/test-output/ansible}
[[ $(id -u) -eq 0 ]] || { echo "make ansible-test needs root (network namespace, containers)" >&2; exit 1; }
start=$(date +%s)

missing=()
for c in mmdebstrap:mmdebstrap systemd-nspawn:systemd-container ssh:openssh-client; do
    command -v "${c%%:*}" >/dev/null || missing+=("${c##*:}")
done
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if [[ ${#missing[@]} -gt 0 ]]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
bash "$ansible_dir/scripts/setup-venv.sh"
bash "$here/build-rootfs.sh"

rm -rf "$OUT" && mkdir -p "$OUT"
# the venv's pip builds the wheels (a fresh Debian has no pip of its own)
export PYTHON=$ansible_dir/.venv/bin/python
bash "$ansible_dir/scripts/build-wheelhouse.sh" "$CACHE/wheelhouse-v1"
bash "$ansible_dir/scripts/build-wheelhouse.sh" --local-version test2 "$CACHE/wheelhouse-v2"
echo "setup took $(( $(date +%s) - start ))s"

trap 'bash "$here/hosts.sh" down' EXIT
boot=$(date +%s)
bash "$here/hosts.sh" up 3
echo "hosts booted in $(( $(date +%s) - boot ))s"
rc=0
bash "$here/hosts.sh" exec "$ansible_dir/.venv/bin/python" "$here/fleet_test.py" \
    --v1 "$CACHE/wheelhouse-v1" --v2 "$CACHE/wheelhouse-v2" --out "$OUT" || rc=$?
echo "make ansible-test: wall time $(( $(date +%s) - start ))s (logs: $OUT)"
exit $rc
