"""Staying in the cluster without anyone's help: seeds while alone, and reconnects.

While a node sees no peer it joins the seeds (then remembered peers, then whoever mDNS
last showed), forever, with capped backoff: an isolated node rejoins by itself when the
network returns. And, as Serf does, every RECONNECT_INTERVAL it tries one member it saw
fail: after a partition each side has reaped the other, and only such a reconnect
brings the halves back together.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

from agent.domain import parse_hostport

if TYPE_CHECKING:
    from agent.shell.cluster import Cluster

log = logging.getLogger(__name__)

Address = tuple[str, int]

REJOIN_MIN, REJOIN_MAX = 1.0, 60.0
RECONNECT_INTERVAL = 30.0  # Serf's ReconnectInterval
# Serf's ReconnectTimeout: Serf forgets a failed member after this. We keep trying it, one
# such long-lost member every LONG_LOST_INTERVAL: otherwise two halves of a fleet split
# for longer (a dead uplink over a weekend) would never join again without mDNS
RECONNECT_TIMEOUT = 24 * 3600.0
LONG_LOST_INTERVAL = 600.0
MAX_FAILED = 256  # failed members remembered for reconnecting; the oldest go first


def resolve_seeds(seeds: Iterable[str]) -> list[Address]:
    out: list[Address] = []
    for seed in seeds:
        hp = parse_hostport(seed, default_port=7946)
        try:
            infos = socket.getaddrinfo(hp.host, hp.port, type=socket.SOCK_STREAM)
        except OSError as e:
            log.warning("cannot resolve seed %s: %s", seed, e)
            continue
        addr = infos[0][4]
        out.append((str(addr[0]), int(addr[1])))
    return out


class Rejoiner:
    """The cluster's joiner task and its memory of failed members."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.failed: dict[str, tuple[Address, float]] = {}  # name -> (addr, since)
        self._next_long_lost = 0.0

    def member_failed(self, name: str, addr: Address, now: float) -> None:
        self.failed[name] = (addr, now)

    def member_back(self, name: str) -> None:
        self.failed.pop(name, None)

    async def run(self) -> None:
        """The joiner task: seeds while alone, one reconnect every RECONNECT_INTERVAL."""
        delay = REJOIN_MIN
        next_seed = next_reconnect = 0.0
        loop = asyncio.get_running_loop()
        cluster = self.cluster
        while True:
            now = loop.time()
            running = cluster.node is not None
            if running:
                cluster.peer_store.flush()
                # first: joining seeds from a stale address (a new lease after the cable
                # came back) would only time out
                await cluster.follower.follow()
            if running and now >= next_seed:
                next_seed = now + REJOIN_MIN
                if cluster.has_contacts() and cluster.peers() == 0:
                    if await self.join_seeds():
                        delay = REJOIN_MIN
                    else:
                        log.info(
                            "no seed answered (nor a remembered or mDNS-found peer); retrying in"
                            " %.0fs",
                            delay,
                        )
                        next_seed = now + delay
                        delay = min(delay * 2, REJOIN_MAX)
            if running and now >= next_reconnect:
                next_reconnect = now + RECONNECT_INTERVAL
                await self.reconnect_one(now)
            await asyncio.sleep(1.0)

    async def join_seeds(self) -> bool:
        """While alone: seeds, then remembered peers, then whoever mDNS last showed us."""
        cluster = self.cluster
        node = cluster.node
        if node is None:
            return False
        addrs = await asyncio.to_thread(resolve_seeds, cluster.config.cluster.join)
        addrs += [p.address for p in cluster.remembered]
        addrs += cluster.finder.peers()
        addrs = [a for a in dict.fromkeys(addrs) if a != cluster.advertise and cluster.may_join(a)]
        if not addrs:
            return False
        try:
            n = await node.join(addrs)
        except TimeoutError:
            n = 0
        if n:
            log.info("joined the cluster through %d of %d seeds", n, len(addrs))
        return n > 0

    async def reconnect_one(self, now: float) -> None:
        """Try one member that failed in the last RECONNECT_TIMEOUT (as Serf does) and, at
        most every LONG_LOST_INTERVAL, one that failed before that."""
        if self.cluster.node is None:
            return
        while len(self.failed) > MAX_FAILED:
            oldest = min(self.failed, key=lambda n: self.failed[n][1])
            del self.failed[oldest]
        recent = sorted(n for n, (_, t) in self.failed.items() if now - t <= RECONNECT_TIMEOUT)
        lost = sorted(n for n, (_, t) in self.failed.items() if now - t > RECONNECT_TIMEOUT)
        tries = [random.choice(recent)] if recent else []
        if lost and now >= self._next_long_lost:
            self._next_long_lost = now + LONG_LOST_INTERVAL
            tries.append(random.choice(lost))
        await asyncio.gather(*(self._reconnect(n, self.failed[n][0]) for n in tries))

    async def _reconnect(self, name: str, addr: Address) -> None:
        node = self.cluster.node
        try:
            if node is not None and await node.join([addr]):
                log.info("reconnected to failed member %s at %s:%d", name, *addr)
        except TimeoutError:
            log.debug("failed member %s at %s:%d did not answer", name, *addr)
