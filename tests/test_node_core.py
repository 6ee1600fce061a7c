"""The node core with no event loop, no sockets and no files: events in, outputs out.

Every test builds ``NodeCore`` objects directly and carries their outputs by hand:
records are what a store would persist, ``local`` is what may be published once those
records are durable, and the replicator's packets are delivered as membership events.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from agent.checks.state import Status, Transition
from agent.crdt.hlc import Timestamp
from agent.domain.origin import OriginSpec, parse_origin
from agent.membership.member import Member as GossipMember
from agent.membership.messages import NodeState
from agent.membership.meta import encode_tags
from agent.membership.protocol import MemberEvent, UserMessage
from agent.node.core import CHECK_AT_ONCE_MAX, Conflict, NodeCore, Outputs
from agent.node.placement import ROLE
from agent.node.replication import HELLO, KIND_REPAIR, Gossip, Send, encode_message
from agent.node.state import State, decode_delta
from agent.node.verdicts import VerdictChange


def spec(origin_id: str, interval: str = "10s") -> OriginSpec:
    return parse_origin(
        {"id": origin_id, "url": f"http://127.0.0.1:9/{origin_id}", "interval": interval}
    )


def member(
    name: str, state: NodeState = NodeState.ALIVE, meta: bytes | None = None
) -> GossipMember:
    tags = encode_tags({"role": ROLE, "version": "test"}) if meta is None else meta
    return GossipMember(name, b"\x7f\x00\x00\x01", 7946, meta=tags, state=state)


def core(name: str, replicas: int = 1) -> NodeCore:
    return NodeCore(name, State(name), replicas=replicas, reap_after=60.0)


def answer_from(c: NodeCore, name: str, now: float, members: list[GossipMember]) -> None:
    """``name`` answers ``c``'s hello, as a real edge-agent does: proof (agent/node/proof.py)."""
    hello = encode_message(KIND_REPAIR, name, HELLO)
    c.on_event(UserMessage(hello, None), now, 1000.0 + now, lambda: members)


def carry(cores: dict[str, NodeCore], now: float, members: list[GossipMember]) -> int:
    """Deliver every direct send (hellos, repairs) between the cores until none is left;
    how many were delivered."""
    n = 0
    for _ in range(10):
        sends = [o for c in cores.values() for o in c.drain().sends if isinstance(o, Send)]
        if not sends:
            return n
        for out in sends:
            ev = UserMessage(out.payload, None)
            cores[out.node].on_event(ev, now, 1000.0 + now, lambda: members)
            n += 1
    raise AssertionError("the cores never stop sending")


def durable(c: NodeCore, out: Outputs) -> list[bytes]:
    """What a shell does once ``out.records`` are on disk: publish; the packets sent."""
    c.publish(out.local)
    return [o.payload for o in c.drain().sends if isinstance(o, Gossip)]


def test_constructed_and_driven_without_an_event_loop() -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    c = core("a")
    c.start([spec("web")], now=0.0, wall=1000.0, alone=True)
    out = c.drain()
    assert out.engine is not None and [s.id for s in out.engine.upsert] == ["web"]
    assert out.origins == {"web"}


def test_declaration_is_recorded_and_published_only_when_the_shell_says_durable() -> None:
    a = core("a")
    a.start([], now=0.0, wall=1000.0, alone=True)
    a.on_event(MemberEvent("join", member("b")), 1.0, 1001.0, lambda: [member("b")])
    a.drain()
    assert a.put(spec("api-origin"), now=2.0, wall=1002.0) is True
    out = a.drain()
    # one record, and the same delta held back for publication: nothing sent yet
    assert len(out.records) == 1 and out.local is not None and out.sends == []
    assert decode_delta(out.records[0]) == out.local
    assert a.put(spec("api-origin", "20s"), now=3.0, wall=1003.0) is False  # an update
    out2 = a.drain()
    sent = durable(a, out2)
    assert len(sent) == 1  # published on the shell's word only
    # a peer applying what was published learns the newest declaration
    b = core("b")
    b.on_event(UserMessage(sent[0], None), 0.0, 1004.0, list)
    assert b.state.spec("api-origin") == spec("api-origin", "20s")
    assert b.drain().records  # the peer persists what it applied


