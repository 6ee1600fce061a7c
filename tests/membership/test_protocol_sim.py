"""The SWIM/Lifeguard core, driven directly and through the deterministic simulator."""

from __future__ import annotations

import random

import pytest

from agent.membership.codec import decode_message
from agent.membership.keyring import Keyring
from agent.membership.messages import (
    AckResp,
    Alive,
    Dead,
    IndirectPingReq,
    NackResp,
    NodeState,
    Ping,
    Suspect,
)
from agent.membership.protocol import (
    HealthScore,
    Membership,
    NameConflict,
    Rejected,
    SendPacket,
)
from agent.membership.settings import Settings, retransmit_limit, suspicion_timeout
from agent.membership.simulator import Simulator
from agent.membership.suspicion import Suspicion, remaining_suspicion_time


def core(name: str, ip: str, **kw: object) -> Membership:
    m = Membership(name, ip, 7946, rng=random.Random(1), **kw)  # type: ignore[arg-type]
    m.start(0.0)
    m.events()
    m.packets_to_send()
    return m


def decoded(p: SendPacket) -> list[object]:
    return [decode_message(raw) for raw in p.messages]


def alive_of(m: Membership, now: float = 0.0) -> Alive:
    me = m.node_map[m.name]
    return Alive(me.incarnation, me.name, me.addr, me.port, me.meta, me.vsn)


# --- pieces ----------------------------------------------------------------------------------


def test_memberlist_formulas() -> None:
    # DefaultLANConfig: 5 nodes -> 4 s min suspicion, retransmit 4 * ceil(log10(6)) = 4
    assert suspicion_timeout(4, 5, 1.0) == 4.0
    assert suspicion_timeout(4, 100, 1.0) == 8.0
    assert retransmit_limit(4, 5) == 4
    assert retransmit_limit(4, 10) == 8


def test_suspicion_shrinks_with_confirmations() -> None:
    s = Suspicion("a", k=3, min_timeout=2.0, max_timeout=12.0, now=0.0)
    assert s.deadline == 12.0
    assert not s.confirm("a", 1.0)  # the accuser cannot confirm itself
    assert s.confirm("b", 1.0)
    first = s.deadline
    assert s.confirm("c", 1.0) and s.deadline < first
    assert s.confirm("d", 1.0)
    assert s.deadline == pytest.approx(2.0)  # k confirmations: the minimum
    assert not s.confirm("e", 1.0)  # enough already
    assert remaining_suspicion_time(0, 3, 0.0, 2.0, 12.0) == 12.0


# --- direct protocol behaviour -------------------------------------------------------------


def test_ping_is_acked_to_its_source_address() -> None:
    b = core("b", "10.0.0.2")
    b.handle_message(Ping(7, "b", bytes([10, 0, 0, 1]), 8000, "a"), ("10.9.9.9", 1), 1.0)
    (p,) = b.packets_to_send()
    assert p.addr == ("10.0.0.1", 8000)
    assert isinstance(decoded(p)[0], AckResp) and decoded(p)[0].seq_no == 7  # type: ignore[attr-defined]
    # a ping meant for someone else is refused and counted
    b.handle_message(Ping(8, "zz", b"", 0, "a"), ("10.0.0.1", 7946), 1.0)
    assert not b.packets_to_send()
    assert any(isinstance(e, Rejected) and e.kind == "wrong_node" for e in b.events())


def test_indirect_ping_relays_ack_or_nacks() -> None:
    c = core("c", "10.0.0.3")
    ind = IndirectPingReq(5, bytes([10, 0, 0, 2]), 7946, "b", True, bytes([10, 0, 0, 1]), 7946, "a")
    c.handle_message(ind, ("10.0.0.1", 7946), 1.0)
    (ping_pkt,) = c.packets_to_send()
    ping = decoded(ping_pkt)[0]
    assert isinstance(ping, Ping) and ping_pkt.addr == ("10.0.0.2", 7946)
    # target answers: the ack is relayed to the requester with the requester's seq
    c.handle_message(AckResp(ping.seq_no, b""), ("10.0.0.2", 7946), 1.1)
    (relay,) = c.packets_to_send()
    assert relay.addr == ("10.0.0.1", 7946)
    assert decoded(relay)[0] == AckResp(5, b"")
    # a second request that times out gets a nack
    c.handle_message(ind, ("10.0.0.1", 7946), 2.0)
    c.packets_to_send()
    c.handle_timer(2.0 + c.settings.probe_timeout)
    (nack,) = c.packets_to_send()
    assert decoded(nack)[0] == NackResp(5)


