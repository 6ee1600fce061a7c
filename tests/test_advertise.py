"""Which address a node advertises, and that a derived one follows the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.advertise import advertise_address, is_derived
from agent.cluster import Cluster
from agent.config import parse_config

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


def test_the_real_machine_gives_a_usable_address() -> None:
    host, port = advertise_address(cfg(bind="0.0.0.0:7946"))
    assert host and port == 7946


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