def test_delete_of_a_config_origin_is_a_conflict_and_unknown_is_false() -> None:
    a = core("a")
    a.start([spec("cfg")], now=0.0, wall=1000.0, alone=True)
    a.drain()
    assert a.delete("nope", 1.0, 1001.0) is False
    with pytest.raises(Conflict, match="config of a"):
        a.delete("cfg", 1.0, 1001.0)
    assert a.state.spec("cfg") is not None


def test_ownership_moves_when_a_member_joins_and_the_engine_set_follows() -> None:
    a = core("a")
    ids = [f"o{i}" for i in range(20)]
    a.start([spec(o) for o in ids], now=0.0, wall=1000.0, alone=True)
    first = a.drain()
    assert first.engine is not None and {s.id for s in first.engine.upsert} == set(ids)
    a.members_changed([member("a"), member("b")], now=1.0, wall=1001.0)
    answer_from(a, "b", 1.0, [member("a"), member("b")])
    out = a.drain()
    moved = {o for o in ids if a.owners(o) == ("b",)}
    assert moved and moved != set(ids)  # placement spreads them
    # a handoff: a keeps checking what moved (draining) until b reports or time is up
    assert a.mine() == set(ids)
    assert out.engine is None or not out.engine.remove
    assert set(a.checked_specs()) == set(ids)
    a.tick(now=1.0 + 3 * 10.0 + 1.0, wall=1032.0, alive={"a", "b"})
    out = a.drain()
    assert out.engine is not None and out.engine.remove == moved and not out.engine.upsert
    assert set(a.checked_specs()) == set(ids) - moved
    assert a.mine() == set(ids) - moved


def test_owners_come_from_distinct_sites() -> None:
    """Issue 19: with replicas = 2, a node in site "x" and two in site "y" each origin is
    owned by one node of each site; the core's own member carries its configured site."""
    a = NodeCore("a", State("a"), site="x", replicas=2, reap_after=60.0)
    ids = [f"o{i}" for i in range(30)]
    a.start([spec(o) for o in ids], now=0.0, wall=1000.0, alone=True)

    def sited(name: str, site: str) -> GossipMember:
        tags = {"role": ROLE, "version": "test", "site": site}
        return member(name, meta=encode_tags(tags))

    members = [sited("a", "x"), sited("b", "y"), sited("c", "y")]
    a.members_changed(members, now=1.0, wall=1001.0)
    for name in ("b", "c"):
        answer_from(a, name, 1.0, members)
    assert a.placement.members["a"].site == "x"
    assert all(len(a.owners(o)) == 2 and "a" in a.owners(o) for o in ids)
    assert {n for o in ids for n in a.owners(o)} == {"a", "b", "c"}


def test_a_member_without_our_role_gets_nothing() -> None:
    a = core("a")
    a.start([spec(f"o{i}") for i in range(10)], now=0.0, wall=1000.0, alone=True)
    serf = member("serf", meta=encode_tags({"role": "web"}))
    a.members_changed([member("a"), serf], now=1.0, wall=1001.0)
    assert all(a.owners(f"o{i}") == ("a",) for i in range(10))


def test_observation_changes_the_verdict_once() -> None:
    a = core("a")
    a.start([spec("web")], now=0.0, wall=1000.0, alone=True)
    a.drain()
    up = Transition("web", Status.UNKNOWN, Status.UP, "200 OK", 0.01, 5.0)
    a.on_transition(up, wall=1005.0)
    out = a.drain()
    assert [(v.origin, v.old, v.new, v.at) for v in out.verdicts] == [
        ("web", "unknown", "up", 1005.0)
    ]
    assert out.records and out.local is not None
    assert a.verdict("web") == "up" and a.counts()["up"] == 1
    a.on_transition(Transition("web", Status.UP, Status.DOWN, "HTTP 500", 0.01, 6.0), 1006.0)
    down = a.drain().verdicts
    assert [(v.old, v.new, v.reason) for v in down] == [("up", "down", "HTTP 500")]
    assert [t.new for t in a.transitions] == ["up", "down"]