def test_refutes_suspicion_and_death_with_higher_incarnation() -> None:
    a = core("a", "10.0.0.1")
    inc = a.incarnation
    a.handle_message(Suspect(inc, "a", "b"), ("10.0.0.2", 7946), 1.0)
    assert a.incarnation == inc + 1
    assert a.node_map["a"].state == NodeState.ALIVE
    a.handle_message(Dead(inc + 5, "a", "b"), ("10.0.0.2", 7946), 2.0)
    assert a.incarnation == inc + 6  # above the accusation
    assert a.node_map["a"].state == NodeState.ALIVE
    assert a.health_score >= 1  # being accused is a sign of our own trouble


def test_buddy_system_suspect_learns_on_next_ping() -> None:
    a = core("a", "10.0.0.1", settings=Settings(probe_interval=1.0))
    b = core("b", "10.0.0.2")
    a.handle_message(alive_of(b), ("10.0.0.2", 7946), 0.1)
    a.handle_message(Suspect(b.incarnation, "b", "c"), ("10.0.0.3", 7946), 0.2)
    assert a.node_map["b"].state == NodeState.SUSPECT
    a.packets_to_send()
    a.handle_timer(5.0)  # the next probe goes to b, a suspect: ping + suspect together
    pkts = [p for p in a.packets_to_send() if p.addr == ("10.0.0.2", 7946)]
    kinds = [type(m).__name__ for p in pkts for m in decoded(p)]
    assert "Ping" in kinds and "Suspect" in kinds
    for p in pkts:
        for msg in decoded(p):
            b.handle_message(msg, ("10.0.0.1", 7946), 5.0)  # type: ignore[arg-type]
    assert b.incarnation > a.node_map["b"].incarnation  # b refuted at once


def test_short_vsn_alive_is_rejected_not_relayed() -> None:
    a = core("a", "10.0.0.1")
    queued = len(a.broadcasts)
    bad = Alive(1, "evil", bytes([10, 0, 0, 9]), 7946, b"", bytes([1, 5, 2]))
    a.handle_message(bad, ("10.0.0.9", 7946), 1.0)
    assert "evil" not in a.node_map
    assert any(isinstance(e, Rejected) and e.kind == "short_vsn" for e in a.events())
    assert len(a.broadcasts) == queued  # nothing to relay


def test_same_name_from_another_address_is_a_conflict() -> None:
    a = core("a", "10.0.0.1")
    b = core("b", "10.0.0.2")
    a.handle_message(alive_of(b), ("10.0.0.2", 7946), 0.5)
    impostor = Alive(9, "b", bytes([10, 0, 0, 66]), 7946, b"", alive_of(b).vsn)
    a.handle_message(impostor, ("10.0.0.66", 7946), 1.0)
    assert a.node_map["b"].host == "10.0.0.2"  # the cluster is not corrupted
    assert any(isinstance(e, NameConflict) for e in a.events())


# --- simulation ------------------------------------------------------------------------------


def dead_events(sim: Simulator, member: str) -> list[str]:
    return [o.observer for o in sim.observed if o.kind == "dead" and o.member == member]


def test_same_seed_same_run() -> None:
    def run() -> list[tuple[float, str, str, str]]:
        sim = Simulator(12, seed=42, loss=0.05)
        sim.join_all()
        sim.run_for(10)
        sim.kill("n0003")
        sim.run_for(20)
        return [(o.at, o.observer, o.kind, o.member) for o in sim.observed]

    assert run() == run()


def test_n50_lossy_no_false_deaths_and_every_kill_detected() -> None:
    """50 nodes, 10% loss on every link, 10 simulated minutes."""
    sim = Simulator(50, seed=11, loss=0.10)
    sim.join_all()
    sim.run_for(20)
    assert sim.converged()
    sim.run_for(600)
    false_deaths = [o for o in sim.observed if o.kind == "dead"]
    assert false_deaths == []
    victims = ["n0007", "n0023", "n0041"]
    for v in victims:
        sim.kill(v)
        sim.run_for(5)
    sim.run_for(60)
    for v in victims:
        live = {n.name for n in sim.live_nodes()}
        assert set(dead_events(sim, v)) >= live, v
    others = {o.member for o in sim.observed if o.kind == "dead"} - set(victims)
    assert others == set()


