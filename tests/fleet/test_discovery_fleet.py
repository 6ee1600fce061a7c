"""Discovery on real (namespaced) hosts: mDNS alone, Serf's -discover, avahi-daemon
alongside, multicast blocked, addresses that move. See harness/edge_harness/fleet.py for
the harness."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edge_harness.fleet import Fleet, Host, wait
from tests.fleet.conftest import require_fleet, require_tool

MakeFleet = Callable[..., Fleet]


def test_five_hosts_find_each_other_by_mdns_alone(fleet: MakeFleet) -> None:
    f = fleet()
    hosts = f.add_many(5)  # no seeds anywhere
    f.start()
    took = f.wait_converged(30)
    for h in hosts:
        health = h.health()
        assert health["status"] == "ok", health
        assert health["cluster"]["peers"] == 4
    # no seeds anywhere, so the joins came from mDNS (a host the others find first may
    # be joined before its own browser has resolved anyone: check the fleet, not each)
    assert any("found by mDNS" in h.log() for h in hosts)
    print(f"5 hosts converged by mDNS in {took:.1f}s")


def test_serf_discover_finds_our_nodes(fleet: MakeFleet) -> None:
    require_tool("serf", "serf")
    f = fleet()
    hosts = f.add_many(5)
    f.start()
    f.wait_converged(30)
    serf = f.start_serf(node="serf1")
    everyone = {h.name for h in hosts} | {"serf1"}

    def serf_sees_all() -> bool:
        members = f.serf_members(serf)
        return all(members.get(n) == "alive" for n in everyone)

    wait(
        serf_sees_all,
        30,
        "serf members to list every node alive",
        lambda: str(f.serf_members(serf)),
    )

    # Serf found them by its own poll (it joins what its mDNS query returned), not only
    # because our browsers found it and joined it
    # (its poll listens for 1 s, then joins: the log line can trail our own joins)
    def serf_joined_by_mdns() -> bool:
        joined = [int(n) for n in re.findall(r"agent\.mdns: Joined (\d+) hosts", serf.log())]
        return bool(joined) and max(joined) >= 5

    wait(
        serf_joined_by_mdns,
        15,
        "serf's own mDNS poll to join our nodes",
        lambda: serf.log()[-3000:],
    )
    f.wait_converged(20, hosts, names=everyone)


def _start_avahi(f: Fleet, h: Host) -> None:
    """dbus-daemon (a private system bus) + avahi-daemon in the host's namespace."""
    bus = h.dir / "system_bus_socket"
    conf = h.dir / "dbus.conf"
    conf.write_text(
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
        f"<busconfig><type>system</type><listen>unix:path={bus}</listen>"
        "<auth>EXTERNAL</auth><policy context='default'><allow user='*'/>"
        "<allow own='*'/><allow send_destination='*'/><allow receive_sender='*'/>"
        "</policy></busconfig>\n"
    )
    avahi_conf = h.dir / "avahi-daemon.conf"
    avahi_conf.write_text(
        "[server]\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=eth0\nenable-dbus=yes\n"
        "ratelimit-interval-usec=1000000\nratelimit-burst=1000\n"
        "[publish]\npublish-hinfo=no\npublish-workstation=no\n"
    )
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={bus}"}
    f.spawn(
        h,
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--nopidfile"],
        (h.dir / "dbus.log").open("ab"),
    )
    wait(bus.exists, 10, "the private D-Bus")
    f.spawn(
        h,
        ["avahi-daemon", "-f", str(avahi_conf), "--no-drop-root", "--no-chroot", "--no-rlimits"],
        (h.dir / "avahi.log").open("ab"),
        env=env,
    )
    wait(lambda: "Server startup complete" in h.log(), 15, "avahi-daemon to start", h.log)