def test_handoff_ends_when_the_new_owner_reports() -> None:
    """b joins and takes over an origin from a: a keeps checking it until b's first
    observation reaches a through replication, then stops and removes its own."""
    a, b = core("a"), core("b")
    ids = [f"o{i}" for i in range(20)]
    for c in (a, b):
        c.start([spec(o) for o in ids], now=0.0, wall=1000.0, alone=True)
        c.drain()
    a.on_transition(Transition("o0", Status.UNKNOWN, Status.UP, "ok", 0.01, 1.0), 1001.0)
    a.drain()
    everyone = [member("a"), member("b")]
    for c, other in ((a, "b"), (b, "a")):
        c.on_event(MemberEvent("join", member(other)), 2.0, 1002.0, lambda: everyone)
    assert carry({"a": a, "b": b}, 2.0, everyone) == 4  # each asks, each answers
    moved = sorted(o for o in ids if a.owners(o) == ("b",))
    assert moved and b.owners(moved[0]) == ("b",)
    target = moved[0]
    for o in ids:  # a reports on every origin it checked before b came
        t = Transition(o, Status.UNKNOWN, Status.UP, "ok", 0.01, 2.5)
        a.on_transition(t, 1002.5)
    a.drain()
    assert target in a.mine()  # draining: still checked by a
    b.on_transition(Transition(target, Status.UNKNOWN, Status.UP, "ok", 0.01, 3.0), 1003.0)
    sent = durable(b, b.drain())
    assert sent
    for payload in sent:
        a.on_event(UserMessage(payload, None), 3.5, 1003.5, lambda: everyone)
    out = a.drain()
    assert target not in a.mine()
    assert out.engine is not None and out.engine.remove == {target}
    assert a.state.observation(target, "a") is None  # a's own observation removed
    assert out.records  # ...and that removal is a record to persist
    assert a.verdict(target) == "up"  # b's observation carries the verdict


def test_a_bug_in_tag_decoding_is_not_hidden() -> None:
    """Nothing is caught around decode_tags (damaged bytes are its own business: it keeps
    what it read and counts the damage): a meta that is not bytes at all is a bug and
    must surface, not turn into "no tags"."""
    a = core("a")
    a.start([], now=0.0, wall=1000.0, alone=True)
    broken = GossipMember("b", b"\x7f\x00\x00\x01", 7946, meta=None, state=NodeState.ALIVE)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        a.members_changed([member("a"), broken], now=1.0, wall=1001.0)


def test_reap_removes_observations_of_long_gone_observers() -> None:
    a, b = core("a", replicas=2), core("b", replicas=2)
    for c in (a, b):
        c.start([spec("web")], now=0.0, wall=1000.0, alone=True)
        c.drain()
    everyone = [member("a"), member("b")]
    b.on_event(MemberEvent("join", member("a")), 0.0, 1000.0, lambda: everyone)
    b.drain()
    b.on_transition(Transition("web", Status.UNKNOWN, Status.UP, "ok", 0.01, 1.0), 1001.0)
    for payload in durable(b, b.drain()):
        a.on_event(UserMessage(payload, None), 1.0, 1001.0, list)
    a.drain()
    assert a.state.observation("web", "b") is not None
    a.tick(now=61.0, wall=1061.0, alive={"a"})  # b first seen gone
    a.tick(now=122.0, wall=1122.0, alive={"a"})  # gone for 61 s > reap_after
    out = a.drain()
    assert a.state.observation("web", "b") is None and out.records


def test_a_node_back_from_a_lost_store_keeps_its_config_spec_over_its_old_declaration() -> None:
    """A Pi whose card was replaced (a new replica id) and whose clock runs behind its
    old declarations learns them back from a peer: its config must still win, not the
    older spec that merely carries a later timestamp."""
    before = NodeCore("a", State("a", dot_id="a~old"), replicas=1, reap_after=60.0)
    before.start([spec("web", "10s")], now=0.0, wall=5000.0, alone=True)
    before.on_event(MemberEvent("join", member("b")), 1.0, 5001.0, lambda: [member("b")])
    before.drain()
    before.declare_config([spec("web", "30s")], now=2.0, wall=5002.0)  # a SIGHUP, later
    old = durable(before, before.drain())
    assert old, "the old declaration reached the peer"
    after = NodeCore("a", State("a", dot_id="a~new"), replicas=1, reap_after=60.0)
    after.start([spec("web", "10s")], now=0.0, wall=1000.0, alone=True)  # clock behind
    after.on_event(MemberEvent("join", member("b")), 1.0, 1001.0, lambda: [member("b")])
    after.drain()
    for payload in old:  # the peer repairs us with what it holds
        after.on_event(UserMessage(payload, None), 2.0, 1002.0, list)
    after.drain()
    assert after.state.spec("web") == spec("web", "10s")
    decls = [d for n, s, d in after.state.declarations("web") if (n, s) == ("a", "config")]
    assert len(decls) == 1  # the stale concurrent value is superseded, not kept beside


