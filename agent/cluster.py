"""The agent's place in the cluster: membership built from config, seeds, leave, views.

This is where the generic gossip layer meets the product: our tags (with the
`role = edge-agent` that placement uses to tell our nodes from Serf's), the
keyring file, joining seeds and rejoining while alone, the Serf courtesy of a
leave intent, and the read-only views for the API and /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent import __version__
from agent.advertise import advertise_address, is_derived
from agent.config import Config, is_loopback, parse_hostport
from agent.identity import NameGuard
from agent.membership.keyring import Keyring
from agent.membership.member import Member
from agent.membership.messages import NodeState
from agent.membership.meta import decode_tags, encode_tags
from agent.membership.protocol import (
    Event,
    MemberEvent,
    NameConflict,
    RemoteState,
    UserMessage,
)
from agent.membership.serf_intents import SerfClock
from agent.membership.transport import MembershipNode
from agent.peers import Peer, PeerStore
from agent.placement import ROLE as PLACEMENT_ROLE

if TYPE_CHECKING:  # imported when mDNS is on: a node without it never loads it
    from agent.discovery import Discovery

log = logging.getLogger(__name__)

ROLE = PLACEMENT_ROLE  # the tag placement uses to tell our nodes from Serf's
REJOIN_MIN, REJOIN_MAX = 1.0, 60.0
RECONNECT_INTERVAL = 30.0  # Serf's ReconnectInterval
# Serf's ReconnectTimeout: Serf forgets a failed member after this. We keep trying it, one
# such long-lost member every LONG_LOST_INTERVAL: otherwise two halves of a fleet split
# for longer (a dead uplink over a weekend) would never join again without mDNS
RECONNECT_TIMEOUT = 24 * 3600.0
LONG_LOST_INTERVAL = 600.0
MAX_FAILED = 256  # failed members remembered for reconnecting; the oldest go first
# after we move to a new address, push/pull with every live peer: first after this long,
# then again every READDRESS_RETRY while a round's answers show a peer that still holds
# the old address (it missed our leave, and takes the new address once it has found the
# old one failed and the name may be reclaimed), for at most READDRESS_PUSH_FOR
READDRESS_FIRST, READDRESS_RETRY, READDRESS_PUSH_FOR = 1.0, 3.0, 90.0
SERF_HEAD_START = 0.1  # the Serf leave intent goes this long before the memberlist leave


class KeyringError(Exception):
    pass


def load_keyring(path: Path) -> Keyring:
    """Keys from a file: one base64 key per line (first = primary), or Serf's JSON array."""
    try:
        text = path.read_text()
    except OSError as e:
        raise KeyringError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        if text.lstrip().startswith("["):
            return Keyring.from_keyring_json(text)
        keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if not keys:
            raise ValueError("no keys in the file")
        return Keyring.from_base64(keys)
    except ValueError as e:
        raise KeyringError(f"{path}: {e}") from None