def test_stalled_nodes_do_not_get_healthy_nodes_declared_dead() -> None:
    """Lifeguard: nodes frozen for 2 s at random (SD-card stalls) accuse nobody to death."""
    sim = Simulator(30, seed=5, loss=0.02)
    sim.join_all()
    sim.run_for(20)
    assert sim.converged()
    rng = random.Random(9)
    for _ in range(60):
        sim.stall(f"n{rng.randrange(30):04d}", 2.0)
        sim.run_for(rng.uniform(1.0, 5.0))
    sim.run_for(60)
    assert [o for o in sim.observed if o.kind == "dead"] == []
    assert sim.converged()
    scores = [n.core.health_score for n in sim.live_nodes()]
    assert max(scores) < Settings().awareness_max_multiplier


def test_restarted_node_is_alive_again_promptly() -> None:
    sim = Simulator(8, seed=3)
    sim.join_all()
    sim.run_for(10)
    sim.kill("n0004")
    sim.run_for(20)
    assert all(sim.view(n.name).get("n0004") == "dead" for n in sim.live_nodes())
    sim.restart("n0004")  # same name and address, incarnation from its last run
    sim._at(sim.now, "join", ("n0004", sim.nodes["n0000"].addr))
    t0 = sim.now
    sim.run_for(10)
    back = {
        o.observer: o.at
        for o in sim.observed
        if o.kind == "join" and o.member == "n0004" and o.at >= t0
    }
    others = {n.name for n in sim.live_nodes()} - {"n0004"}
    assert set(back) >= others
    assert max(back[n] for n in others) - t0 < 3.0
    assert sim.converged()


def test_graceful_leave_is_left_everywhere() -> None:
    sim = Simulator(6, seed=2)
    sim.join_all()
    sim.run_for(10)
    sim.leave("n0002")
    sim.run_for(3)
    sim.kill("n0002")
    sim.run_for(10)
    for n in sim.live_nodes():
        assert sim.view(n.name)["n0002"] == "left", n.name
    assert dead_events(sim, "n0002") == []


def addresses(sim: Simulator, member: str) -> dict[str, tuple[str, str, int]]:
    """observer -> (state, host, port) of `member` in that observer's view."""
    out = {}
    for n in sim.live_nodes():
        m = n.core.node_map.get(member)
        if m is not None:
            out[n.name] = (m.state_name, m.host, m.port)
    return out


def test_running_node_moves_to_a_new_address_without_a_restart() -> None:
    sim = Simulator(10, seed=11)
    sim.join_all()
    sim.run_for(10)
    assert sim.converged()
    t0 = sim.now
    sim.readdress("n0003", ("10.9.9.9", 7946))  # a new DHCP lease; the old address is gone
    sim.run_for(2)
    want = ("alive", "10.9.9.9", 7946)
    assert addresses(sim, "n0003") == {n.name: want for n in sim.live_nodes()}
    assert sim.converged()
    # peers saw it leave and come back (never a failure), and nobody else moved
    assert dead_events(sim, "n0003") == []
    back = {
        o.observer for o in sim.observed if o.kind == "join" and o.member == "n0003" and o.at >= t0
    }
    assert back == {n.name for n in sim.live_nodes()} - {"n0003"}
    assert not [o for o in sim.observed if o.at >= t0 and o.member != "n0003"]
    sim.run_for(60)  # and it stays that way: no stale gossip drags it back
    assert addresses(sim, "n0003") == {n.name: want for n in sim.live_nodes()}


def test_new_address_reaches_a_peer_that_missed_the_leave() -> None:
    """10% loss: some peers miss the direct leave and call the new address a conflict;
    they find the old one failed, reclaim the name and take the new address."""
    sim = Simulator(10, seed=12, loss=0.10)
    sim.join_all()
    sim.run_for(20)
    assert sim.converged()
    sim.readdress("n0005", ("10.9.9.5", 7946))
    want = ("alive", "10.9.9.5", 7946)
    deadline = sim.now + 120
    while sim.now < deadline:
        sim.run_for(1)
        if addresses(sim, "n0005") == {n.name: want for n in sim.live_nodes()}:
            break
    assert addresses(sim, "n0005") == {n.name: want for n in sim.live_nodes()}
    assert sim.converged()


def test_readdress_before_any_peer_only_changes_what_we_announce() -> None:
    """Started before the network had an address (loopback): nobody to tell yet."""
    a = core("a", "127.0.0.1")
    a.readdress("10.0.0.7", 7946, 1.0)
    assert a.node_map["a"].host == "10.0.0.7"
    assert a.packets_to_send() == []
    a_state = a._local_push_pull(join=False)  # what a joiner learns of us
    assert [(n.name, n.addr) for n in a_state.nodes] == [("a", bytes([10, 0, 0, 7]))]


