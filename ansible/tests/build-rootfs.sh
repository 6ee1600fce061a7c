#!/bin/bash
# Build (once) the Debian bookworm amd64 root filesystem the fleet test boots with
# systemd-nspawn -b. Only Debian's apt mirror is used. Cached under $CACHE/rootfs;
# delete that directory to rebuild. Run as root.
set -euo pipefail
CACHE=${EDGE_AGENT_ANSIBLE_CACHE:-/var/cache/edge-agent-ansible}
ROOTFS=$CACHE/rootfs
STAMP=$ROOTFS/.edge-agent-ansible-rootfs-v1
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [[ -e $STAMP ]]; then
    echo "rootfs: cached at $ROOTFS"
    exit 0
fi
command -v mmdebstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq mmdebstrap; }
command -v systemd-nspawn >/dev/null || apt-get install -y -qq systemd-container
rm -rf "$ROOTFS.tmp"
mkdir -p "$CACHE"
start=$(date +%s)
# python3-apt: ansible.builtin.apt needs it on the host; python3-systemd: the agent's
# [systemd] extra without compiling (the role makes the venv with --system-site-packages).
mmdebstrap --variant=minbase --architectures=amd64 \
    --include=systemd,systemd-sysv,dbus,python3,python3-venv,python3-systemd,python3-apt,openssh-server,iproute2,procps,ca-certificates \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd ssh' \
    --customize-hook='chroot "$1" systemctl mask systemd-resolved.service getty@.service console-getty.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer 2>/dev/null || true' \
    --customize-hook='rm -f "$1"/etc/machine-id "$1"/var/lib/dbus/machine-id; : > "$1"/etc/machine-id; : > "$1"/etc/fstab' \
    --customize-hook='mkdir -p "$1"/root/.ssh && chmod 700 "$1"/root/.ssh' \
    bookworm "$ROOTFS.tmp" \
    "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
    "deb ${MIRROR%/debian}/debian-security bookworm-security main"
touch "$ROOTFS.tmp/.edge-agent-ansible-rootfs-v1"
rm -rf "$ROOTFS"
mv "$ROOTFS.tmp" "$ROOTFS"
echo "rootfs: built in $(( $(date +%s) - start ))s at $ROOTFS ($(du -sh "$ROOTFS" | cut -f1))"
