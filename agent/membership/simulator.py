"""A deterministic cluster simulator on the real membership endpoint.

Many `GossipEndpoint`s (the facade a live node runs behind its sockets) in one process,
in virtual time, with per-link loss and delay, partitions, killed and stalled nodes.
Every random choice comes from one seed, so a failing run is reproduced exactly by its
seed. What crosses the "network" is what a live node would put on the wire: whole UDP
datagrams (compound, CRC, LZW compression, AES-GCM with a shared keyring unless
``encrypt=False``) and whole stream requests and replies, decoded on arrival by the same
packet layer and stream exchanges, so the simulator exercises the same packet path.

A stalled node (think SIGSTOP, or a Pi stuck on SD-card I/O) runs no timers and
reads nothing until the stall ends; then it processes its backlog at once, which
is exactly the situation Lifeguard's local health awareness exists for.

Hooks let a layer above membership ride along (replication does): ``local_state``
supplies each node's push/pull user state, ``on_event`` sees every event a node's core
emits and may call that core (queue broadcasts, send user messages); reliable (TCP)
user messages are delivered like memberlist's, and their StreamDone reports success.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.membership import codec
from agent.membership.endpoint import GossipEndpoint
from agent.membership.keyring import Keyring
from agent.membership.member import Member
from agent.membership.messages import NodeState
from agent.membership.protocol import Event, MemberEvent, Membership, Rejected
from agent.membership.settings import Settings
from agent.membership.stream_exchange import OutboundStream

Address = tuple[str, int]

#: entries each memo holds before it starts over (a few hundred MiB at most at 10,000 nodes)
MEMO_ENTRIES = 1 << 16
_MISS = object()  # a cached result may be None (compress_if_smaller: not smaller)


class CodecMemo:
    """Exact caches of three pure functions that thousands of simulated nodes run on
    identical input: ``codec.compress_if_smaller`` (a node gossips the same compound to
    three peers a tick, and LZW is pure Python), ``codec.decompress_buffer`` (those
    peers expand the same LZW buffer) and ``codec.decode_message`` (every node decodes
    the same suspect or alive bytes as the broadcast reaches it). Same input, the result
    the function returned for it out (bytes, None, frozen messages); an input that raises
    (an empty message, a buffer past its budget) is not cached and raises again.
    Installed into ``codec`` only while the simulator runs its nodes, and put back
    after, so nothing else sees it. Every other step of the packet path (compound, CRC,
    AES-GCM with a fresh nonce, the walk and its budgets) still runs for each datagram."""

    def __init__(self, entries: int = MEMO_ENTRIES) -> None:
        self.entries = entries
        self.calls = 0
        self.hits = 0
        self._depth = 0
        self._saved: dict[str, Callable[..., Any]] = {}
        # the function's name in codec -> the key of its arguments, and the cache
        self._keys: dict[str, Callable[..., Hashable]] = {
            "compress_if_smaller": bytes,
            "decompress_buffer": lambda msg, limit: (msg.algo, bytes(msg.buf), limit),
            "decode_message": bytes,
        }
        self._tables: dict[str, dict[Hashable, Any]] = {name: {} for name in self._keys}
        self.hits_by: dict[str, int] = dict.fromkeys(self._keys, 0)  # per function

    def _cached(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        key_of, table, hits_by = self._keys[name], self._tables[name], self.hits_by

        def cached(*args: Any) -> Any:
            self.calls += 1
            key = key_of(*args)
            out = table.get(key, _MISS)
            if out is not _MISS:
                self.hits += 1
                hits_by[name] += 1
                return out
            out = fn(*args)
            if len(table) >= self.entries:
                table.clear()
            table[key] = out
            return out

        return cached

    def __enter__(self) -> CodecMemo:
        if self._depth == 0:
            for name in self._keys:
                fn = self._saved[name] = getattr(codec, name)
                setattr(codec, name, self._cached(name, fn))
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            for name, fn in self._saved.items():
                setattr(codec, name, fn)
            self._saved.clear()


@dataclass(slots=True)
class SimNode:
    name: str
    addr: Address
    endpoint: GossipEndpoint
    alive: bool = True
    stalled_until: float = 0.0
    backlog: list[tuple[str, object]] = field(default_factory=list)
    timer_at: float | None = None
    # streams this node opened that are on their way, by id (answered or refused)
    streams: dict[int, OutboundStream] = field(default_factory=dict)

    @property
    def core(self) -> Membership:
        """The node's protocol core (views and test hooks; traffic goes via the endpoint)."""
        return self.endpoint.core


@dataclass(frozen=True, slots=True)
class Observed:
    at: float
    observer: str
    kind: str
    member: str