def resolve_seeds(seeds: Iterable[str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
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


class Cluster:
    def __init__(
        self,
        config: Config,
        node_name: str,
        *,
        api_port: int = 0,
        on_change: Callable[[], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
        local_state: Callable[[bool], bytes] | None = None,
    ) -> None:
        self.config = config
        self.on_event = on_event  # every membership event, after ours (replication)
        self.local_state = local_state  # our push/pull user state (replication's digest)
        self.node_name = node_name
        self.api_port = api_port
        self.on_change = on_change
        self.serf_clock = SerfClock()
        self.keyring: Keyring | None = None
        self.node: MembershipNode | None = None
        self.conflicts: list[str] = []
        # standing problems the runtime shows in /v1/health: {what: (level, reason)},
        # level "failing" or "degraded"; set and cleared by this part only
        self.faults: dict[str, tuple[str, str]] = {}
        self.failed: dict[str, tuple[tuple[str, int], float]] = {}  # name -> (addr, since)
        self._next_long_lost = 0.0
        self.advertise: tuple[str, int] = ("", 0)
        self.peer_store = PeerStore(config.node.data_dir)
        self.remembered: list[Peer] = []
        self.discovery: Discovery | None = None
        self._discovery_task: asyncio.Task[None] | None = None
        self._joining: set[tuple[str, int]] = set()
        self._readdress_task: asyncio.Task[None] | None = None
        self.readdresses = 0  # times we moved to a new address (metrics)
        self._had_peers = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.name_guard = NameGuard(
            node_name,
            lambda: self.advertise,
            lambda: [m.address for m in self._alive_peers()],
            lambda: self.keyring,
            self._set_name_fault,
        )

    def tags(self) -> dict[str, str]:
        tags = dict(self.config.node.tags)
        tags.update(role=ROLE, version=__version__)
        if self.config.node.weight != 1.0:
            tags["weight"] = f"{self.config.node.weight:g}"
        if self.api_port:
            tags["api"] = str(self.api_port)
        return tags

    async def start(self) -> None:
        """Bind the gossip port (OSError if taken) and announce ourselves."""
        if self.config.cluster.keyring_file is not None:
            self.keyring = load_keyring(self.config.cluster.keyring_file)
        bind = self.config.cluster.bind
        adv_host, adv_port = advertise_address(self.config)
        self.node = MembershipNode(
            self.node_name,
            (bind.host, bind.port),
            advertise=(adv_host, adv_port),
            meta=encode_tags(self.tags()),
            settings=self.config.gossip,
            keyring=self.keyring,
            incarnation_file=self.config.node.data_dir / "incarnation",
            on_event=self._on_event,
            local_state=self.local_state,
        )
        await self.node.start()
        self.advertise = (adv_host, adv_port or self.node.port)
        self.remembered = self.peer_store.load()
        if self.peer_store.corrupt:
            self.faults["peers-file"] = ("degraded", f"{self.peer_store.path} was damaged; ignored")
        self._check_loopback()
        self._start_discovery()
        log.info(
            "gossip on %s:%d (advertising %s:%d)%s",
            bind.host,
            self.node.port,
            *self.advertise,
            ", encrypted" if self.keyring else "",
        )

    async def run_joiner(self) -> None:
        """Keep us in the cluster without anyone's help.

        While we see no peer, join the seeds, forever, with capped backoff: an isolated
        node rejoins by itself when the network returns. And, as Serf does, every
        RECONNECT_INTERVAL try one member we saw fail: after a partition each side has
        reaped the other, and only such a reconnect brings the halves back together.
        """
        delay = REJOIN_MIN
        next_seed = next_reconnect = 0.0
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            node = self.node
            if node is not None:
                self.peer_store.flush()
                # first: joining seeds from a stale address (a new lease after the cable
                # came back) would only time out
                await self.follow_address()
            if node is not None and now >= next_seed:
                next_seed = now + REJOIN_MIN
                if self._has_contacts() and self.peers() == 0:
                    if await self._join_seeds():
                        delay = REJOIN_MIN
                    else:
                        log.info(
                            "no seed answered (nor a remembered or mDNS-found peer); retrying in"
                            " %.0fs",
                            delay,
                        )
                        next_seed = now + delay
                        delay = min(delay * 2, REJOIN_MAX)
            if node is not None and now >= next_reconnect:
                next_reconnect = now + RECONNECT_INTERVAL
                await self._reconnect_one(now)
            await asyncio.sleep(1.0)

    async def follow_address(self) -> bool:
        """Move to the network's address when it changed under us; True if we moved.

        Only a derived advertise address is followed (a configured one is the operator's
        word), and never to loopback: a pulled cable leaves the old address standing
        until there is a better one. The common cases are a Pi that booted before its
        network (it started on loopback, alone, without mDNS) and a new DHCP lease.
        """
        if self.node is None or not is_derived(self.config):
            return False
        host = advertise_address(self.config)[0]
        if is_loopback(host) or host == self.advertise[0]:
            return False
        old = self.advertise[0]
        self.advertise = (host, self.advertise[1])
        log.warning(
            "advertise address changed: %s -> %s; announcing the move to the cluster",
            old,
            host,
        )
        # A Serf leave intent first: Serf's member states follow its intents, and a
        # memberlist leave without one shows as `failed`
        node = self.node
        if self._send_to_live_peers(node, self.serf_clock.leave_intent(self.node_name)):
            await asyncio.sleep(SERF_HEAD_START)
        node.readdress(self.advertise)
        self.faults.pop("advertise", None)
        self.readdresses += 1
        await self._stop_discovery()
        self.discovery = None
        self._start_discovery()
        if self._readdress_task is not None:
            self._readdress_task.cancel()
        task = self._readdress_task = asyncio.ensure_future(self._push_after_move())
        self._tasks.add(task)  # cancelled by leave_and_stop
        task.add_done_callback(self._tasks.discard)
        if self.on_change is not None:
            self.on_change()
        return True

    async def _push_after_move(self) -> None:
        """Push our state to every live peer until all of them show our new address."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + READDRESS_PUSH_FOR
        await asyncio.sleep(READDRESS_FIRST)
        while loop.time() < give_up:
            node = self.node
            core = node.core if node is not None else None
            peers = [m.address for m in self._alive_peers()]
            if node is None or core is None:
                return
            before = core.stale_views
            if peers:
                try:
                    await node.join(peers)
                except (TimeoutError, OSError) as e:
                    log.debug("push/pull after the move: %s", e)
                if core.stale_views == before:
                    return  # every peer that answered holds our new address
            await asyncio.sleep(READDRESS_RETRY)

    def may_find_peers(self) -> bool:
        """Whether this node has any way to find a peer: seeds, remembered peers, or mDNS
        on a real network (or on the network a derived address is waiting for). A node
        with none (a loopback demo, a one-node site) is alone by design and need not
        wait to learn a cluster before it starts checking."""
        if self.config.cluster.join or self.remembered or self._had_peers:
            return True
        if self.node is None and self.peer_store.load():  # before start: the file
            return True
        if not self.config.cluster.discover:
            return False
        return is_derived(self.config) or not is_loopback(advertise_address(self.config)[0])

    def _has_contacts(self) -> bool:
        return bool(
            self.config.cluster.join
            or self.remembered
            or (self.discovery is not None and self.discovery.peers())
        )

    async def _join_seeds(self) -> bool:
        """While alone: seeds, then remembered peers, then whoever mDNS last showed us."""
        assert self.node is not None
        addrs = await asyncio.to_thread(resolve_seeds, self.config.cluster.join)
        addrs += [p.address for p in self.remembered]
        if self.discovery is not None:
            addrs += self.discovery.peers()
        addrs = [a for a in dict.fromkeys(addrs) if a != self.advertise and self._may_join(a)]
        if not addrs:
            return False
        try:
            n = await self.node.join(addrs)
        except TimeoutError:
            n = 0
        if n:
            log.info("joined the cluster through %d of %d seeds", n, len(addrs))
        return n > 0

    async def _reconnect_one(self, now: float) -> None:
        """Try one member that failed in the last RECONNECT_TIMEOUT (as Serf does) and, at
        most every LONG_LOST_INTERVAL, one that failed before that."""
        if self.node is None:
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

    async def _reconnect(self, name: str, addr: tuple[str, int]) -> None:
        try:
            if self.node is not None and await self.node.join([addr]):
                log.info("reconnected to failed member %s at %s:%d", name, *addr)
        except TimeoutError:
            pass

    async def leave_and_stop(self, timeout: float) -> None:
        await self._stop_discovery()
        await self.name_guard.stop()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        node = self.node
        if node is None:
            return
        if node.core is not None and self.peers() > 0:
            # A Serf leave intent first, so Serf shows us `left` and not `failed`. It must
            # reach Serf before our memberlist `dead` does, and our own nodes do not relay
            # Serf messages: so send it straight to every live peer as well as gossiping
            # it, and give it a gossip interval's head start.
            loop = asyncio.get_running_loop()
            intent = self.serf_clock.leave_intent(self.node_name)
            self._send_to_live_peers(node, intent)
            node.broadcast(intent)
            head_start = loop.time() + max(2 * self.config.gossip.gossip_interval, 0.2)
            while loop.time() < head_start:
                await asyncio.sleep(0.02)
            await node.leave(timeout)
        await node.stop()

    def _send_to_live_peers(self, node: MembershipNode, payload: bytes) -> int:
        """A user message straight to every live peer (our nodes do not relay Serf
        messages, so gossip alone may not reach a Serf agent in time); how many."""
        alive = [
            m for m in node.members() if m.name != self.node_name and m.state == NodeState.ALIVE
        ]
        for m in alive:
            node.send_user(m.address, payload)
        return len(alive)

    def peers(self) -> int:
        if self.node is None:
            return 0
        return sum(
            1
            for m in self.node.members()
            if m.name != self.node_name and m.state in (NodeState.ALIVE, NodeState.SUSPECT)
        )

    def members(self) -> list[Member]:
        return self.node.members() if self.node else []

    def members_view(self) -> list[dict[str, Any]]:
        out = []
        for m in self.members():
            try:
                tags = decode_tags(m.meta)
            except Exception:
                tags = {}
            out.append(
                {
                    "name": m.name,
                    "addr": m.host,
                    "port": m.port,
                    "state": m.state_name,
                    "incarnation": m.incarnation,
                    "tags": tags,
                }
            )
        return out

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, (UserMessage, RemoteState)):
            self.serf_clock.observe(ev.payload)
        elif isinstance(ev, MemberEvent):
            m = ev.member
            if m.name != self.node_name or ev.kind != "join":
                log.info("member %s: %s", m.name, ev.kind)
            if m.name != self.node_name:
                self._had_peers = True
            if ev.kind == "dead" and m.name != self.node_name:
                self.failed[m.name] = (m.address, asyncio.get_running_loop().time())
            elif ev.kind in ("join", "alive", "left"):
                self.failed.pop(m.name, None)
            self.peer_store.update(Peer(p.name, p.host, p.port) for p in self._alive_peers())
            if self.on_change is not None:
                self.on_change()
        elif isinstance(ev, NameConflict):
            msg = (
                f"another node claims our name {ev.existing.name!r} from "
                f"{ev.other_addr[0]}:{ev.other_addr[1]}"
            )
            if ev.existing.name == self.node_name:
                self.conflicts = [*self.conflicts[-19:], msg]  # bounded: a clash repeats
                self.name_guard.conflict(ev.other_addr)
            else:
                log.warning("name conflict: %s", msg)
        if self.on_event is not None:
            self.on_event(ev)

    def reload_keyring(self) -> str | None:
        """SIGHUP: re-read the keyring file and use it at once (key rotation without a
        restart, as `serf keys`). Returns an error to log, or None. Encryption cannot be
        switched on or off while running: that needs a restart."""
        path = self.config.cluster.keyring_file
        node = self.node
        if node is None:
            return None
        if path is None or node.keyring is None:
            if path is not None or node.keyring is not None:
                return "turning encryption on or off takes effect at restart"
            return None
        try:
            keyring = load_keyring(path)
        except KeyringError as e:
            return f"keyring not reloaded, keeping the old keys: {e}"
        if keyring.keys != node.keyring.keys:
            node.keyring = keyring
            self.keyring = keyring
            log.info("keyring reloaded from %s: %d keys", path, len(keyring.keys))
        return None

    # --- discovery, remembered peers, names (see agent/discovery.py, peers.py, identity.py)

    def _alive_peers(self) -> list[Member]:
        return [
            m
            for m in self.members()
            if m.name != self.node_name and m.state in (NodeState.ALIVE, NodeState.SUSPECT)
        ]

    def _set_name_fault(self, fault: tuple[str, str] | None) -> None:
        if fault is None:
            self.faults.pop("name-conflict", None)
        else:
            self.faults["name-conflict"] = fault
        if self.on_change is not None:
            self.on_change()

    def _check_loopback(self) -> None:
        """Never hand a loopback address to a multi-host cluster: say so and hold back."""
        host = self.advertise[0]
        if not is_loopback(host):
            return
        remote = [
            s
            for s in self.config.cluster.join
            if not is_loopback(parse_hostport(s, default_port=7946).host)
        ]
        remote += [f"{p.addr}:{p.port}" for p in self.remembered if not is_loopback(p.addr)]
        if remote and is_derived(self.config):
            # no network yet (a Pi rebooted before its DHCP lease): not a misconfiguration;
            # follow_address moves us when the address comes, and then we join
            log.warning(
                "no network address yet (advertising %s): joining %s once there is one",
                host,
                ", ".join(remote[:3]),
            )
        elif remote:
            reason = (
                f"advertise address {host} is loopback but peers are not "
                f"({', '.join(remote[:3])}): not joining them; "
                "set [cluster] advertise or bind to a real address"
            )
            log.error("%s", reason)
            self.faults["advertise"] = ("failing", reason)

    def _may_join(self, addr: tuple[str, int]) -> bool:
        return not is_loopback(self.advertise[0]) or is_loopback(addr[0])

    def _start_discovery(self) -> None:
        if not self.config.cluster.discover:
            return
        if is_loopback(self.advertise[0]):
            if is_derived(self.config):
                log.warning(
                    "no network address yet: mDNS off, running alone on %s; "
                    "mDNS and joining start when the network comes up",
                    self.advertise[0],
                )
            else:  # a loopback-only cluster (tests, the demo): nobody to find on a network
                log.info("mDNS off: the advertise address %s is loopback", self.advertise[0])
            return
        from agent.discovery import Discovery

        txt = {"role": ROLE, "version": __version__}
        if self.api_port:
            txt["api"] = str(self.api_port)
        self.discovery = Discovery(
            cluster=self.config.cluster.name,
            node_name=self.node_name,
            advertise=self.advertise,
            on_peer=self._on_discovered,
            on_fault=self._on_discovery_fault,
            interface=self.config.cluster.interface,
            txt=txt,
            alone=lambda: self.peers() == 0,
        )
        self._discovery_task = asyncio.create_task(self.discovery.run(), name="discovery")

    async def _stop_discovery(self) -> None:
        task, self._discovery_task = self._discovery_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.discovery is not None:
            await self.discovery.stop()

    def _on_discovery_fault(self, reason: str | None) -> None:
        if reason is None:
            self.faults.pop("discovery", None)
        else:
            self.faults["discovery"] = ("degraded", reason)

    def _on_discovered(self, name: str, host: str, port: int) -> None:
        """mDNS saw a peer: join it unless it is us, already alive, or being joined."""
        addr = (host, port)
        if addr == self.advertise or addr in self._joining or not self._may_join(addr):
            return
        if any(m.address == addr for m in self._alive_peers()):
            return
        self._joining.add(addr)
        task = asyncio.ensure_future(self._join_discovered(name, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _join_discovered(self, name: str, addr: tuple[str, int]) -> None:
        try:
            if self.node is not None and await self.node.join([addr]):
                log.info("joined %s at %s:%d (found by mDNS)", name, *addr)
        except TimeoutError:
            log.info("mDNS peer %s at %s:%d did not answer", name, *addr)
        finally:
            self._joining.discard(addr)


class ClusterCollector(Collector):
    """Exports membership counters at scrape time (no per-packet metric calls)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def collect(self) -> Iterable[Any]:
        node = self.cluster.node
        states = GaugeMetricFamily(
            "edge_agent_members",
            "Cluster members by state, as this node sees them.",
            labels=["state"],
        )
        counts = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
        for m in self.cluster.members():
            counts[m.state_name] += 1
        for k, v in counts.items():
            states.add_metric([k], v)
        yield states
        if node is None:
            return
        c = node.counters
        for name, help_, value in (
            ("edge_agent_gossip_packets_received", "UDP gossip packets received.", c.packets_in),
            ("edge_agent_gossip_packets_sent", "UDP gossip packets sent.", c.packets_out),
            ("edge_agent_gossip_bytes_received", "UDP gossip bytes received.", c.bytes_in),
            ("edge_agent_gossip_bytes_sent", "UDP gossip bytes sent.", c.bytes_out),
            ("edge_agent_gossip_streams_received", "TCP gossip streams accepted.", c.streams_in),
            ("edge_agent_gossip_streams_opened", "TCP gossip streams opened.", c.streams_out),
            (
                "edge_agent_advertise_moves",
                "Times this node moved to a new advertise address without a restart.",
                self.cluster.readdresses,
            ),
        ):
            yield CounterMetricFamily(name, help_, value=value)
        bad = CounterMetricFamily(
            "edge_agent_gossip_bad_input",
            "Gossip input dropped as malformed or unacceptable, by kind.",
            labels=["kind"],
        )
        for kind, n in sorted(c.bad_input.items()):
            bad.add_metric([kind], n)
        yield bad
        broken = CounterMetricFamily(
            "edge_agent_gossip_stream_errors",
            "Accepted TCP gossip streams that broke before the exchange completed, by kind.",
            labels=["kind"],
        )
        for kind, n in sorted(c.stream_errors.items()):
            broken.add_metric([kind], n)
        yield broken
        if node.core is not None:
            yield GaugeMetricFamily(
                "edge_agent_gossip_health_score",
                "Lifeguard local health score (0 = healthy; timeouts scale by score + 1).",
                value=node.core.health_score,
            )
            yield GaugeMetricFamily(
                "edge_agent_gossip_incarnation",
                "This node's incarnation.",
                value=node.core.incarnation,
            )