def test_a_claimant_owns_nothing_until_it_answers_and_is_asked_less_and_less() -> None:
    """Issue 16 item 9: a foreign node tagged role=edge-agent (and even version) is asked
    to prove it speaks our protocol; until it answers it owns nothing, and the asks back
    off so a Serf agent that logs each one is not flooded."""
    a = core("a")
    ids = [f"o{i}" for i in range(20)]
    a.start([spec(o) for o in ids], now=0.0, wall=1000.0, alone=True)
    a.drain()
    everyone = [member("a"), member("x")]
    a.on_event(MemberEvent("join", member("x")), 1.0, 1001.0, lambda: everyone)
    asks = [o for o in a.drain().sends if isinstance(o, Send)]
    assert [(o.node, o.payload[2]) for o in asks] == [("x", 1)]  # KIND_DELTA: answer me
    assert all(a.owners(o) == ("a",) for o in ids)
    asked_at = []
    for t in range(2, 40):
        a.tick(float(t), 1000.0 + t, {"a", "x"})
        if any(isinstance(o, Send) for o in a.drain().sends):
            asked_at.append(t)
    assert asked_at == [3, 7, 15, 31]  # 2, 4, 8, 16 s apart
    assert all(a.owners(o) == ("a",) for o in ids)
    answer_from(a, "x", 40.0, everyone)
    assert {a.owners(o) for o in ids} >= {("x",), ("a",)}  # proven: it owns its share
    a.tick(100.0, 1100.0, {"a", "x"})
    assert not a.drain().sends  # proven: never asked again


def test_a_fresh_cluster_proves_everyone_in_one_round_trip_and_agrees() -> None:
    """Three new agents: the join events make each ask the others, the answers prove them,
    and every node computes the same owners, with every member owning a share."""
    names = ["a", "b", "c"]
    cores = {n: core(n, replicas=2) for n in names}
    ids = [f"o{i}" for i in range(30)]
    everyone = [member(n) for n in names]
    for c in cores.values():
        c.start([spec(o) for o in ids], now=0.0, wall=1000.0, alone=True)
        c.drain()
    for n, c in cores.items():
        for other in names:
            if other != n:
                c.on_event(MemberEvent("join", member(other)), 1.0, 1001.0, lambda: everyone)
    carry(cores, 1.0, everyone)
    owners = {n: {o: c.owners(o) for o in ids} for n, c in cores.items()}
    assert owners["a"] == owners["b"] == owners["c"]
    assert {m for t in owners["a"].values() for m in t} == set(names)


def test_proof_is_kept_while_alive_and_asked_again_after_death() -> None:
    a = core("a")
    ids = [f"o{i}" for i in range(20)]
    a.start([spec(o) for o in ids], now=0.0, wall=1000.0, alone=True)
    everyone = [member("a"), member("b")]
    a.on_event(MemberEvent("join", member("b")), 1.0, 1001.0, lambda: everyone)
    answer_from(a, "b", 1.0, everyone)
    owned = {o: a.owners(o) for o in ids}
    assert any("b" in t for t in owned.values())
    suspect = [member("a"), member("b", NodeState.SUSPECT)]
    a.on_event(MemberEvent("suspect", suspect[1]), 2.0, 1002.0, lambda: suspect)
    assert {o: a.owners(o) for o in ids} == owned  # no flapping on a suspicion
    dead = [member("a"), member("b", NodeState.DEAD)]
    a.on_event(MemberEvent("dead", dead[1]), 3.0, 1003.0, lambda: dead)
    a.drain()
    assert all(a.owners(o) == ("a",) for o in ids)
    a.on_event(MemberEvent("join", member("b")), 4.0, 1004.0, lambda: everyone)
    assert all(a.owners(o) == ("a",) for o in ids)  # back: must prove itself again
    assert [o.node for o in a.drain().sends if isinstance(o, Send)] == ["b"]
    answer_from(a, "b", 4.0, everyone)
    assert {o: a.owners(o) for o in ids} == owned


