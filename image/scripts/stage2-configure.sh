#!/bin/sh
# Stage 2 of the image build, run inside the arm64 root (chroot, under qemu-user-static) by
# build.sh after it copied in image/rootfs/, the unit and the wheels (/tmp/wheels).
set -eu

# --- users: the agent's system user, in the gpio group the unit asks for ---------------------
getent group gpio >/dev/null || groupadd --system gpio
getent group edge-agent >/dev/null || groupadd --system edge-agent
getent passwd edge-agent >/dev/null ||
  useradd --system --gid edge-agent --groups gpio --home-dir /var/lib/edge-agent --no-create-home \
    --shell /usr/sbin/nologin --comment "edge-agent" edge-agent
# No password on any account: root is locked for passwords; ssh takes keys only.
usermod -p '*' root

# --- edge-agent in a venv with pinned versions ------------------------------------------
# --system-site-packages: Debian's python3-systemd (systemd-python has no wheels); every
# other package is installed from the pinned wheels, offline.
python3 -m venv --system-site-packages /opt/edge-agent/venv
/opt/edge-agent/venv/bin/pip install --quiet --no-index --no-cache-dir --find-links /tmp/wheels \
  --disable-pip-version-check -r /tmp/wheels/requirements.txt lgpio /tmp/wheels/edge_agent-*.whl
/opt/edge-agent/venv/bin/python -c 'import agent, aiohttp, gpiozero, lgpio, mmh3, msgpack, prometheus_client, systemd.daemon, systemd.journal, zeroconf; print("edge-agent", agent.__version__, "imports ok")'
# Gossip encryption is AES-GCM from the libcrypto that Python's ssl/_hashlib map (no
# cryptography package: agent/membership/aesgcm.py): seal and open one message here, so an
# image whose Python lacks that libcrypto fails the build, not the first boot.
/opt/edge-agent/venv/bin/python -c 'import os, ssl; from agent.membership.aesgcm import AesGcm, libcrypto_path; g = AesGcm(os.urandom(32)); n = os.urandom(12); assert g.open(n, g.seal(n, b"gossip", b"ad"), b"ad") == b"gossip"; assert g.open(n, g.seal(n, b"gossip"), b"other") is None; print("AES-GCM through", libcrypto_path())'
# systemd-python is a dependency here, not an option: the agent must notify and log through
# it, never through its fallback for machines without libsystemd.
/opt/edge-agent/venv/bin/python -c 'import systemd.daemon, agent.shell.systemd as s; assert s.notify_function() is systemd.daemon.notify, "agent.shell.systemd fell back: systemd-python missing"'
/opt/edge-agent/venv/bin/pip freeze --all > /opt/edge-agent/requirements.installed.txt
ln -sf /opt/edge-agent/venv/bin/edge-agent /usr/local/bin/edge-agent
/opt/edge-agent/venv/bin/edge-agent check-config /etc/edge-agent/agent.toml

# --- services -----------------------------------------------------------------------------
systemctl enable edge-agent.service edge-agent-boot-config.service ssh.service \
  systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
# Nothing that writes to the card or reaches the network on a timer of its own: apt runs
# when the operator (or Ansible) says so.
systemctl mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
systemctl disable e2scrub_all.timer e2scrub_reap.service >/dev/null 2>&1 || true
ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf

# --- per-board identity: made at first boot, never shipped --------------------------------
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id          # empty: systemd makes a new one at first boot
rm -f /var/lib/dbus/machine-id
ln -sf /etc/machine-id /var/lib/dbus/machine-id
echo localhost > /etc/hostname   # a factory default: boot-config replaces it (pi-<serial>)
cat > /etc/hosts <<'EOF'
127.0.0.1	localhost
127.0.1.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
rm -f /var/lib/systemd/random-seed /var/lib/systemd/credential.secret
# journald keeps its journal in RAM (journald.conf.d); without this directory even a
# Storage=auto override would stay volatile.
rm -rf /var/log/journal

# --- smaller and quieter ------------------------------------------------------------------
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/lib/dpkg/*-old
rm -rf /var/log/apt/* /var/log/dpkg.log /var/log/alternatives.log /var/log/bootstrap.log
rm -rf /root/.cache /tmp/* 2>/dev/null || true
find /var/log -type f -name '*.log' -size +0 -exec truncate -s 0 {} + 2>/dev/null || true
