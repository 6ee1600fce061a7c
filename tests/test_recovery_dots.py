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
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

import pytest

from agent.crdt.hlc import Timestamp
from agent.domain.origin import OriginSpec
from agent.membership.protocol import Event
from agent.membership.settings import Settings
from agent.membership.simulator import Simulator
from agent.node.replication import Gossip, Output
from agent.shell.config import Config, NodeConfig
from agent.shell.coordinator import Coordinator, CoordinatorCollector
from tests.replication_sim import EDGE_META, T0, spec


class IdleEngine:
    """The check engine is not under test: nothing here settles, so nothing is checked."""

    def update(
        self,
        upsert: Iterable[OriginSpec],
        remove: Iterable[str] = (),
        immediate: Collection[str] = (),
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


# --- one node: which restarts change the replica id, and how it is reported ---------------


def node(tmp_path: Path, name: str = "pi-1") -> Coordinator:
    config = Config(node=NodeConfig(name=name, data_dir=tmp_path))
    return Coordinator(name, config, IdleEngine(), wall=lambda: T0 / 1000)


def own_counter(c: Coordinator) -> int:
    return c.state.crdt.ctx.vv.get(c.state.dot_id, 0)


def test_a_new_store_gets_its_own_replica_id_and_a_clean_restart_keeps_it(
    tmp_path: Path,
) -> None:
    c = node(tmp_path)
    first = c.state.dot_id
    assert first.startswith("pi-1~") and not c.faults
    c.put(spec("a"), 0.0)
    c.close()
    again = node(tmp_path)
    assert again.state.dot_id == first and not again.faults
    assert own_counter(again) == 1  # the counter carries on, under the same id
    again.put(spec("b"), 0.0)
    assert own_counter(again) == 2


def test_a_store_from_before_replica_ids_keeps_signing_with_the_node_name(
    tmp_path: Path,
) -> None:
    from agent.node.state import State, encode_delta
    from agent.store import Store

    st = State("pi-1")  # what the previous version wrote: dots named after the node
    d = st.declare(spec("a"), "pi-1", "config", Timestamp(T0, 0, "pi-1"))
    assert d is not None
    s = Store(tmp_path / "store")
    s.append_delta(encode_delta(d))
    s.set_meta({"hlc": T0})
    s.close()
    c = node(tmp_path)
    assert c.state.dot_id == "pi-1" and own_counter(c) == 1 and not c.faults
    c.close()
    assert node(tmp_path).state.dot_id == "pi-1"  # now persisted


def corrupt_snapshot(c: Coordinator, store: Path) -> None:
    c.commit(0.0)
    assert c.store.snapshot(c.state.snapshot())
    c.close()
    snap = next(f for f in sorted(store.iterdir()) if f.suffix == ".snap")
    snap.write_bytes(snap.read_bytes()[:-3] + b"\x00\x00\x00")


def corrupt_log_tail(c: Coordinator, store: Path) -> None:
    c.close()
    seg = max(f for f in store.iterdir() if f.suffix == ".log" and f.stat().st_size)
    data = seg.read_bytes()
    seg.write_bytes(data[:-4] + b"\xff\xff\xff\xff")


def undecodable_delta(c: Coordinator, store: Path) -> None:
    c.store.append_delta(b"\x93\x01\x02")  # a valid record whose delta does not decode
    c.close()


@pytest.mark.parametrize("damage", [corrupt_snapshot, corrupt_log_tail, undecodable_delta])
def test_a_partly_readable_store_keeps_what_it_can_but_never_its_old_id(
    tmp_path: Path, damage: Callable[[Coordinator, Path], None]
) -> None:
    c = node(tmp_path)
    old_id = c.state.dot_id
    for oid in ("a", "b", "c"):
        c.put(spec(oid), 0.0)
        c.commit(0.0)
    damage(c, tmp_path / "store")
    again = node(tmp_path)
    assert again.state.dot_id != old_id and again.state.dot_id.startswith("pi-1~")
    assert "store-recovery" in again.faults and again.faults["store-recovery"][0] == "degraded"
    assert os.listdir(tmp_path / "store" / "quarantine")
    assert set(again.state.catalogue()) <= {"a", "b", "c"}
    assert again.hlc.high_water > T0  # the HLC never goes back
    metrics = {
        m.name: m.samples[0].value for m in CoordinatorCollector(again).collect() if m.samples
    }
    assert metrics["edge_agent_store_quarantined_files"] >= 1
    again.close()
    # the new id is in the store: the restart after this one keeps it (no new fault)
    third = node(tmp_path)
    assert third.state.dot_id == again.state.dot_id and not third.faults