def test_verdict_totals_kept_incrementally_match_a_full_count() -> None:
    """counts() and mine_counts() are O(1) (kept as verdicts and ownership change, asked
    at every surfaces refresh); they must say what a pass over every origin says, through
    changes, removals (a batch: handoff first, then the verdict forgotten) and re-adds."""
    a = core("a")
    ids = [f"o{i}" for i in range(12)]
    a.start([spec(o) for o in ids], now=0.0, wall=1000.0, alone=True)

    def full() -> dict[str, int]:
        owned = a.handoff.owned()
        assert a.mine_counts() == {"owned": len(owned), **a.verdicts.counts(owned)}
        return a.verdicts.counts(a.placement.origins)

    statuses = [Status.UP, Status.DOWN, Status.UP]
    for step, o in enumerate(ids[:9]):
        new = statuses[step % 3]
        a.on_transition(Transition(o, Status.UNKNOWN, new, "r", 0.01, 1.0 + step), 1001.0 + step)
        assert a.counts() == full()
    a.on_transition(Transition("o0", Status.UP, Status.DOWN, "r", 0.01, 20.0), 1020.0)
    assert a.counts() == full() == {"up": 5, "down": 4, "disputed": 0, "unknown": 3}
    a.declare_config([spec(o) for o in ids if o not in ("o0", "o1", "o11")], 30.0, 1030.0)
    assert a.counts() == full() == {"up": 5, "down": 2, "disputed": 0, "unknown": 2}
    a.declare_config([spec(o) for o in ids], 40.0, 1040.0)
    assert a.counts() == full()
    assert sum(a.counts().values()) == len(ids)


def test_new_origins_keep_their_phase_and_a_takeover_is_checked_at_once() -> None:
    """docs/config.md: the first check of each origin is spread over its interval, so
    ten thousand declared together do not fire together; a few new ones, and a
    takeover, are checked at once."""
    a = core("a")
    a.start([], now=0.0, wall=1000.0, alone=True)
    a.drain()
    batch = [spec(f"n{i}") for i in range(CHECK_AT_ONCE_MAX + 1)]
    a.apply_batch(batch, 1.0, 1001.0, replace=False)
    out = a.drain()
    assert out.engine is not None and {s.id for s in out.engine.upsert} == {s.id for s in batch}
    assert out.engine.immediate == frozenset()  # new, and many: their phases stand
    # a small change (one PUT, a handful) is checked at once: its verdict comes in seconds
    assert a.put(spec("single"), now=2.0, wall=1002.0) is True
    out = a.drain()
    assert out.engine is not None and out.engine.immediate == frozenset({"single"})
    few = [spec(f"f{i}") for i in range(CHECK_AT_ONCE_MAX)]
    a.apply_batch(few, 2.5, 1002.5, replace=False)
    out = a.drain()
    assert out.engine is not None and out.engine.immediate == frozenset(s.id for s in few)

    # b owns part of the catalogue, then dies: a takes its origins over, at once
    members = [member("a"), member("b")]
    a.members_changed(members, now=3.0, wall=1003.0)
    answer_from(a, "b", 3.0, members)
    a.drain()
    b_owned = {o for o in a.placement.origins if a.owners(o) == ("b",)}
    assert b_owned
    a.tick(now=3.0 + 3 * 10.0 + 1.0, wall=1034.0, alive={"a", "b"})  # a's drains end
    a.drain()
    a.members_changed([member("a"), member("b", NodeState.DEAD)], now=40.0, wall=1040.0)
    out = a.drain()
    assert out.engine is not None and out.engine.immediate == frozenset(b_owned)