class Simulator:
    def __init__(
        self,
        n: int,
        seed: int = 1,
        settings: Settings | None = None,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.0005, 0.002),
        start_spread: float = 0.0,
        *,
        meta: bytes = b"",
        local_state: Callable[[str, bool], bytes] | None = None,
        on_event: Callable[[str, Event], None] | None = None,
        encrypt: bool = True,
        memo: bool = True,
        freeze_every: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        # exact caches of the codec's pure functions while the nodes run (CodecMemo)
        self.memo: CodecMemo | None = CodecMemo() if memo else None
        # every freeze_every simulated seconds (0: never): collect the young generations
        # and gc.freeze() what survived, so the cyclic collector's full passes never walk
        # the tables the run keeps growing (per core, a copy of each member it suspected):
        # at 10,000 nodes they took about half of the false-positive run. Process-wide:
        # for a process that runs one simulation (bench/simulate.py's child)
        self.freeze_every = freeze_every
        self._next_freeze = freeze_every
        self.meta = meta  # every node's tags, unless add_node says otherwise
        # hooks (may also be set after construction): node name -> its push/pull user
        # state; (node name, event) for every event its core emits
        self.local_state = local_state
        self.on_event = on_event
        self.settings = settings or Settings()
        # one cluster key, as an operator configures it; nonces from their own seeded
        # generator, so the bytes are reproducible and the protocol's draws unchanged
        self.keyring: Keyring | None = None
        if encrypt:
            nonces = random.Random(seed ^ 0x5EED)
            key = random.Random(seed).randbytes(32)
            self.keyring = Keyring([key], random_bytes=nonces.randbytes)
        self.loss = loss
        self.delay = delay
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self.by_addr: dict[Address, SimNode] = {}
        self.groups: dict[str, int] | None = None  # partition: name -> side
        self.observed: list[Observed] = []
        self.rejected: list[Rejected] = []
        self.packets_sent = 0
        self.bytes_sent = 0
        self._q: list[tuple[float, int, str, object]] = []
        self._seq = itertools.count()
        for i in range(n):
            self.add_node(f"n{i:04d}", start_at=self.rng.random() * start_spread)

    # --- building ------------------------------------------------------------------------

    def _endpoint(self, name: str, addr: Address, meta: bytes, incarnation: int) -> GossipEndpoint:
        return GossipEndpoint(
            name,
            addr,
            meta=meta,
            settings=self.settings,
            keyring=self.keyring,
            rng=random.Random(self.rng.random()),
            incarnation=incarnation,
            local_state=self._state_of(name),
        )

    def add_node(
        self,
        name: str,
        start_at: float | None = None,
        incarnation: int = 0,
        meta: bytes | None = None,
    ) -> SimNode:
        idx = len(self.by_addr) + 1
        addr = (f"10.{(idx >> 16) & 255}.{(idx >> 8) & 255}.{idx & 255}", 7946)
        ep = self._endpoint(name, addr, self.meta if meta is None else meta, incarnation)
        node = SimNode(name, addr, ep)
        self.nodes[name] = node
        self.by_addr[addr] = node
        self._at(self.now if start_at is None else start_at, "start", name)
        return node

    def join_all(self, seed_name: str | None = None) -> None:
        """Every node joins through one seed (the first node by default)."""
        seed = self.nodes[seed_name or next(iter(self.nodes))]
        for node in self.nodes.values():
            if node is not seed:
                self._at(self.now, "join", (node.name, seed.addr))

    def converge(self) -> None:
        """Start every node and hand each the whole cluster, alive, as if it had joined.

        A protocol join of 10,000 nodes (each merging up to 10,000 members, every alive
        gossiped 20 times) would take hours here; this builds one table of shared member
        records, which every core adopts (Membership.adopt_members: containers copied,
        probe order shuffled, a record copied by the first core that changes it). No
        join events are emitted and the start broadcasts are dropped, as they would be
        long sent in a converged cluster. Everything after this is the real protocol.
        """
        with self._running():
            self._converge()

    def _converge(self) -> None:
        self.run_until(self.now)  # the start events: each node has its own record
        records = []
        for node in self.nodes.values():
            if node.alive:
                m = node.core.node_map[node.name]
                records.append(
                    Member(
                        m.name,
                        m.addr,
                        m.port,
                        m.meta,
                        m.vsn,
                        m.incarnation,
                        m.state,
                        m.state_change,
                        shared=True,
                    )
                )
        node_map = {m.name: m for m in records}
        addr_names = {m.address: m.name for m in records}
        for node in self.nodes.values():
            if not node.alive:
                continue
            core = node.core
            core.adopt_members(records, node_map, addr_names)
            core.broadcasts.reset()
            core.packets_to_send()
            core.events()
            self._flush(node)

    def bad_input(self) -> dict[str, int]:
        """Malformed or refused input summed over every node's counters, by kind."""
        total: dict[str, int] = {}
        for node in self.nodes.values():
            for kind, n in node.endpoint.counters.bad_input.items():
                total[kind] = total.get(kind, 0) + n
        return total

    # --- faults --------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """kill -9: the node stops answering and its timers stop."""
        node = self.nodes[name]
        node.alive = False
        node.backlog.clear()

    def restart(self, name: str) -> SimNode:
        """A killed node comes back with the same name and address, one incarnation higher."""
        old = self.nodes[name]
        inc = old.core.incarnation
        del self.by_addr[old.addr]
        node = SimNode(name, old.addr, self._endpoint(name, old.addr, old.core.meta, inc))
        self.nodes[name] = node
        self.by_addr[old.addr] = node
        self._at(self.now, "start", name)
        return node

    def readdress(self, name: str, addr: Address) -> None:
        """A running node's address changes (a new DHCP lease): the old one goes dead."""
        node = self.nodes[name]
        del self.by_addr[node.addr]
        node.addr = addr
        self.by_addr[addr] = node
        with self._running():
            node.endpoint.readdress(addr, self.now)
            self._flush(node)

    def stall(self, name: str, seconds: float) -> None:
        node = self.nodes[name]
        node.stalled_until = max(node.stalled_until, self.now + seconds)
        self._at(node.stalled_until, "unstall", name)

    def partition(self, *sides: Iterable[str]) -> None:
        self.groups = {}
        for i, side in enumerate(sides):
            for name in side:
                self.groups[name] = i

    def heal(self) -> None:
        self.groups = None

    def leave(self, name: str) -> None:
        node = self.nodes[name]
        with self._running():
            node.endpoint.leave(self.now)
            self._flush(node)

    # --- running -------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        q = self._q
        with self._running():
            while q and q[0][0] <= t:
                when, _, kind, payload = heapq.heappop(q)
                self.now = max(self.now, when)
                if self.freeze_every and self.now >= self._next_freeze:
                    self._next_freeze = self.now + self.freeze_every
                    gc.collect(1)
                    gc.freeze()
                self._dispatch(kind, payload)
        self.now = max(self.now, t)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # --- views ---------------------------------------------------------------------------

    def view(self, observer: str) -> dict[str, str]:
        return {m.name: m.state_name for m in self.nodes[observer].endpoint.members()}

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive]

    def converged(self, expect: dict[str, str] | None = None) -> bool:
        """Every live node sees every live node alive (and, if given, others as expected)."""
        live = {n.name for n in self.live_nodes()}
        for node in self.live_nodes():
            view = self.view(node.name)
            for name in live:
                if view.get(name) != "alive":
                    return False
            for name, state in (expect or {}).items():
                if view.get(name, "dead") != state:
                    return False
        return True

    def first_seen(self, kind: str, member: str, observer: str) -> float | None:
        for o in self.observed:
            if o.kind == kind and o.member == member and o.observer == observer:
                return o.at
        return None

    def flush(self, name: str) -> None:
        """Put what a node's core has queued (after a hook called it) onto the network."""
        with self._running():
            self._flush(self.nodes[name])

    # --- internals -----------------------------------------------------------------------

    def _running(self) -> contextlib.AbstractContextManager[object]:
        """While the nodes run: the codec memo installed (CodecMemo), if it is on."""
        return self.memo if self.memo is not None else contextlib.nullcontext()

    def _state_of(self, name: str) -> Callable[[bool], bytes]:
        def local_state(join: bool) -> bytes:
            return self.local_state(name, join) if self.local_state is not None else b""

        return local_state

    def _at(self, when: float, kind: str, payload: object) -> None:
        heapq.heappush(self._q, (when, next(self._seq), kind, payload))

    def _link_ok(self, a: str, b: str) -> bool:
        return self.groups is None or self.groups.get(a, -1) == self.groups.get(b, -2)

    def _latency(self) -> float:
        lo, hi = self.delay
        return lo + self.rng.random() * (hi - lo)

    def _dispatch(self, kind: str, payload: object) -> None:
        if kind == "start":
            assert isinstance(payload, str)
            node = self.nodes[payload]
            node.endpoint.start(self.now)
            self._flush(node)
            return
        if kind == "unstall":
            assert isinstance(payload, str)
            node = self.nodes[payload]
            if node.stalled_until <= self.now and node.alive:
                backlog, node.backlog = node.backlog, []
                for k, p in backlog:
                    self._deliver(node, k, p)
                node.endpoint.handle_timer(self.now)
                self._flush(node)
            return
        if kind == "join":
            assert isinstance(payload, tuple)
            name, addr = payload
            node = self.nodes[name]
            if node.alive:
                node.endpoint.join([addr], self.now)
                self._flush(node)
            return
        if kind == "timer":
            assert isinstance(payload, tuple)
            name, when = payload
            node = self.nodes[name]
            if node.timer_at != when:
                return  # superseded
            node.timer_at = None
            if not node.alive:
                return
            if node.stalled_until > self.now:
                return  # the unstall event runs overdue timers
            node.endpoint.handle_timer(self.now)
            self._flush(node)
            return
        # packet / stream deliveries: payload = (target addr, ...)
        assert isinstance(payload, tuple)
        target = self.by_addr.get(payload[0])
        if target is None or not target.alive:
            if kind == "stream":
                _, src_name, sid, _ = payload
                self._stream_failed(src_name, sid, "connection refused")
            return
        if target.stalled_until > self.now:
            target.backlog.append((kind, payload))
            return
        self._deliver(target, kind, payload)
        self._flush(target)

    def _deliver(self, node: SimNode, kind: str, payload: object) -> None:
        assert isinstance(payload, tuple)
        if kind == "packet":
            _, src_addr, data = payload
            node.endpoint.receive_datagram(data, src_addr, self.now)
        elif kind == "stream":
            # the whole request arrives at once; a short one ends at the peer's close
            _, src_name, sid, request = payload
            src = self.nodes.get(src_name)
            src_addr = src.addr if src is not None else ("0.0.0.0", 0)
            inbound = node.endpoint.accept_stream(src_addr, self.now)
            inbound.receive(request, self.now)
            if not inbound.done:
                inbound.receive_eof(self.now)
            if src is None or not self._link_ok(node.name, src_name):
                if src is not None:
                    src.streams.pop(sid, None)  # lost: the core's own timer reports it
                return
            reply = inbound.reply
            self._at(self.now + self._latency(), "stream_reply", (src.addr, sid, reply))
        elif kind == "stream_reply":
            _, sid, reply = payload
            out = node.streams.pop(sid, None)
            if out is None:
                return  # the node restarted meanwhile: nobody is waiting for it
            if not out.expects_reply:
                out.sent(self.now)  # a user message: the stream closing after it is success
                return
            if reply is not None:
                out.receive(reply, self.now)
            out.receive_eof(self.now)  # the acceptor closes after its reply

    def _stream_failed(self, src_name: str, sid: int, error: str) -> None:
        src = self.nodes.get(src_name)
        if src is None:
            return
        out = src.streams.pop(sid, None)
        if out is not None and src.alive:
            out.fail(error, self.now)
            self._flush(src)

    def _flush(self, node: SimNode) -> None:
        """Move an endpoint's outputs onto the simulated network and re-arm its timer."""
        ep = node.endpoint
        while True:
            for data, addr in ep.datagrams_to_send(self.now):
                self._send_datagram(node, data, addr)
            for s in ep.streams_to_open(self.now):
                self._open_stream(node, s)
            events = ep.events()
            if not events:
                break
            for ev in events:
                if isinstance(ev, MemberEvent):
                    self.observed.append(Observed(self.now, node.name, ev.kind, ev.member.name))
                elif isinstance(ev, Rejected):
                    self.rejected.append(ev)
                if self.on_event is not None:
                    self.on_event(node.name, ev)  # may queue more output: loop
        t = ep.next_timer()
        if t is not None and node.timer_at != t:
            node.timer_at = t
            self._at(t, "timer", (node.name, t))

    def _send_datagram(self, node: SimNode, data: bytes, addr: Address) -> None:
        self.packets_sent += 1
        self.bytes_sent += len(data)
        target = self.by_addr.get(addr)
        if target is None or not self._link_ok(node.name, target.name):
            return
        if self.rng.random() < self.loss:
            return
        self._at(self.now + self._latency(), "packet", (addr, node.addr, data))

    def _open_stream(self, node: SimNode, s: OutboundStream) -> None:
        target = self.by_addr.get(s.addr)
        if target is None or not self._link_ok(node.name, target.name):
            return  # the stream_expire timer in the core reports the timeout
        node.streams[s.id] = s
        self._at(self.now + self._latency(), "stream", (s.addr, node.name, s.id, s.request))


def states(sim: Simulator, observer: str) -> dict[str, NodeState]:
    return {m.name: m.state for m in sim.nodes[observer].endpoint.members()}