def test_coexists_with_avahi_daemon(fleet: MakeFleet, tmp_path: Path) -> None:
    require_tool("avahi-daemon", "avahi-daemon")
    require_tool("avahi-browse", "avahi-utils")
    require_tool("dbus-daemon", "dbus")
    f = fleet()
    a, _, _ = f.add_many(3)
    _start_avahi(f, a)  # avahi holds 5353 first, as on Raspberry Pi OS
    f.start()
    f.wait_converged(30)  # a advertised and discovered through avahi's port
    assert "mDNS unavailable" not in a.log()
    bus = a.dir / "system_bus_socket"
    env = ["env", f"DBUS_SYSTEM_BUS_ADDRESS=unix:path={bus}"]

    def browsed() -> str | None:
        res = f.exec(a, *env, "avahi-browse", "-rpt", f"_serf_{f.cluster}._tcp", check=False)
        resolved = [ln for ln in res.stdout.splitlines() if ln.startswith("=")]
        names = {ln.split(";")[3] for ln in resolved}
        return res.stdout if {"n1", "n2", "n3"} <= names else None

    out = wait(browsed, 20, "avahi-browse to resolve our services")
    line = next(ln for ln in out.splitlines() if ln.startswith("=") and ";n1;" in ln)
    fields = line.split(";")
    assert fields[7] == a.ip and fields[8] == "7946", line  # address, port
    assert "Serf 'edge' cluster" in fields[9] and "role=edge-agent" in fields[9], line
    # and the reverse: a node started after avahi (here n4 on a) is still found by all
    d = f.add("n4")
    d.start()
    f.wait_converged(30)


def test_cluster_with_multicast_blocked_converges_from_seeds(fleet: MakeFleet) -> None:
    require_fleet(nft=True)
    f = fleet()
    hosts = f.add_many(3)
    seed = f'join = ["{hosts[0].ip}:7946"]'
    for h in hosts:
        h.block_multicast()
        if h is not hosts[0]:
            h.extra_cluster = seed
    f.start()
    f.wait_converged(30)
    # discovery is broken and says so, but never stops the node
    for h in hosts:

        def degraded(h: Host = h) -> bool:
            health = h.health()
            return health["status"] == "degraded" and any("mDNS" in r for r in health["reasons"])

        wait(degraded, 10, f"{h.name} to report mDNS trouble", lambda h=h: str(h.health()))
    # when multicast comes back, discovery recovers by itself (retry) and clears the fault
    for h in hosts:
        h.unblock()


def test_node_restarted_after_peers_moved_finds_them_by_mdns(fleet: MakeFleet) -> None:
    f = fleet()
    n1, *others = f.add_many(4)
    f.start()
    f.wait_converged(30)
    n1.stop()  # graceful: it remembers the others' (old) addresses
    wait(lambda: (n1.dir / "data" / "peers.json").exists(), 5, "remembered peers")
    for h in others:  # every peer gets a new DHCP lease while n1 is off
        h.kill()
        h.move(f.new_ip())
        h.start()
    f.wait_converged(60, others, names={h.name for h in others})
    n1.start()
    f.wait_converged(30)
    for h in others:
        state, addr = n1.members()[h.name]
        assert (state, addr) == ("alive", h.ip)


def test_running_node_follows_a_new_dhcp_lease(fleet: MakeFleet) -> None:
    """A running node whose address changes is alive at the new one in every view (a
    stock Serf agent's too), without a restart, and the cluster saw it leave and rejoin
    (never fail)."""
    require_tool("serf", "serf")
    f = fleet()
    hosts = f.add_many(4)
    n3 = hosts[2]
    f.start()
    f.wait_converged(30)
    serf = f.start_serf(node="serf1")

    def serf_view() -> dict[str, tuple[str, str]]:
        out = f.exec(serf, "serf", "members", "-rpc-addr=127.0.0.1:7373", check=False).stdout
        return {
            p[0]: (p[2], p[1].rsplit(":", 1)[0])
            for p in map(str.split, out.splitlines())
            if len(p) >= 3
        }

    wait(
        lambda: serf_view().get(n3.name) == ("alive", n3.ip),
        30,
        "serf to see n3",
        lambda: str(serf_view()),
    )
    f.wait_converged(30, names={h.name for h in hosts} | {"serf1"})
    pid = n3.proc.pid if n3.proc else None
    old = n3.ip
    n3.move(f.new_ip())
    t0 = time.monotonic()

    def everyone_sees_the_new_address() -> bool:
        return all(h.members().get(n3.name) == ("alive", n3.ip) for h in hosts)

    wait(everyone_sees_the_new_address, 20, "n3 at its new address everywhere", f.describe)
    took = time.monotonic() - t0
    print(f"n3 moved {old} -> {n3.ip}: alive at the new address in every view {took:.2f} s later")
    wait(
        lambda: serf_view().get(n3.name) == ("alive", n3.ip),
        20,
        "serf to see the move",
        lambda: str(serf_view()),
    )
    assert n3.proc is not None and n3.proc.pid == pid and n3.alive()  # no restart
    assert "advertise address changed" in n3.log()
    for h in hosts:
        assert f"member {n3.name}: dead" not in h.log(), h.name  # a leave, not a failure
    assert "EventMemberFailed" not in serf.log()
    _, metrics = n3.get("/metrics")
    assert "edge_agent_advertise_moves_total 1.0" in metrics
    f.wait_converged(10, names={h.name for h in hosts} | {"serf1"})