@pytest.mark.parametrize("seed", range(8))
def test_the_engine_diffs_add_up_to_exactly_the_checked_set(seed: int) -> None:
    """EngineUpdate is a diff; a shell that applies every one holds, after each drain,
    exactly what the node checks (owned or draining) with each origin's current spec,
    through puts, respecs, deletes, batches, members coming and going and drains ending."""
    rng = random.Random(seed)
    a = core("a", replicas=2)
    a.start([spec("cfg")], now=0.0, wall=1000.0, alone=True)
    engine: dict[str, OriginSpec] = {}
    now = 0.0
    peers = ["b", "c", "d"]
    up = {"b"}
    for step in range(120):
        now += rng.choice([0.5, 2.0, 15.0])
        op = rng.randrange(6)
        ids = [f"o{rng.randrange(40)}" for _ in range(rng.randrange(1, 6))]
        if op == 0:
            a.put(spec(ids[0], rng.choice(["10s", "20s"])), now, 1000.0 + now)
        elif op == 1:
            a.delete(ids[0], now, 1000.0 + now)
        elif op == 2:
            batch = {o: spec(o, rng.choice(["10s", "30s"])) for o in ids}
            a.apply_batch(list(batch.values()), now, 1000.0 + now, replace=rng.random() < 0.2)
        elif op == 3:
            up ^= {rng.choice(peers)}
            members = [member("a")] + [
                member(p, NodeState.ALIVE if p in up else NodeState.DEAD) for p in peers
            ]
            a.members_changed(members, now, 1000.0 + now)
            for p in sorted(up):
                answer_from(a, p, now, members)
        else:
            a.tick(now, 1000.0 + now, alive={"a"} | up)
        out = a.drain()
        if out.engine is not None:
            for origin in out.engine.remove:
                engine.pop(origin, None)
            for s in out.engine.upsert:
                engine[s.id] = s
            assert out.engine.immediate <= engine.keys(), step
        want = {o: s for o in a.handoff.checking() if (s := a.state.spec(o)) is not None}
        assert engine == want, step
        assert a.checked_specs() == want


def test_a_takeover_another_live_owner_reports_on_keeps_its_phase() -> None:
    """docs/placement.md: when c dies, a takes over c's origins; those whose other owner
    (b) is alive and reports on them still have a verdict, so a checks them at their
    phase, not all at once; those nobody live reports on are checked at once."""
    cores = {n: core(n, replicas=2) for n in "abc"}
    ids = [f"o{i}" for i in range(60)]
    everyone = [member(n) for n in "abc"]
    for c in cores.values():
        c.start([spec(o) for o in ids], now=0.0, wall=1000.0, alone=True)
        c.drain()
    for c in cores.values():
        for other in "abc":
            if other != c.name:
                c.on_event(MemberEvent("join", member(other)), 1.0, 1001.0, lambda: everyone)
    carry(cores, 1.0, everyone)
    a, b = cores["a"], cores["b"]
    a.tick(now=25.0, wall=1025.0, alive=set("abc"))  # a's drains (from starting alone) end
    a.drain()
    to_a = {o for o in ids if "c" in a.owners(o) and "a" not in a.owners(o)}
    assert to_a and all(a.owners(o) == b.owners(o) for o in ids)
    # b reports on half of the origins it shares with c; nobody reports on the rest
    reported = sorted(o for o in to_a if "b" in a.owners(o))[::2]
    assert reported
    for o in reported:
        b.on_transition(Transition(o, Status.UNKNOWN, Status.UP, "ok", 0.01, 26.0), 1026.0)
    for payload in durable(b, b.drain()):
        a.on_event(UserMessage(payload, None), 26.5, 1026.5, lambda: everyone)
    a.drain()
    assert not to_a & a.mine()  # not checked by a before c dies
    alive = [member("a"), member("b"), member("c", NodeState.DEAD)]
    a.members_changed(alive, now=30.0, wall=1030.0)
    out = a.drain()
    gained = {o for o in ids if "a" in a.owners(o)} & to_a
    assert gained == to_a  # a owns every origin c had with b or with nobody else live
    assert out.engine is not None
    assert out.engine.immediate == frozenset(to_a - set(reported))
    assert set(reported) <= {s.id for s in out.engine.upsert}  # checked, at their phase


