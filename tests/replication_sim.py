"""A replicated cluster in the membership simulator: State + Replicator on every node.

Every node runs the real membership core (agent.membership.simulator), a ``State`` and a
``Replicator``, wired the way the runtime wires them: the replicator's push/pull user
state goes into the core, every core event goes to the replicator, and its outputs go
back into the core. Messages cross the simulated network as real bytes, with loss on
UDP and partitions on everything.

Instrumented: every replication message a node receives is checked against where the
sender first learned each event in it (``back_to_source`` counts violations of "a delta
is never sent back to where it came from"), and bytes are counted per message kind.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from agent.crdt.dot import Dot
from agent.crdt.hlc import Timestamp
from agent.domain.origin import OriginSpec, parse_origin
from agent.membership.meta import encode_tags
from agent.membership.protocol import Event, UserMessage
from agent.membership.settings import Settings
from agent.membership.simulator import Simulator
from agent.node.replication import (
    KIND_DELTA,
    Gossip,
    Replicator,
    decode_message,
    is_replication,
)
from agent.node.state import Delta, State

T0 = 1_780_000_000_000
EDGE_META = encode_tags({"role": "edge-agent"})
SERF_META = encode_tags({"role": "serf"})


def spec(oid: str, interval: str = "10s") -> OriginSpec:
    return parse_origin({"id": oid, "url": f"https://{oid}.example.com/", "interval": interval})


def event_dots(delta: Delta) -> set[Dot]:
    """The events a delta carries (live entries and removals), not what they cover."""
    dots = {d for ents in delta.entries.values() for d in ents}
    return dots | set(delta.records)


@dataclass
class Traffic:
    messages: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    bytes: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    checked_deltas: int = 0
    back_to_source: int = 0


class ReplicatedCluster:
    """n nodes named n0000.. with replication; ``serf`` extra members without it."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 1,
        loss: float = 0.0,
        settings: Settings | None = None,
        serf: int = 0,
    ) -> None:
        self.rng = random.Random(seed)
        self.sim = Simulator(
            n,
            seed=seed,
            loss=loss,
            settings=settings or Settings(push_pull_interval=2.0),
            meta=EDGE_META,
            local_state=self._local_state,
            on_event=self._on_event,
        )
        self.states: dict[str, State] = {}
        self.reps: dict[str, Replicator] = {}
        for i, name in enumerate(list(self.sim.nodes)):
            self.states[name] = State(name)
            self.reps[name] = Replicator(
                self.states[name], gossip=self.sim.settings, rng=random.Random(seed * 1000 + i)
            )
        self.serf_states: dict[str, list[bytes]] = {}  # serf node -> push/pull states seen
        self.serf_user: dict[str, list[bytes]] = {}  # serf node -> user messages seen
        for i in range(serf):
            name = f"serf{i}"
            self.sim.add_node(name, meta=SERF_META)
            self.serf_states[name] = []
            self.serf_user[name] = []
        self.traffic = Traffic()
        # node -> dot -> the node it first learned the dot from
        self.learned_from: dict[str, dict[Dot, str]] = defaultdict(dict)
        self.changed: dict[str, set[str]] = defaultdict(set)
        self._clock: dict[str, int] = defaultdict(int)

    # --- wiring (what the runtime does) ----------------------------------------------------

    def _local_state(self, name: str, join: bool) -> bytes:
        rep = self.reps.get(name)
        return rep.local_state(join) if rep is not None else b""

    def _on_event(self, name: str, ev: Event) -> None:
        rep = self.reps.get(name)
        if rep is None:
            self._serf_event(name, ev)
            return
        if isinstance(ev, UserMessage) and is_replication(ev.payload):
            self._instrument(name, ev.payload)
        self.changed[name] |= rep.handle_event(ev)
        self._drain(name)

    def _serf_event(self, name: str, ev: Event) -> None:
        from agent.membership.protocol import RemoteState

        if isinstance(ev, RemoteState):
            self.serf_states[name].append(ev.payload)
        elif isinstance(ev, UserMessage):
            self.serf_user[name].append(ev.payload)

    def _drain(self, name: str) -> None:
        core = self.sim.nodes[name].core
        for out in self.reps[name].outputs():
            if isinstance(out, Gossip):
                core.queue_user_broadcast(out.payload, exclude=out.exclude)
            elif out.reliable:
                core.send_reliable(out.addr, out.payload, self.sim.now)
            else:
                core.send_user(out.addr, out.payload)

    def _instrument(self, receiver: str, payload: bytes) -> None:
        try:
            msg = decode_message(payload)
        except ValueError:
            return
        self.traffic.messages[msg.kind] += 1
        self.traffic.bytes[msg.kind] += len(payload)
        dots = event_dots(msg.delta)
        if msg.kind == KIND_DELTA:
            self.traffic.checked_deltas += 1
            came_from = self.learned_from[msg.sender]
            if any(came_from.get(d) == receiver for d in dots):
                self.traffic.back_to_source += 1
        mine = self.learned_from[receiver]
        ctx = self.states[receiver].crdt.ctx
        for d in dots:
            if d not in mine and not ctx.contains(d):
                mine[d] = msg.sender

    # --- driving ---------------------------------------------------------------------------

    def start(self, settle: float = 15.0) -> None:
        self.sim.join_all()
        self.sim.run_for(settle)

    def ts(self, name: str) -> Timestamp:
        self._clock[name] += 1
        return Timestamp(T0 + int(self.sim.now * 1000), self._clock[name], name)

    def publish(self, name: str, delta: Delta | None) -> None:
        """A local mutation's delta: replicate it, as the runtime would."""
        self.reps[name].publish(delta)
        self._drain(name)
        self.sim.flush(name)

    def random_mutation(self, name: str, origins: int = 30) -> None:
        """One operator or checker action at ``name``, drawn from what the product does."""
        st = self.states[name]
        rng = self.rng
        oid = f"o{rng.randrange(origins)}"
        r = rng.random()
        if r < 0.55:
            status = rng.choice(["up", "down"])
            band = "<100ms" if status == "up" else None
            delta = st.observe(oid, name, status, self.ts(name), band, rng.choice(["", "503"]))
        elif r < 0.75:
            src = rng.choice(["config", "api"])
            delta = st.declare(spec(oid, rng.choice(["5s", "10s"])), name, src, self.ts(name))
        elif r < 0.85:
            delta = st.remove_observation(oid, name)
        else:
            decls = st.declarations(oid)
            if not decls:
                return
            node, src, _ = rng.choice(decls)
            delta = st.retract(oid, node, src)
        self.publish(name, delta)

    def live(self) -> list[str]:
        return [n for n in self.states if self.sim.nodes[n].alive]

    def converged(self) -> bool:
        names = self.live()
        first = self.states[names[0]]
        return all(self.states[n] == first for n in names[1:])

    def run_until_converged(self, limit: float, step: float = 0.25) -> float | None:
        """Seconds until every live replica is equal, or None if not within ``limit``."""
        t0 = self.sim.now
        while self.sim.now - t0 <= limit:
            if self.converged():
                return self.sim.now - t0
            self.sim.run_for(step)
        return None
