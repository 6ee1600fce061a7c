"""A node restarted over a store it cannot read must never reuse its old dots.

Three real coordinators, each over a real Store in its own tmp dir, replicate through
the membership simulator (real membership cores, real replication messages as bytes).
n0 declares origins, its peers learn them (they now hold n0's dots), n0 is killed and
its store is overwritten with junk. It restarts and at once declares a new origin,
before it has heard from anyone. If it reused its old dots, its peers would take the
new write for one they had already seen (and drop it), and anti-entropy would then
"repair" both sides into a state that lacks writes: every replica must instead end
with every origin anyone declared, and all replicas equal.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from agent.config import Config, NodeConfig, OriginSpec
from agent.coordinator import Coordinator
from agent.membership.protocol import Event
from agent.membership.settings import Settings
from agent.membership.simulator import Simulator
from agent.replication import Gossip, Output
from tests.replication_sim import EDGE_META, T0, spec


class IdleEngine:
    """The check engine is not under test: nothing here settles, so nothing is checked."""

    def set_origins(
        self, specs: Iterable[OriginSpec], *, immediate: bool | Iterable[str] = False
    ) -> None:
        raise AssertionError("the coordinator was never settled; it must not check")


class StoredCluster:
    """n coordinators with real stores under ``root``, wired to the simulator the way
    the runtime wires them to the live membership node."""

    def __init__(self, root: Path, n: int = 3) -> None:
        self.root = root
        self.sim = Simulator(
            n,
            seed=7,
            settings=Settings(push_pull_interval=2.0),
            meta=EDGE_META,
            local_state=lambda name, join: self.nodes[name].replicator.local_state(join),
            on_event=self._on_event,
        )
        self.nodes: dict[str, Coordinator] = {}
        for name in self.sim.nodes:
            self.open(name)

    def data_dir(self, name: str) -> Path:
        return self.root / name

    def open(self, name: str) -> Coordinator:
        config = Config(node=NodeConfig(name=name, data_dir=self.data_dir(name)))
        c = Coordinator(name, config, IdleEngine(), wall=lambda: T0 / 1000 + self.sim.now)
        c.transport = lambda outs: self._send(name, outs)
        self.nodes[name] = c
        return c

    def _send(self, name: str, outs: list[Output]) -> None:
        core = self.sim.nodes[name].core
        for out in outs:
            if isinstance(out, Gossip):
                core.queue_user_broadcast(out.payload, exclude=out.exclude)
            elif out.reliable:
                core.send_reliable(out.addr, out.payload, self.sim.now)
            else:
                core.send_user(out.addr, out.payload)
        self.sim.flush(name)

    def _on_event(self, name: str, ev: Event) -> None:
        core = self.sim.nodes[name].core
        self.nodes[name].on_event(ev, self.sim.now, core.members)

    def declare(self, name: str, *oids: str) -> None:
        """API declarations at ``name``, committed (and so published) at once."""
        c = self.nodes[name]
        for oid in oids:
            c.put(spec(oid), self.sim.now)
        c.commit(self.sim.now)

    def crash_and_corrupt(self, name: str) -> list[str]:
        """kill -9, then every store file overwritten with junk of the same size."""
        self.sim.kill(name)
        self.nodes[name].commit(self.sim.now)  # everything it published is on disk
        del self.nodes[name]
        store = self.data_dir(name) / "store"
        hit = []
        for f in sorted(os.listdir(store)):
            path = store / f
            if path.is_file() and path.stat().st_size:
                path.write_bytes(b"\xa5" * path.stat().st_size)
                hit.append(f)
        return hit

    def restart(self, name: str) -> Coordinator:
        c = self.open(name)
        self.sim.restart(name)
        return c

    def catalogues(self) -> dict[str, set[str]]:
        return {n: set(c.state.catalogue()) for n, c in self.nodes.items()}

    def equal(self) -> bool:
        states = [c.state for c in self.nodes.values()]
        return all(s == states[0] for s in states[1:])

    def run_until(self, done: object, limit: float) -> bool:
        assert callable(done)
        t0 = self.sim.now
        while self.sim.now - t0 <= limit:
            if done():
                return True
            self.sim.run_for(0.25)
        return bool(done())


def test_a_node_restarted_over_an_unreadable_store_never_reuses_its_dots(
    tmp_path: Path,
) -> None:
    cl = StoredCluster(tmp_path)
    cl.sim.join_all()
    cl.sim.run_for(10.0)
    cl.declare("n0000", "old-a", "old-b", "old-c")
    cl.declare("n0001", "peer-1")
    cl.declare("n0002", "peer-2")
    before = {"old-a", "old-b", "old-c", "peer-1", "peer-2"}
    assert cl.run_until(lambda: cl.equal() and cl.catalogues()["n0001"] == before, 30.0), (
        cl.catalogues()
    )

    assert cl.crash_and_corrupt("n0000"), "the store had files to corrupt"
    n0 = cl.restart("n0000")
    cl.declare("n0000", "new-x")  # before it has heard from anyone

    everything = before | {"new-x"}
    converged = cl.run_until(
        lambda: cl.equal() and all(c == everything for c in cl.catalogues().values()), 60.0
    )
    assert converged, f"replicas did not converge on every write: {cl.catalogues()}"
    # it started over a store it could not read: it says so, and kept the damage
    assert "store-recovery" in n0.faults, n0.faults
    assert os.listdir(cl.data_dir("n0000") / "store" / "quarantine")
