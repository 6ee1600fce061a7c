"""mDNS discovery, the way `serf agent -discover=<cluster>` does it, plus continuous browsing.

We advertise `<node>._serf_<cluster>._tcp.local.` with port = gossip port, A = the
advertise address and TXT "Serf '<cluster>' cluster" (what Serf's hashicorp/mdns
server sends; our own keys follow it), so Serf agents find us and we find them.
Serf polls once at start and then every 60 s; we browse continuously, so a node
that appears is seen within about a second (its announcement), not a minute.

python-zeroconf binds 5353 with SO_REUSEADDR + SO_REUSEPORT, so it shares the port
with avahi-daemon (which Raspberry Pi OS runs). It answers Serf's legacy-unicast
queries (sent from an ephemeral port) by unicast, which is what Serf listens for.

Discovery is a convenience, never a dependency: any failure (no usable interface, port
5353 unusable, a zeroconf error, our instance name taken on the link) is logged,
reported as a fault the runtime shows as "degraded", and retried every RETRY seconds.
Seeds and remembered peers keep working meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.shell.advertise import interface_addresses

log = logging.getLogger(__name__)

RETRY_MIN, RETRY = 5.0, 30.0  # after a failure, try again: 5 s, 10 s, 20 s, then every 30 s
CHECK_INTERVAL = 30.0  # while running, re-check that we can still send multicast
ALONE_POLL_MIN, ALONE_POLL_MAX = 2.0, 30.0  # while we see no peer: query, backing off
RESOLVE_TIMEOUT_MS = 3000
MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353

Address = tuple[str, int]


class DiscoveryError(Exception):
    """A reason discovery cannot run right now (shown in /v1/health)."""


def service_type(cluster: str) -> str:
    """Serf's mdnsName: `_serf_<cluster>._tcp.local.`"""
    return f"_serf_{cluster}._tcp.local."


def serf_txt(cluster: str) -> str:
    """The single TXT string Serf advertises."""
    return f"Serf '{cluster}' cluster"


def host_label(name: str) -> str:
    """A DNS-safe label from the node name (for our never-answered multicast probe)."""
    label = re.sub(r"[^A-Za-z0-9-]", "-", name).strip("-")[:40] or "node"
    return f"{label}-edge-agent.local."


def choose_interface(
    advertise_ip: str,
    interface: str | None,
    addresses: Callable[[], dict[str, list[str]]] = interface_addresses,
) -> tuple[str, str]:
    """(interface name, IPv4 address) to run mDNS on; DiscoveryError if there is none.

    Configured: that interface (its first IPv4 address, the advertise address if it
    has it). Default: the interface that carries the advertise address.
    """
    addrs = addresses()
    if interface:
        ips = addrs.get(interface)
        if not ips:
            known = ", ".join(sorted(addrs)) or "none"
            raise DiscoveryError(
                f"interface {interface!r} has no IPv4 address (interfaces: {known})"
            )
        return interface, advertise_ip if advertise_ip in ips else ips[0]
    for name, ips in addrs.items():
        if advertise_ip in ips:
            return name, advertise_ip
    raise DiscoveryError(
        f"the advertise address {advertise_ip} is on no local interface; "
        "set [cluster] interface to choose one"
    )


def check_multicast(ip: str, probe_name: str = "edge-agent-check.local.") -> None:
    """Can we send to the mDNS group from this address? OSError says why not.

    Sends one query for an A record nobody owns (so nobody answers): this catches no
    route, an interface that is down or gone, and a firewall dropping our multicast,
    which a route lookup alone would miss.
    """
    qname = b"".join(
        bytes((len(label),)) + label for label in probe_name.encode().split(b".") if label
    )
    query = b"\0\0\0\0\0\1\0\0\0\0\0\0" + qname + b"\0\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        s.sendto(query, (MDNS_GROUP, MDNS_PORT))


class _Zeroconf(Protocol):
    """What we use of zeroconf.asyncio.AsyncZeroconf (a seam for tests)."""

    zeroconf: Any

    async def async_register_service(self, info: Any, *args: Any, **kwargs: Any) -> Any: ...
    async def async_unregister_all_services(self) -> None: ...
    async def async_close(self) -> None: ...


