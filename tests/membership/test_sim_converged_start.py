"""The simulator's converged start: shared member records, copied by the core that changes one.

Simulator.converge hands every core one table of shared records (Membership.adopt_members)
so 10,000 nodes fit in memory; a change one core makes must never show in another's view.
"""

from __future__ import annotations

from agent.membership.messages import NodeState, Suspect
from agent.membership.settings import Settings
from agent.membership.simulator import Simulator


def converged(n: int, seed: int = 5) -> Simulator:
    sim = Simulator(n, seed=seed, settings=Settings(push_pull_interval=0))
    sim.converge()
    return sim


def test_every_node_sees_every_node_alive_and_stays_so() -> None:
    sim = converged(30)
    assert sim.converged()
    i = len(sim.observed)
    sim.run_for(10.0)
    assert sim.converged()
    assert [o for o in sim.observed[i:] if o.kind != "join"] == []
    assert sim.bad_input() == {}


def test_records_are_shared_until_a_core_changes_one() -> None:
    sim = converged(10)
    a, b = sim.nodes["n0001"].core, sim.nodes["n0002"].core
    assert a.node_map["n0003"] is b.node_map["n0003"]  # one record for both tables
    assert a.node_map["n0001"] is not b.node_map["n0001"]  # a's own record is a's alone
    assert not a.node_map["n0001"].shared
    target = a.node_map["n0003"]
    a.handle_message(Suspect(target.incarnation, "n0003", "n0004"), ("10.0.0.5", 7946), sim.now)
    mine = a.node_map["n0003"]
    assert mine is not target and not mine.shared
    assert mine.state == NodeState.SUSPECT
    assert mine in a.nodes and target not in a.nodes  # the probe order holds the copy
    assert b.node_map["n0003"].state == NodeState.ALIVE  # b's view did not change
    assert target.state == NodeState.ALIVE


def test_a_killed_node_is_detected_by_every_survivor() -> None:
    sim = converged(20)
    sim.run_for(3.0)
    sim.kill("n0007")
    sim.run_for(40.0)
    for node in sim.live_nodes():
        assert sim.view(node.name)["n0007"] == "dead", node.name
        assert sum(1 for s in sim.view(node.name).values() if s == "alive") == 19
