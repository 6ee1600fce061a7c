"""The agent's place in the cluster: membership built from config, leave, and views.

This is where the generic gossip layer meets the product: our tags (with the
`role = edge-agent` that placement uses to tell our nodes from Serf's), the keyring
file, the Serf courtesy of a leave intent, name conflicts, and the read-only views for
the API and /metrics. Its collaborators each own one job: staying joined
(agent/shell/rejoin.py), following a changing address (agent/shell/readdress.py), finding peers
by mDNS (agent/shell/peer_finder.py), remembering peers across restarts (agent/shell/peers.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from agent import __version__
from agent.domain import ROLE, parse_hostport
from agent.membership import (
    PEER_REFUSALS,
    Event,
    HealthScore,
    Keyring,
    Member,
    MemberEvent,
    MembershipNode,
    NameConflict,
    NodeState,
    Rejected,
    RemoteState,
    SerfClock,
    SerfPushPull,
    UserMessage,
    decode_tags,
    encode_serf_message,
    encode_tags,
)
from agent.shell.advertise import advertise_address, is_derived
from agent.shell.config import Config, is_loopback
from agent.shell.fleet_token import TAG as TOKEN_TAG
from agent.shell.keyring_file import KeyringError, load_keyring
from agent.shell.names import NameGuard
from agent.shell.peer_finder import PeerFinder
from agent.shell.peers import Peer, PeerStore
from agent.shell.prometheus_sd import api_tag
from agent.shell.readdress import AddressFollower
from agent.shell.refusal_log import RefusalLog
from agent.shell.rejoin import Rejoiner

log = logging.getLogger(__name__)

#: events held while nothing is attached to take them (a node that starts gossip before
#: the rest of it is built: agent/shell/launch.py); far more than a start-up sees
EARLY_EVENTS = 10_000
#: peers a node re-syncs with (push/pull) once the rest of it is attached
RESYNC_PEERS = 3

__all__ = ["ROLE", "Cluster", "KeyringError", "load_keyring"]


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
        self.advertise: tuple[str, int] = ("", 0)
        self.peer_store = PeerStore(config.node.data_dir)
        self.peer_store.on_fault = self._set_peers_save_fault
        self.remembered: list[Peer] = []
        self.rejoiner = Rejoiner(self)
        self.follower = AddressFollower(self)
        self.finder = PeerFinder(self)
        self._had_peers = False
        self.token_fingerprint: str | None = None  # advertised as tag "wt" (fleet_token.py)
        self._tasks: set[asyncio.Task[None]] = set()
        # gossip started before the rest of the node (launch.py): events wait here for
        # attach(), and push/pulls carry no replication digest until then
        self._early: list[Event] | None = None
        self._early_dropped = 0
        self._stub_states = 0  # push/pulls answered without our digest
        self._meta = b""  # the tags last announced (refresh_meta)
        self._discovering = False
        # peers refused for their key, encryption or versions: logged once per host and
        # cause, then every 10 minutes with a count (agent/shell/refusal_log.py)
        self.refusal_log = RefusalLog()
        self.name_guard = NameGuard(
            node_name,
            lambda: self.advertise,
            lambda: [m.address for m in self.alive_peers()],
            lambda: self.keyring,
            self._set_name_fault,
        )

    def tags(self) -> dict[str, str]:
        tags = dict(self.config.node.tags)
        tags.update(role=ROLE, version=__version__)
        if self.config.node.weight != 1.0:
            tags["weight"] = f"{self.config.node.weight:g}"
        if self.config.node.site is not None:
            tags["site"] = self.config.node.site  # the failure domain (docs/placement.md)
        if self.api_port:  # where its API (and /metrics) is: agent/shell/prometheus_sd.py
            tags["api"] = api_tag(self.config.api.listen, self.api_port)
        if self.token_fingerprint is not None:
            tags[TOKEN_TAG] = self.token_fingerprint
        return tags

    def advertise_token(self, fingerprint: str | None) -> None:
        """Tell the peers our fleet token's fingerprint (or that we have none) when it
        changes: a rotated token file is picked up without a restart."""
        if fingerprint == self.token_fingerprint:
            return
        self.token_fingerprint = fingerprint
        self.refresh_meta()

    def peer_token_fingerprints(self) -> dict[str, str]:
        """{name: fingerprint} of the live peers that advertise a fleet token."""
        return {
            m.name: tags[TOKEN_TAG]
            for m in self.alive_peers()
            if TOKEN_TAG in (tags := decode_tags(m.meta))
        }

    def start_early(self) -> None:
        """Call before ``start`` when gossip runs ahead of the rest of the node (launch.py):
        events are held for ``attach``, which replays them in order."""
        if self.on_event is None and self._early is None:
            self._early = []

    def attach(
        self,
        on_event: Callable[[Event], None],
        local_state: Callable[[bool], bytes],
        on_change: Callable[[], None],
    ) -> None:
        """Hand the running cluster to the rest of the node: the events held since the
        early start are delivered, and the peers whose push/pulls carried no digest of ours
        are synced with again, so neither side waits a push/pull interval for a repair."""
        self.on_event, self.local_state, self.on_change = on_event, local_state, on_change
        held, self._early = self._early or [], None
        if self._early_dropped:
            log.warning(
                "%d membership events came before start-up finished and were dropped",
                self._early_dropped,
            )
        for ev in held:
            on_event(ev)
        node = self.node
        if self._stub_states and node is not None and node.running:
            peers = [m.address for m in self.alive_peers()][:RESYNC_PEERS]
            if peers:
                self.spawn(self._resync(peers))
        self.changed()

    async def _resync(self, peers: list[tuple[str, int]]) -> None:
        node = self.node
        if node is None:
            return
        try:
            await node.join(peers)
        except (TimeoutError, OSError) as e:
            log.debug("re-sync after start-up: %s", e)

    def _local_state(self, join: bool) -> bytes:
        """Our push/pull user state. Before ``attach`` there is no store to digest: a
        plain Serf state, which our peers take as carrying nothing for replication (no
        repair is sent on it) and Serf agents accept."""
        if self.local_state is not None:
            return self.local_state(join)
        self._stub_states += 1
        return encode_serf_message(SerfPushPull())

    def refresh_meta(self) -> None:
        """Announce our tags again if they changed since gossip started (the API's port
        is known only once it listens; a node that gossips first learns it later)."""
        node = self.node
        if node is not None and node.running:
            meta = encode_tags(self.tags())
            if meta != self._meta:
                self._meta = meta
                node.update_meta(meta)

    async def start(self, *, discover: bool = True) -> None:
        """Bind the gossip port (OSError if taken) and announce ourselves; ``discover``:
        start mDNS now too (launch.py starts it once the API's port is known)."""
        if self.config.cluster.keyring_file is not None:
            self.keyring = load_keyring(self.config.cluster.keyring_file)
        bind = self.config.cluster.bind
        adv_host, adv_port = advertise_address(self.config)
        self._meta = encode_tags(self.tags())
        self.node = MembershipNode(
            self.node_name,
            (bind.host, bind.port),
            advertise=(adv_host, adv_port),
            meta=self._meta,
            settings=self.config.gossip,
            keyring=self.keyring,
            incarnation_file=self.config.node.data_dir / "incarnation",
            on_event=self._on_event,
            local_state=self._local_state,
        )
        await self.node.start()
        self.advertise = (adv_host, adv_port or self.node.port)
        self.remembered = self.peer_store.load()
        if self.peer_store.corrupt:
            self.faults["peers-file"] = ("degraded", f"{self.peer_store.path} was damaged; ignored")
        elif self.peer_store.unreadable:
            why = self.peer_store.unreadable
            self.faults["peers-file"] = ("degraded", f"{self.peer_store.path}: {why}; ignored")
        self._check_loopback()
        if discover:
            self.start_discovery()
        log.info(
            "gossip on %s:%d (advertising %s:%d)%s",
            bind.host,
            self.node.port,
            *self.advertise,
            ", encrypted" if self.keyring else "",
        )

    def start_discovery(self) -> None:
        """Start mDNS (once): announcing ourselves, with our API's port, and browsing."""
        if not self._discovering:
            self._discovering = True
            self.finder.start()

    @property
    def running(self) -> bool:
        return self.node is not None and self.node.running

    async def run_joiner(self) -> None:
        """The task that keeps us in the cluster (agent/shell/rejoin.py)."""
        await self.rejoiner.run()

    async def follow_address(self) -> bool:
        """Move to the network's address if it changed (agent/shell/readdress.py)."""
        return await self.follower.follow()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of the cluster's own (a join, a push after a move): cancelled at stop."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

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

    def has_contacts(self) -> bool:
        return bool(self.config.cluster.join or self.remembered or self.finder.peers())

    async def leave_and_stop(self, timeout: float) -> None:
        await self.finder.stop()
        await self.name_guard.stop()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        node = self.node
        if node is None:
            return
        if node.running and self.peers() > 0:
            # A Serf leave intent first, so Serf shows us `left` and not `failed`. It must
            # reach Serf before our memberlist `dead` does, and our own nodes do not relay
            # Serf messages: so send it straight to every live peer as well as gossiping
            # it, and give it a gossip interval's head start.
            loop = asyncio.get_running_loop()
            intent = self.serf_clock.leave_intent(self.node_name)
            self.send_to_live_peers(intent)
            node.broadcast(intent)
            head_start = loop.time() + max(2 * self.config.gossip.gossip_interval, 0.2)
            while loop.time() < head_start:
                await asyncio.sleep(0.02)
            await node.leave(timeout)
        await node.stop()

    def send_to_live_peers(self, payload: bytes) -> int:
        """A user message straight to every live peer (our nodes do not relay Serf
        messages, so gossip alone may not reach a Serf agent in time); how many."""
        node = self.node
        if node is None:
            return 0
        alive = [
            m for m in node.members() if m.name != self.node_name and m.state == NodeState.ALIVE
        ]
        for m in alive:
            node.send_user(m.address, payload)
        return len(alive)

    def send_reliable(self, addr: tuple[str, int], payload: bytes) -> bool:
        """A user message over TCP; False when gossip is not running."""
        if self.node is None or not self.node.running:
            return False
        self.node.send_reliable(addr, payload)
        return True

    # --- views ---------------------------------------------------------------------------

    def peers(self) -> int:
        return len(self.alive_peers())

    def members(self) -> list[Member]:
        return self.node.members() if self.node else []

    def alive_peers(self) -> list[Member]:
        return [
            m
            for m in self.members()
            if m.name != self.node_name and m.state in (NodeState.ALIVE, NodeState.SUSPECT)
        ]

    def health_score(self) -> int:
        """Lifeguard's local health (0 = healthy); 0 while gossip is not running."""
        node = self.node
        return node.health_score if node is not None and node.running else 0

    def members_view(self) -> list[dict[str, Any]]:
        return [
            {
                "name": m.name,
                "addr": m.host,
                "port": m.port,
                "state": m.state_name,
                "incarnation": m.incarnation,
                "tags": decode_tags(m.meta),  # never raises: keeps what it can read
            }
            for m in self.members()
        ]

    # --- events --------------------------------------------------------------------------

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
                self.rejoiner.member_failed(m.name, m.address, asyncio.get_running_loop().time())
            elif ev.kind in ("join", "alive", "left"):
                self.rejoiner.member_back(m.name)
            # saved by the joiner, off the loop (rejoin.py; poked just below)
            self.peer_store.note(Peer(p.name, p.host, p.port) for p in self.alive_peers())
            self.rejoiner.poke()  # alone now, peers to save, or a failed member to retry
            self.changed()
        elif isinstance(ev, HealthScore):
            self.changed()  # a suspected node's LEDs and status follow Lifeguard's score
        elif isinstance(ev, Rejected) and ev.peer is not None and ev.kind in PEER_REFUSALS:
            line = self.refusal_log.line(ev.kind, ev.detail, ev.peer, time.monotonic())
            if line is not None:
                log.warning("%s", line)
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
        elif self._early is not None:
            if len(self._early) < EARLY_EVENTS:
                self._early.append(ev)
            else:
                self._early_dropped += 1

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

    def _set_peers_save_fault(self, fault: str | None) -> None:
        if fault is None:
            self.faults.pop("peers-save", None)
        else:
            self.faults["peers-save"] = ("degraded", fault)
        self.changed()

    def _set_name_fault(self, fault: tuple[str, str] | None) -> None:
        if fault is None:
            self.faults.pop("name-conflict", None)
        else:
            self.faults["name-conflict"] = fault
        self.changed()

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
            # the follower moves us when the address comes, and then we join
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

    def may_join(self, addr: tuple[str, int]) -> bool:
        return not is_loopback(self.advertise[0]) or is_loopback(addr[0])