def _default_factory(ip: str) -> _Zeroconf:
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    return AsyncZeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)


@dataclass
class Discovery:
    """Advertise ourselves and browse for peers; `on_peer(name, host, port)` per sighting.

    `run()` never returns (cancel it) and never raises: problems go to `on_fault(reason)`,
    and `on_fault(None)` clears them.
    """

    cluster: str
    node_name: str
    advertise: Address
    on_peer: Callable[[str, str, int], None]
    on_fault: Callable[[str | None], None]
    interface: str | None = None
    txt: dict[str, str] = field(default_factory=dict)
    retry: float = RETRY
    retry_min: float = RETRY_MIN
    check_interval: float = CHECK_INTERVAL
    #: True while the node sees no peer: then we query actively (see `_watch`)
    alone: Callable[[], bool] = lambda: False
    factory: Callable[[str], _Zeroconf] = _default_factory
    addresses: Callable[[], dict[str, list[str]]] = interface_addresses
    #: what is advertised now: instance name -> addresses (read by the joiner while alone)
    seen: dict[str, list[Address]] = field(default_factory=dict)
    running: bool = False
    failures: int = 0
    polls: int = 0
    _zc: _Zeroconf | None = None
    _browser: Any = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def type_(self) -> str:
        return service_type(self.cluster)

    def peers(self) -> list[Address]:
        """Every address currently advertised by someone other than us."""
        out: list[Address] = []
        for addrs in self.seen.values():
            out.extend(a for a in addrs if a != self.advertise)
        return sorted(set(out))

    async def run(self) -> None:
        delay = min(self.retry_min, self.retry)
        while True:
            try:
                iface, ip = await self._start()
                delay = min(self.retry_min, self.retry)
                self.running = True
                self.on_fault(None)
                log.info(
                    "mDNS: advertising %s on %s (%s), browsing continuously",
                    self._instance(),
                    iface,
                    ip,
                )
                await self._watch(ip)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failures += 1
                reason = _describe(e)
                log.warning("mDNS unavailable: %s; retrying in %.0fs", reason, delay)
                self.on_fault(f"mDNS unavailable: {reason}")
            finally:
                self.running = False
                await self._close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry)

    async def stop(self) -> None:
        """Say goodbye (peers drop us from their caches at once) and close the sockets."""
        await self._close()

    # --- internals -----------------------------------------------------------------------

    def _probe_name(self) -> str:
        return "check-" + host_label(self.node_name)

    def _instance(self) -> str:
        return f"{self.node_name}.{self.type_}"

    async def _start(self) -> tuple[str, str]:
        from zeroconf import ServiceStateChange
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

        adv_ip, adv_port = self.advertise
        iface, ip = choose_interface(adv_ip, self.interface, self.addresses)
        try:
            check_multicast(ip, self._probe_name())
        except OSError as e:
            raise DiscoveryError(
                f"cannot send multicast on {iface} ({ip}): {e.strerror or e}"
            ) from None
        self._zc = self.factory(ip)
        props: dict[str | bytes, str | bytes | None] = {serf_txt(self.cluster).encode(): None}
        props.update(self.txt)
        info = AsyncServiceInfo(
            self.type_,
            self._instance(),
            port=adv_port,
            properties=props,
            # SRV target = the instance name itself, so the A record has the instance's
            # name. Serf's mDNS client (hashicorp/mdns) files each record under its own
            # name and aliases the SRV target only when it meets the SRV; zeroconf sends
            # SRV, TXT and A in set order, so an A before the SRV would be lost and Serf
            # would never see us. With one name for all three, order does not matter.
            # (It also never collides with the `<hostname>.local` avahi-daemon owns.)
            server=self._instance(),
            addresses=[socket.inet_aton(adv_ip)],
        )

        def changed(
            zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            if state_change is ServiceStateChange.Removed:
                self.seen.pop(name, None)
            else:
                self._spawn(self._resolve(name))

        # Browse first, then announce at once. RFC 6762 probing (three queries 250 ms
        # apart) would hold every announcement back ~0.9 s at each start; Serf's mDNS does
        # not probe either. A second host with our name is still caught, by the gossip
        # layer's NameGuard (agent/shell/names.py), which decides who keeps the name.
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, [self.type_], handlers=[changed])
        try:
            await self._zc.async_register_service(info, strict=False, cooperating_responders=True)
        except Exception as e:
            from zeroconf import NonUniqueNameException

            if isinstance(e, NonUniqueNameException):
                holders = [a for a in self.seen.get(self._instance(), []) if a != self.advertise]
                where = f" at {holders[0][0]}:{holders[0][1]}" if holders else ""
                raise DiscoveryError(
                    f"another host already advertises our name {self.node_name!r}{where}"
                ) from None
            raise
        return iface, ip

    async def _watch(self, ip: str) -> None:
        """Keep checking we can send (return by raising when not); query while alone.

        The browser's own queries back off towards an hour once it has its answers, and
        announcements sent while the link was down are lost. So while the node sees no
        peer (booted before the switch, cable back after an outage) we ask again, every
        2 s at first, backing off to every 30 s: the answer comes within one interval
        of the network returning, rather than at the browser's next scheduled query.
        """
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.check_interval
        poll_every = ALONE_POLL_MIN
        next_poll = loop.time() + poll_every
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            if now >= next_check:
                next_check = now + self.check_interval
                if not any(ip in ips for ips in self.addresses().values()):
                    raise DiscoveryError(f"address {ip} is gone from its interface")
                try:
                    check_multicast(ip, self._probe_name())
                except OSError as e:
                    reason = f"cannot send multicast from {ip}: {e.strerror or e}"
                    raise DiscoveryError(reason) from None
            if not self.alone():
                poll_every = ALONE_POLL_MIN
                next_poll = now + poll_every
            elif now >= next_poll:
                self.poll()
                poll_every = min(poll_every * 2, ALONE_POLL_MAX)
                next_poll = now + poll_every

    def poll(self) -> None:
        """One PTR query for our service type, as Serf's poll sends (answers go to the
        browser, which reports the peers it did not know)."""
        from zeroconf import DNSOutgoing, DNSQuestion

        zc = self._zc
        if zc is None:
            return
        out = DNSOutgoing(0, True)  # a multicast query
        out.add_question(DNSQuestion(self.type_, 12, 1))  # PTR, IN
        zc.zeroconf.async_send(out)
        self.polls += 1
        # answers for services already in the cache raise no browser event: offer the
        # joiner what we know again (it skips members it already has)
        for name, addrs in list(self.seen.items()):
            peer = name[: -len(self.type_) - 1] if name.endswith("." + self.type_) else name
            for host, port in addrs:
                if (host, port) != self.advertise:
                    self.on_peer(peer, host, port)

    async def _resolve(self, name: str) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo

        zc = self._zc
        if zc is None:
            return
        info = AsyncServiceInfo(self.type_, name)
        if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS) or not info.port:
            log.debug("mDNS: could not resolve %s", name)
            return
        addrs = [
            (a, int(info.port))
            for a in info.parsed_addresses(IPVersion.V4Only)
            if not ipaddress.ip_address(a).is_loopback
        ]
        old = self.seen.get(name)
        self.seen[name] = addrs
        peer = name[: -len(self.type_) - 1] if name.endswith("." + self.type_) else name
        for host, port in addrs:
            if (host, port) == self.advertise:
                continue  # ourselves
            if old is None or (host, port) not in old:
                log.info("mDNS: found %s at %s:%d", peer, host, port)
            self.on_peer(peer, host, port)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("mDNS resolve failed: %s", task.exception())

    async def _close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        browser, self._browser = self._browser, None
        zc, self._zc = self._zc, None
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.async_cancel()
        if zc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(zc.async_unregister_all_services(), 2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(zc.async_close(), 2.0)
        self.seen.clear()


def _describe(e: BaseException) -> str:
    if isinstance(e, DiscoveryError):
        return str(e)
    if isinstance(e, OSError):
        return f"{e.strerror or e} (port {MDNS_PORT} or the interface is unusable)"
    return f"{type(e).__name__}: {e}"