def test_stale_news_of_our_former_address_is_not_a_rival() -> None:
    a = core("a", "10.0.0.1")
    before = alive_of(a)
    a.readdress("10.0.0.7", 7946, 1.0)
    a.events()
    a.handle_message(before, ("10.0.0.2", 7946), 2.0)  # a peer that missed the move
    assert not [e for e in a.events() if isinstance(e, NameConflict)]
    assert a.node_map["a"].host == "10.0.0.7"
    # a push/pull from a peer that still holds the old address is counted: the adapter
    # pushes again until a round sees none
    b = core("b", "10.0.0.2")
    b.handle_message(before, ("10.0.0.1", 7946), 2.0)
    a._merge_remote(b._local_push_pull(join=False), 2.5)
    assert a.stale_views == 1
    b.handle_message(alive_of(a), ("10.0.0.7", 7946), 3.0)  # b misses the leave: conflict
    a._merge_remote(b._local_push_pull(join=False), 3.5)
    assert a.stale_views == 2
    a.events()
    # a rival at an address we never had is still one
    rival = Alive(before.incarnation, "a", bytes([10, 0, 0, 66]), 7946, b"", before.vsn)
    a.handle_message(rival, ("10.0.0.66", 7946), 3.0)
    assert [e for e in a.events() if isinstance(e, NameConflict)]


def test_partition_heals() -> None:
    sim = Simulator(10, seed=4)
    sim.join_all()
    sim.run_for(10)
    left = [f"n{i:04d}" for i in range(5)]
    right = [f"n{i:04d}" for i in range(5, 10)]
    sim.partition(left, right)
    sim.run_for(60)
    assert set(dead_events(sim, "n0009")) >= set(left)
    assert "n0009" not in sim.view("n0000")  # reaped after gossip_to_the_dead_time
    sim.heal()
    # dead nodes are still gossiped to for a while, and push/pull repairs the rest
    for n in sim.live_nodes():
        n.core.join([sim.nodes["n0009" if n.name in left else "n0000"].addr], sim.now)
        sim._flush(n)
    sim.run_for(30)
    assert sim.converged()
    joins = [e for e in sim.observed if e.kind == "join" and e.at > 70]
    assert joins


def test_member_events_are_emitted() -> None:
    sim = Simulator(3, seed=8)
    sim.join_all()
    sim.run_for(5)
    kinds = {(o.observer, o.member) for o in sim.observed if o.kind == "join"}
    assert ("n0000", "n0002") in kinds and ("n0002", "n0001") in kinds
    assert all(isinstance(o.at, float) for o in sim.observed)


def test_simulated_traffic_is_whole_encrypted_datagrams() -> None:
    """The simulator runs the live node's packet path: a cluster key is on, every node
    decodes whole datagrams, and a node with another key is kept out and counted."""
    sim = Simulator(10, seed=6)
    assert sim.keyring is not None
    sim.join_all()
    sim.run_for(10)
    assert sim.converged()
    assert all(n.endpoint.counters.packets_in > 0 for n in sim.nodes.values())
    assert sim.bad_input() == {}
    assert sim.bytes_sent >= 29 * sim.packets_sent  # AES-GCM's version, nonce and tag
    rogue = sim.add_node("rogue")
    rogue.endpoint.keyring = Keyring([bytes(32)])
    sim._at(sim.now, "join", ("rogue", sim.nodes["n0000"].addr))
    sim.run_for(10)
    assert "rogue" not in sim.view("n0000")
    assert sim.bad_input()["decrypt_failed"] > 0


def test_plaintext_simulation_still_runs_the_packet_layer() -> None:
    sim = Simulator(5, seed=6, encrypt=False)
    sim.join_all()
    sim.run_for(5)
    assert sim.keyring is None and sim.converged()
    assert sum(n.endpoint.counters.packets_in for n in sim.nodes.values()) > 0


def test_every_change_of_the_health_score_is_an_event() -> None:
    """Lifeguard's score is told as it changes (HealthScore), so what shows a node's own
    health follows it without polling: up when a probe goes unanswered (no peer to nack
    for it in a cluster of two), and the event carries the score the core holds."""
    seen: list[tuple[str, int, int]] = []
    sim = Simulator(2)

    def on_event(name: str, ev: object) -> None:
        if isinstance(ev, HealthScore):
            seen.append((name, ev.score, sim.nodes[name].core.health_score))

    sim.on_event = on_event
    sim.join_all()
    sim.run_for(5)
    assert seen == []  # probes answered: the score never left 0
    sim.kill("n0001")
    sim.run_for(10)
    assert seen and seen[0][:2] == ("n0000", 1)
    assert all(score == held for _, score, held in seen)
