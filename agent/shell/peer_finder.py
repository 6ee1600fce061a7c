"""Finding peers by mDNS and joining them: the glue between agent/shell/discovery.py (which
only advertises and browses) and the cluster.

mDNS runs only on a real network: on a loopback advertise address there is nobody to
find (a test, the demo), and a derived loopback address means the network is not up
yet (agent/shell/readdress.py restarts us when it is).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agent import __version__
from agent.domain import ROLE
from agent.shell.advertise import is_derived
from agent.shell.config import is_loopback

if TYPE_CHECKING:  # imported when mDNS is on: a node without it never loads zeroconf
    from agent.shell.cluster import Cluster
    from agent.shell.discovery import Discovery

log = logging.getLogger(__name__)

Address = tuple[str, int]


class PeerFinder:
    """Runs mDNS discovery for the cluster and joins the peers it finds."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.discovery: Discovery | None = None
        self._task: asyncio.Task[None] | None = None
        self._joining: set[Address] = set()

    def peers(self) -> list[Address]:
        """Whoever mDNS last showed us (for the joiner while alone)."""
        return self.discovery.peers() if self.discovery is not None else []

    def start(self) -> None:
        cluster = self.cluster
        config = cluster.config
        if not config.cluster.discover:
            return
        host = cluster.advertise[0]
        if is_loopback(host):
            if is_derived(config):
                log.warning(
                    "no network address yet: mDNS off, running alone on %s; "
                    "mDNS and joining start when the network comes up",
                    host,
                )
            else:  # a loopback-only cluster (tests, the demo): nobody to find on a network
                log.info("mDNS off: the advertise address %s is loopback", host)
            return
        from agent.shell.discovery import Discovery

        txt = {"role": ROLE, "version": __version__}
        if cluster.api_port:
            txt["api"] = str(cluster.api_port)
        self.discovery = Discovery(
            cluster=config.cluster.name,
            node_name=cluster.node_name,
            advertise=cluster.advertise,
            on_peer=self._on_discovered,
            on_fault=self._on_fault,
            interface=config.cluster.interface,
            txt=txt,
            alone=lambda: cluster.peers() == 0,
        )
        self._task = asyncio.create_task(self.discovery.run(), name="discovery")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.discovery is not None:
            await self.discovery.stop()

    async def restart(self) -> None:
        """After a move: advertise the new address."""
        await self.stop()
        self.discovery = None
        self.start()

    def _on_fault(self, reason: str | None) -> None:
        faults = self.cluster.faults
        before = faults.get("discovery")
        if reason is None:
            faults.pop("discovery", None)
        else:
            faults["discovery"] = ("degraded", reason)
        if faults.get("discovery") != before:
            self.cluster.changed()  # the surfaces refresh on change, not on a clock

    def _on_discovered(self, name: str, host: str, port: int) -> None:
        """mDNS saw a peer: join it unless it is us, already alive, or being joined. A
        member we hold as failed goes to the rejoiner, which tries it at once but at most
        once per FAST_INTERVAL (agent/shell/rejoin.py)."""
        cluster = self.cluster
        addr = (host, port)
        if addr == cluster.advertise or addr in self._joining or not cluster.may_join(addr):
            return
        if any(m.address == addr for m in cluster.alive_peers()):
            return
        if cluster.rejoiner.sighted(name, addr, asyncio.get_running_loop().time()):
            return
        self._joining.add(addr)
        cluster.spawn(self._join(name, addr))

    async def _join(self, name: str, addr: Address) -> None:
        node = self.cluster.node
        try:
            if node is not None and await node.join([addr]):
                log.info("joined %s at %s:%d (found by mDNS)", name, *addr)
        except TimeoutError:
            log.info("mDNS peer %s at %s:%d did not answer", name, *addr)
        finally:
            self._joining.discard(addr)
