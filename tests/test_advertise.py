"""Which address a node advertises, that a derived one follows the network, and that
a member lost for over a day is still tried."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.shell import rejoin as cluster_module
from agent.shell.advertise import advertise_address, interface_addresses, is_derived
from agent.shell.cluster import Cluster
from agent.shell.config import parse_config

ADDRS = {"lo": ["127.0.0.1"], "eth0": ["10.0.0.7"], "wlan0": ["192.168.4.7", "192.168.4.8"]}


def cfg(**cluster: Any) -> Any:
    return parse_config({"cluster": cluster})


def test_configured_addresses_are_the_operators_word() -> None:
    c = cfg(advertise="10.9.9.9:7000")
    assert not is_derived(c)
    assert advertise_address(c, lambda: ADDRS, lambda: "10.0.0.7") == ("10.9.9.9", 7000)
    c = cfg(bind="10.0.0.7:7946")
    assert not is_derived(c)
    assert advertise_address(c, lambda: {}, lambda: None) == ("10.0.0.7", 7946)


def test_derived_from_the_default_route() -> None:
    c = cfg(bind="0.0.0.0:7946")
    assert is_derived(c)
    assert advertise_address(c, lambda: ADDRS, lambda: "192.168.4.8") == ("192.168.4.8", 7946)


def test_configured_interface_wins_over_the_default_route() -> None:
    c = cfg(bind="0.0.0.0:7946", interface="eth0")
    assert advertise_address(c, lambda: ADDRS, lambda: "192.168.4.8") == ("10.0.0.7", 7946)
    # the interface has no address yet: the route decides until it has one
    c = cfg(bind="0.0.0.0:7946", interface="eth1")
    assert advertise_address(c, lambda: ADDRS, lambda: "192.168.4.8") == ("192.168.4.8", 7946)


def test_no_gateway_uses_an_interface_address_not_link_local_first() -> None:
    c = cfg(bind="0.0.0.0:7946")
    addrs = {"eth0": ["169.254.10.1"], "lo": ["127.0.0.1"], "usb0": ["10.1.1.2"]}
    assert advertise_address(c, lambda: addrs, lambda: None) == ("10.1.1.2", 7946)
    addrs = {"eth0": ["169.254.10.1"], "lo": ["127.0.0.1"]}
    assert advertise_address(c, lambda: addrs, lambda: None) == ("169.254.10.1", 7946)


def test_no_network_yet_is_loopback() -> None:
    c = cfg(bind="0.0.0.0:7946")
    assert advertise_address(c, lambda: {"lo": ["127.0.0.1"]}, lambda: None) == (
        "127.0.0.1",
        7946,
    )


def test_the_real_machine_gives_one_of_its_own_addresses() -> None:
    host, port = advertise_address(cfg(bind="0.0.0.0:7946"))
    assert port == 7946
    assert host in {ip for ips in interface_addresses().values() for ip in ips}


async def test_configured_loopback_with_remote_seeds_is_failing(tmp_path: Path) -> None:
    """bind = 127.0.0.1 and a seed on another host: a misconfiguration, said as failing
    (a derived loopback address is only "no network yet": tests/fleet covers that)."""
    c = parse_config(
        {
            "node": {"data_dir": str(tmp_path)},
            "cluster": {"bind": "127.0.0.1:0", "join": ["10.0.0.5"], "discover": False},
        }
    )
    cluster = Cluster(c, "n1")
    await cluster.start()
    try:
        level, reason = cluster.faults["advertise"]
        assert level == "failing"
        assert "127.0.0.1 is loopback but peers are not (10.0.0.5)" in reason
        assert not await cluster.follow_address()  # configured: never moved
    finally:
        await cluster.leave_and_stop(1.0)


async def test_a_member_failed_over_a_day_ago_is_still_tried(tmp_path: Path) -> None:
    """Serf forgets a failed member after 24 h; we keep trying one such member every
    LONG_LOST_INTERVAL, so two halves split for longer still join again."""

    def config(name: str) -> Any:
        return parse_config(
            {
                "node": {"name": name, "data_dir": str(tmp_path / name)},
                "cluster": {"bind": "127.0.0.1:0", "discover": False},
            }
        )

    a, b = Cluster(config("a"), "a"), Cluster(config("b"), "b")
    await a.start()
    await b.start()
    try:
        assert a.node is not None and b.node is not None
        now = asyncio.get_running_loop().time()
        day = cluster_module.RECONNECT_TIMEOUT
        for i in range(cluster_module.MAX_FAILED + 10):  # long gone, never answering
            a.rejoiner.failed[f"gone{i}"] = (("127.0.0.1", 1), now - day - 3600 - i)
        await a.rejoiner.reconnect_one(now)
        assert len(a.rejoiner.failed) == cluster_module.MAX_FAILED  # the oldest went
        assert (
            "gone0" in a.rejoiner.failed
            and f"gone{cluster_module.MAX_FAILED + 9}" not in a.rejoiner.failed
        )
        assert a.rejoiner._next_long_lost == now + cluster_module.LONG_LOST_INTERVAL
        a.rejoiner.failed = {f"gone{i}": (("127.0.0.1", 1), now - day - 60) for i in range(2)}
        a.rejoiner.failed["b"] = (("127.0.0.1", b.node.port), now - day - 60)
        for _ in range(100):  # one long-lost member per interval, b among them
            a.rejoiner._next_long_lost = 0.0  # the next interval
            await a.rejoiner.reconnect_one(now)
            if a.peers() == 1:
                break
        assert a.peers() == 1 and b.peers() == 1
    finally:
        await a.leave_and_stop(1.0)
        await b.leave_and_stop(1.0)
