"""Staying in the cluster without anyone's help: seeds while alone, and reconnects.

While a node sees no peer it joins the seeds (then remembered peers, then whoever mDNS
last showed), forever, with capped backoff: an isolated node rejoins by itself when the
network returns. After a partition each side has reaped the other, and only a reconnect
to a member it saw fail brings the halves back together. So for FAST_WINDOW after a
member fails it is retried about every FAST_INTERVAL (a few short attempts per pass,
the longest untried first): a flapping uplink heals within seconds of coming back.
After that, as Serf does, one such member every RECONNECT_INTERVAL, and past Serf's
RECONNECT_TIMEOUT one every LONG_LOST_INTERVAL. An mDNS announcement from a failed
member is tried at once (PeerFinder hands it to `sighted`).

The joiner's pass runs once a second only while it has something to do: alone (seeding),
a member failed within FAST_WINDOW, or a derived advertise
address (followed by readdress.py) on a system without rtnetlink; with it, the kernel's
report of an address, route or link change wakes the joiner (agent/shell/netwatch.py).
Otherwise it sleeps until the next slow reconnect falls due, remembered peers may be
saved (agent/shell/peers.py writes at most every MIN_INTERVAL), or until a membership
change wakes it (``poke``): an idle node in a healthy cluster makes no pass at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import random
import socket
from collections import Counter
from collections.abc import Container, Iterable, Mapping
from typing import TYPE_CHECKING

from agent.domain import parse_hostport
from agent.shell.advertise import is_derived
from agent.shell.alarm import Alarm
from agent.shell.netwatch import NetWatch

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
# Fast reconnect: for FAST_WINDOW after it failed, a member is tried about every
# FAST_INTERVAL. A pass starts at most FAST_PER_PASS attempts, with at most MAX_IN_FLIGHT
# running, each given up after ATTEMPT_TIMEOUT (a dropped SYN would otherwise hold a
# socket for the whole tcp_timeout): at most 2 connection attempts a second per node, for
# 10 minutes after the last failure it saw.
FAST_WINDOW = 600.0
FAST_INTERVAL = 1.0
FAST_PER_PASS = 2
MAX_IN_FLIGHT = 4
ATTEMPT_TIMEOUT = 2.0


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


def numeric_seeds(seeds: Iterable[str]) -> list[Address] | None:
    """The seeds' addresses when every one is an IP literal (no lookup needed, so no
    thread: the first join of a start goes out at once); None when a name needs DNS."""
    out: list[Address] = []
    for seed in seeds:
        try:
            hp = parse_hostport(seed, default_port=7946)
            out.append((str(ipaddress.ip_address(hp.host)), hp.port))
        except ValueError:
            return None
    return out


def fast_due(
    failed: Mapping[str, float],
    tried: Mapping[str, float],
    now: float,
    *,
    limit: int,
    busy: Container[str] = (),
    window: float = FAST_WINDOW,
    interval: float = FAST_INTERVAL,
) -> list[str]:
    """The failed members to try at ``now`` (``failed``: name -> when it failed; ``tried``:
    name -> our last attempt): those that failed within ``window``, not tried in the last
    ``interval`` and not being tried (``busy``), at most ``limit``. Round-robin: never
    tried first (the latest failure first), then the one tried longest ago."""
    due = [
        n
        for n, since in failed.items()
        if now - since <= window and n not in busy and now - tried.get(n, -math.inf) >= interval
    ]
    due.sort(key=lambda n: (tried.get(n, -math.inf), -failed[n], n))
    return due[: max(limit, 0)]


class Rejoiner:
    """The cluster's joiner task and its memory of failed members."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.failed: dict[str, tuple[Address, float]] = {}  # name -> (addr, since)
        self.tried: dict[str, float] = {}  # name -> when our last attempt started
        self.trying: set[str] = set()  # attempts running now
        # attempts by (kind, result): kind fast|slow|long_lost|mdns, result joined|no_answer
        self.attempts: Counter[tuple[str, str]] = Counter()
        self._next_long_lost = 0.0
        self._next_seed = 0.0
        self._seed_delay = REJOIN_MIN
        self._seeding = False
        self._alarm = Alarm()
        self.passes = 0  # joiner passes made (tests, and the wakeup account)
        self.netwatch = NetWatch(self.poke)  # a derived address: followed on change

    def member_failed(self, name: str, addr: Address, now: float) -> None:
        self.failed[name] = (addr, now)
        self.tried.pop(name, None)  # a new failure: first in line again
        self.poke()

    def poke(self) -> None:
        """Something the joiner acts on may have changed (a member failed, we may be
        alone, peers to save): make a pass now."""
        self._alarm.ring()

    def busy(self, now: float) -> bool:
        """Whether the joiner has work every FAST_INTERVAL (see the module docstring)."""
        cluster = self.cluster
        return (
            cluster.node is None
            or (is_derived(cluster.config) and not self.netwatch.active)
            or cluster.peers() == 0
            or any(now - since <= FAST_WINDOW for _, since in self.failed.values())
        )

    def member_back(self, name: str) -> None:
        self.failed.pop(name, None)
        self.tried.pop(name, None)

    async def run(self) -> None:
        """The joiner task: seeds while alone, and the reconnects; it never waits for a
        join itself (each runs as a task), so one unreachable address holds up nothing."""
        if is_derived(self.cluster.config):
            self.netwatch.start()
        try:
            await self._passes()
        finally:
            self.netwatch.stop()

    async def _passes(self) -> None:
        next_reconnect = 0.0
        loop = asyncio.get_running_loop()
        cluster = self.cluster
        while True:
            now = loop.time()
            running = cluster.node is not None
            if running:
                await cluster.peer_store.flush_off_loop()
                # first: joining seeds from a stale address (a new lease after the cable
                # came back) would only time out
                await cluster.follower.follow()
                now = loop.time()
            if running and now >= self._next_seed:
                self.seed_now(now)
            if running:
                self.reconnect_fast(now)
            if running and now >= next_reconnect:
                next_reconnect = now + RECONNECT_INTERVAL
                cluster.spawn(self.reconnect_one(now))
            self.passes += 1
            self._alarm.clear()
            if self.busy(now):
                at = now + FAST_INTERVAL
            elif self.failed:  # past their fast window: the slow schedule's next turn
                at = next_reconnect
            else:
                at = math.inf  # until poked
            save = cluster.peer_store.flush_at()  # a change that came too soon after a write
            await self._alarm.sleep(at if save is None else min(at, save))

    def seed_now(self, now: float) -> bool:
        """Start joining the seeds (a task) if we are alone and not joining already; the
        joiner loop does this every REJOIN_MIN at most, and launch.py once at start-up,
        before the rest of the node is built."""
        cluster = self.cluster
        if self._seeding:
            return False
        self._next_seed = now + REJOIN_MIN
        if not cluster.has_contacts() or cluster.peers() > 0:
            return False
        self._seeding = True
        cluster.spawn(self._seed(now))
        return True

    async def _seed(self, started: float) -> None:
        try:
            if await self.join_seeds():
                self._seed_delay = REJOIN_MIN
            else:
                log.info(
                    "no seed answered (nor a remembered or mDNS-found peer); retrying in %.0fs",
                    self._seed_delay,
                )
                self._next_seed = started + self._seed_delay
                self._seed_delay = min(self._seed_delay * 2, REJOIN_MAX)
        except Exception:  # a bug of ours, in a task nobody awaits: never hidden
            log.exception("joining the seeds failed")
        finally:
            self._seeding = False

    async def join_seeds(self) -> bool:
        """While alone: seeds, then remembered peers, then whoever mDNS last showed us."""
        cluster = self.cluster
        node = cluster.node
        if node is None:
            return False
        seeds = cluster.config.cluster.join
        addrs = numeric_seeds(seeds)
        if addrs is None:
            addrs = await asyncio.to_thread(resolve_seeds, seeds)
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

    def reconnect_fast(self, now: float) -> list[str]:
        """One fast pass: start attempts for the members `fast_due` names; returns them."""
        if self.cluster.node is None:
            return []
        names = fast_due(
            {n: since for n, (_, since) in self.failed.items()},
            self.tried,
            now,
            limit=min(FAST_PER_PASS, MAX_IN_FLIGHT - len(self.trying)),
            busy=self.trying,
        )
        for name in names:
            self._start(name, "fast", now, ATTEMPT_TIMEOUT)
        return names

    def sighted(self, name: str, addr: Address, now: float) -> bool:
        """mDNS shows ``name`` at ``addr``: if that is a member we hold as failed (by name,
        or else by address), try it at once, at most once per FAST_INTERVAL, and return
        True (handled here); False for anyone else."""
        member = name if name in self.failed else None
        if member is None:
            member = next((n for n, (a, _) in self.failed.items() if a == addr), None)
        if member is None:
            return False
        if member in self.trying or now - self.tried.get(member, -math.inf) < FAST_INTERVAL:
            return True
        old, since = self.failed[member]
        if member == name and addr != old:
            self.failed[member] = (addr, since)  # it moved: its own word is the newest
        self._start(member, "mdns", now, ATTEMPT_TIMEOUT)
        return True

    async def reconnect_one(self, now: float) -> None:
        """Try one member that failed in the last RECONNECT_TIMEOUT but is past its fast
        window (as Serf does) and, at most every LONG_LOST_INTERVAL, one that failed
        before that."""
        if self.cluster.node is None:
            return
        while len(self.failed) > MAX_FAILED:
            oldest = min(self.failed, key=lambda n: self.failed[n][1])
            del self.failed[oldest]
            self.tried.pop(oldest, None)
        recent = sorted(
            n
            for n, (_, t) in self.failed.items()
            if FAST_WINDOW < now - t <= RECONNECT_TIMEOUT and n not in self.trying
        )
        lost = sorted(
            n
            for n, (_, t) in self.failed.items()
            if now - t > RECONNECT_TIMEOUT and n not in self.trying
        )
        tries = [(random.choice(recent), "slow")] if recent else []
        if lost and now >= self._next_long_lost:
            self._next_long_lost = now + LONG_LOST_INTERVAL
            tries.append((random.choice(lost), "long_lost"))
        # the full tcp_timeout: these are rare, and a slow link still gets its chance
        await asyncio.gather(*(self._start(n, kind, now, None) for n, kind in tries))

    def _start(self, name: str, kind: str, now: float, timeout: float | None) -> asyncio.Task[None]:
        self.tried[name] = now
        self.trying.add(name)
        return self.cluster.spawn(self._reconnect(name, self.failed[name][0], kind, timeout))

    async def _reconnect(self, name: str, addr: Address, kind: str, timeout: float | None) -> None:
        node = self.cluster.node
        joined = False
        try:
            joined = node is not None and node.running and await node.join([addr], timeout) > 0
        except TimeoutError:
            pass
        except Exception:  # a bug of ours, in a task nobody awaits: never hidden
            log.exception("reconnecting to %s failed", name)
        finally:
            self.trying.discard(name)
        self.attempts[kind, "joined" if joined else "no_answer"] += 1
        if joined:
            log.info("reconnected to failed member %s at %s:%d (%s)", name, *addr, kind)
        else:
            log.debug("failed member %s at %s:%d did not answer (%s)", name, *addr, kind)
