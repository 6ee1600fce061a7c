#!/bin/bash
# Test hosts for the Ansible role: N systemd-nspawn containers booted with systemd (-b),
# each an overlayfs on the cached bookworm rootfs (tests/build-rootfs.sh), on a bridge
# inside a network namespace of their own, so no test traffic reaches a real network.
#
#   tests/hosts.sh up [N]     start N fresh hosts (default 3): edge1 10.213.7.11, edge2 .12 ...
#   tests/hosts.sh down       stop them and remove the namespace, mounts and overlays
#   tests/hosts.sh exec CMD   run CMD inside the namespace (e.g. ansible-playbook)
#
# The controller end of the bridge is 10.213.7.1; the hosts accept its ssh key
# ($CACHE/ssh/id_ed25519) as root. Run as root.
set -euo pipefail
CACHE=${EDGE_AGENT_ANSIBLE_CACHE:-/var/cache/edge-agent-ansible}
ROOTFS=$CACHE/rootfs
RUN=$CACHE/run
NS=${EDGE_AGENT_NETNS:-edge-agent-ansible}
BR=eabr0
NET=10.213.7

in_ns() { nsenter --net="/run/netns/$NS" "$@"; }

down() {
    local pid h sock
    # ansible's ssh connection masters: their hosts are about to go away
    for sock in "$RUN"/ssh-cp/*; do
        [[ -S $sock ]] && ssh -o ControlPath="$sock" -O exit dummy >/dev/null 2>&1 || true
    done
    for pidfile in "$RUN"/*/nspawn.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        # only the nspawn we started: its pid and its command line must both match
        if kill -0 "$pid" 2>/dev/null && grep -q systemd-nspawn "/proc/$pid/cmdline" 2>/dev/null; then
            kill -TERM "$pid" || true
        fi
    done
    for pidfile in "$RUN"/*/nspawn.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null && grep -q systemd-nspawn "/proc/$pid/cmdline" 2>/dev/null; then
            kill -KILL "$pid" || true
        fi
        rm -f "$pidfile"
    done
    for h in "$RUN"/*/; do
        [[ -d $h ]] || continue
        mountpoint -q "$h/merged" && umount "$h/merged"
    done
    rm -rf "$RUN"
    if [[ -e /run/netns/$NS ]]; then ip netns del "$NS"; fi
}

up() {
    local n=${1:-3} i h dir
    [[ -e $ROOTFS/.edge-agent-ansible-rootfs-v1 ]] || bash "$(dirname "$0")/build-rootfs.sh"
    down
    mkdir -p "$CACHE/ssh" "$RUN"
    [[ -e $CACHE/ssh/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C edge-agent-ansible-test -f "$CACHE/ssh/id_ed25519"
    ip netns add "$NS"
    in_ns ip link set lo up
    in_ns ip link add "$BR" type bridge
    in_ns ip addr add "$NET.1/24" dev "$BR"
    in_ns ip link set "$BR" up
    for i in $(seq 1 "$n"); do
        h=edge$i dir=$RUN/edge$i
        mkdir -p "$dir"/{upper,work,merged}
        mkdir -p "$dir"/upper/etc/systemd/network "$dir"/upper/root/.ssh
        echo "$h" > "$dir/upper/etc/hostname"
        systemd-id128 new > "$dir/upper/etc/machine-id"
        {
            echo "127.0.0.1 localhost"
            echo "127.0.1.1 $h"
            for j in $(seq 1 "$n"); do echo "$NET.$((10 + j)) edge$j"; done
        } > "$dir/upper/etc/hosts"
        printf '[Match]\nName=host0\n\n[Network]\nAddress=%s/24\nGateway=%s.1\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
            "$NET.$((10 + i))" "$NET" > "$dir/upper/etc/systemd/network/10-host0.network"
        install -m 600 "$CACHE/ssh/id_ed25519.pub" "$dir/upper/root/.ssh/authorized_keys"
        mount -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$dir/upper,workdir=$dir/work" "$dir/merged"
        # a simple command in the background: $! is systemd-nspawn itself (nsenter and
        # setsid exec it), which is what `down` stops
        nsenter --net="/run/netns/$NS" setsid systemd-nspawn -q -b -D "$dir/merged" --machine="$h" --register=no --keep-unit \
            --network-bridge="$BR" --console=read-only </dev/null >"$dir/console.log" 2>&1 &
        echo $! > "$dir/nspawn.pid"
    done
    # wait for sshd on every host
    for i in $(seq 1 "$n"); do
        for _ in $(seq 100); do
            if in_ns timeout 1 bash -c "</dev/tcp/$NET.$((10 + i))/22" 2>/dev/null; then continue 2; fi
            sleep 0.2
        done
        echo "edge$i: no ssh after 20s; console:" >&2
        tail -20 "$RUN/edge$i/console.log" >&2
        return 1
    done
    echo "hosts: $n up ($(for i in $(seq 1 "$n"); do printf 'edge%s=%s.%s ' "$i" "$NET" $((10 + i)); done))"
}

cmd=${1:-}
shift || true
case $cmd in
    up) up "$@" ;;
    down) down ;;
    exec) in_ns "$@" ;;
    *) sed -n '2,12p' "$0" >&2; exit 64 ;;
esac
