"""Which address peers should dial: the advertise address.

Configured (`[cluster] advertise`, or a specific `bind` host), it is the operator's
word and never changes. Otherwise it is *derived* from the network, and a Pi's network
changes under it: it may boot before its DHCP lease, get a new lease after an outage,
or sit on a switch with static addresses and no gateway. The cluster re-derives it
every second and moves when it changes (agent/shell/cluster.py `follow_address`).

Derived, in order:
1. `[cluster] interface` set: that interface's first IPv4 address;
2. the source address of the default route (a route lookup; no packet is sent);
3. the first IPv4 address of any other interface, non-link-local first (a LAN with no
   gateway);
4. 127.0.0.1: no network yet. A loopback address is never announced to other hosts.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from agent.shell.config import Config

Addresses = Callable[[], dict[str, list[str]]]


def interface_addresses() -> dict[str, list[str]]:
    """Interface name -> its IPv4 addresses (via ifaddr, which zeroconf depends on)."""
    import ifaddr

    out: dict[str, list[str]] = {}
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                out.setdefault(adapter.nice_name, []).append(ip.ip)
    return out


def default_route_source() -> str | None:
    """The local address the kernel would send from to reach the internet, if it could."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # a route lookup only: UDP connect sends nothing
            return str(s.getsockname()[0])
        except OSError:
            return None


def is_derived(config: Config) -> bool:
    """Whether the advertise address comes from the network (and so may change)."""
    return config.cluster.advertise is None and config.cluster.bind.host in ("0.0.0.0", "::", "")


def advertise_address(
    config: Config,
    addresses: Addresses = interface_addresses,
    route: Callable[[], str | None] = default_route_source,
) -> tuple[str, int]:
    """(host, port) to advertise; port 0 means "the port gossip bound"."""
    if config.cluster.advertise is not None:
        return config.cluster.advertise.host, config.cluster.advertise.port
    host, port = config.cluster.bind.host, config.cluster.bind.port
    if not is_derived(config):
        return host, port
    if config.cluster.interface:
        ips = addresses().get(config.cluster.interface)
        if ips:
            return ips[0], port
    source = route()
    if source is not None and not ipaddress.ip_address(source).is_loopback:
        return source, port
    candidates = [
        ipaddress.ip_address(ip)
        for name, ips in sorted(addresses().items())
        for ip in ips
        if not ipaddress.ip_address(ip).is_loopback
    ]
    if candidates:
        best = min(candidates, key=lambda ip: ip.is_link_local)  # stable: first wins ties
        return str(best), port
    return "127.0.0.1", port