def test_cable_back_with_a_new_lease(fleet: MakeFleet) -> None:
    """The cable is pulled long enough for the others to call the node dead, and when it
    goes back in DHCP hands out another address: the node is alive at that address in
    every view, without a restart."""
    f = fleet()
    hosts = f.add_many(3)
    n2 = hosts[1]
    others = [h for h in hosts if h is not n2]
    f.start()
    f.wait_converged(30)
    n2.unplug()
    wait(
        lambda: all(h.members().get(n2.name, ("",))[0] == "dead" for h in others),
        30,
        "the others to find n2 dead",
        f.describe,
    )
    n2.move(f.new_ip())  # the lease is renewed as the link comes back
    n2.plug()
    t0 = time.monotonic()
    wait(
        lambda: all(h.members().get(n2.name) == ("alive", n2.ip) for h in hosts),
        60,
        "n2 alive at its new address everywhere",
        f.describe,
    )
    print(f"cable back with a new lease: alive everywhere {time.monotonic() - t0:.2f} s later")
    assert "advertise address changed" in n2.log()
    f.wait_converged(10)


def test_node_booted_before_its_network_joins_when_the_lease_comes(fleet: MakeFleet) -> None:
    """A Pi reboots and its agent starts before the DHCP lease: no address at all. It
    runs alone on loopback, without mDNS, and says it is searching (not failing: its
    remembered peers are not a misconfiguration). When the lease comes it moves to it,
    starts mDNS and rejoins by itself."""
    f = fleet()
    a, _, late = f.add_many(3)
    f.start()
    f.wait_converged(30)
    late.stop()
    wait(lambda: (late.dir / "data" / "peers.json").exists(), 5, "remembered peers")
    ip = late.ip
    late.unaddress()
    late.start()
    wait(lambda: late.log().count(" ready: node") == 2, 20, "late to start again", late.log)
    assert "no network address yet: mDNS off" in late.log()
    assert late.alive_names() == {late.name}
    health = late.health()
    assert health["status"] != "failing", health
    assert health["led"]["state"] == "searching", health
    late.move(ip)
    t0 = time.monotonic()
    f.wait_converged(30)
    print(f"lease came: in the cluster {time.monotonic() - t0:.2f} s later")
    assert a.members()[late.name] == ("alive", late.ip)
    assert "mDNS: advertising" in late.log()
    assert late.health()["status"] == "ok", late.health()


def test_multicast_comes_back(fleet: MakeFleet) -> None:
    """A node whose mDNS was blocked at start recovers it without a restart."""
    require_fleet(nft=True)
    f = fleet()
    a, _ = f.add_many(2)
    a.block_multicast()
    f.start()
    wait(lambda: "mDNS unavailable" in a.log(), 10, "a to notice", a.log)
    a.unblock()
    # retried every 30 s; then a discovers b and the fault clears
    f.wait_converged(45)
    wait(lambda: a.health()["status"] == "ok", 10, "a healthy", lambda: str(a.health()))


def test_mdns_port_taken_is_degraded_not_fatal_and_recovers(fleet: MakeFleet) -> None:
    """Something holds 5353 without SO_REUSEADDR: zeroconf cannot bind; the node still
    runs (seeds), says why, and gets mDNS back by itself once the port is free."""
    f = fleet()
    a, b = f.add_many(2)
    blocker = f.spawn(
        a,
        [
            sys.executable,
            "-c",
            "import socket, time; s = socket.socket(socket.AF_INET, "
            "socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5353)); print('bound', flush=True); "
            "time.sleep(600)",
        ],
        (a.dir / "blocker.log").open("ab"),
    )
    wait(lambda: "bound" in a.log(), 10, "the blocker to hold 5353")
    a.extra_cluster = f'join = ["{b.ip}:7946"]'
    f.start()
    f.wait_converged(30)  # through the seed

    def degraded() -> bool:
        h = a.health()
        return h["status"] == "degraded" and any("mDNS unavailable" in r for r in h["reasons"])

    wait(degraded, 15, "a degraded with the mDNS reason", lambda: str(a.health()))
    blocker.kill()
    blocker.wait(5)
    wait(lambda: a.health()["status"] == "ok", 30, "mDNS back on a", lambda: str(a.health()))
    assert "mDNS: advertising" in a.log()