def test_a_member_change_decodes_only_the_members_that_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each member event re-reads the whole list; a member whose state, tags and proof are
    as before keeps its Member, so a 100-node join does not decode 100 x 100 tag sets."""
    import agent.node.core as core_module

    decoded: list[bytes] = []
    real = core_module.decode_tags

    def counting(meta: bytes) -> dict[str, str]:
        decoded.append(meta)
        return real(meta)

    monkeypatch.setattr(core_module, "decode_tags", counting)
    a = core("a")
    a.start([spec(f"o{i}") for i in range(40)], now=0.0, wall=1000.0, alone=True)
    members = [member("a")] + [member(f"n{i}") for i in range(30)]
    a.members_changed(members, now=1.0, wall=1001.0)
    assert len(decoded) == 30
    for step in range(10):
        a.members_changed(members, now=2.0 + step, wall=1002.0 + step)
    assert len(decoded) == 30  # nothing changed: nothing decoded again
    # one member's tags change, another dies: exactly those two are read again
    members[5] = member("n4", meta=encode_tags({"role": ROLE, "version": "test", "site": "x"}))
    members[7] = member("n6", NodeState.DEAD)
    a.members_changed(members, now=20.0, wall=1020.0)
    assert len(decoded) == 32
    assert a.placement.members["n4"].site == "x"  # the change itself is seen
    assert not a.placement.members["n6"].eligible


def _judged_fleet(
    slice_size: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[NodeCore, list[VerdictChange], int]:
    """Core "a" of a, b, c (2 replicas, 60 origins); b says every third origin it owns is
    down (more would make b an impaired vantage point, whose reports do not count), the
    others up; then b dies. The verdict changes over the whole run, and the core."""
    from agent.node import core as core_module

    monkeypatch.setattr(core_module, "REJUDGE_SLICE", slice_size)
    names = ["a", "b", "c"]
    alive = [member(n) for n in names]
    a = core("a", replicas=2)
    a.start([spec(f"o{i:02d}") for i in range(60)], now=0.0, wall=1000.0, alone=True)
    a.members_changed(alive, now=1.0, wall=1001.0)
    for n in names[1:]:
        answer_from(a, n, 1.0, alive)
    a.tick(40.0, 1040.0, set(names))
    changes = list(a.drain().verdicts)
    for n in names:
        s = a.state if n == "a" else State(n)
        for i, o in enumerate(sorted(a.placement.origins)):
            if n in a.placement.owners(o):
                status = "down" if n == "b" and i % 3 == 0 else "up"
                d = s.observe(o, n, status, Timestamp(1_040_000, 0, n), None, "")
                if n != "a" and d is not None:
                    a.state.apply(d)
    a._recompute(set(a.placement.origins), 1040.0)
    changes += a.drain().verdicts
    dead = [member(n, NodeState.DEAD if n == "b" else NodeState.ALIVE) for n in names]
    a.members_changed(dead, now=50.0, wall=1050.0)
    left = a.rejudging
    moved = left + min(slice_size, 60)  # the first slice was judged at once
    changes += a.drain().verdicts
    if a.rejudging:  # meanwhile the answer for any one origin is judged fresh
        assert all(a.verdict(o) == "up" for o in a.placement.origins)
    ticks = 0
    while a.rejudging:
        assert a.next_deadline() == 0.0  # due now: the shell's loop comes back at once
        a.tick(50.0 + ticks, 1050.0, {"a", "c"})
        changes += a.drain().verdicts
        ticks += 1
    assert ticks == -(-moved // slice_size) - 1
    return a, changes, left


def test_a_big_move_of_owners_is_judged_in_slices_to_the_same_verdicts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A member's death at 100,000 origins moves 40,000: judging them in one loop pass
    held it ~0.35 s. Sliced over ticks, the verdicts come out the same, and the fleet's
    answer for one origin is fresh meanwhile."""
    whole, whole_changes, whole_left = _judged_fleet(1000, monkeypatch)
    sliced, sliced_changes, sliced_left = _judged_fleet(7, monkeypatch)
    assert whole_left == 0 and sliced_left > 0  # b's death moved more than a slice
    key = sorted((c.origin, c.old, c.new) for c in whole_changes)
    assert key == sorted((c.origin, c.old, c.new) for c in sliced_changes)
    assert any(c.old == "disputed" and c.new == "up" for c in sliced_changes)  # b's downs went
    assert sliced.verdicts.current == whole.verdicts.current
    assert set(sliced.verdicts.current.values()) == {"up"}
