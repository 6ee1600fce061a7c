"""Lattice laws, delta-mutator correctness and convergence for every CRDT type."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.crdt import AWORSet, Dot, LWWRegister, MVRegister, ORMap, Timestamp

from .support import CAUSAL_KINDS, KINDS, ORMAP, REPLICAS, Kind, Op, anti_entropy, ops, simulate

seeds = st.integers(0, 2**32 - 1)


def three_states(kind: Kind[Any], history: list[Op], seed: int) -> list[Any]:
    """Three reachable, generally different replica states (some deltas lost)."""
    run = simulate(kind, history, random.Random(seed), loss=0.4)
    return [run.states[r] for r in REPLICAS]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
@given(history=ops, seed=seeds)
def test_join_is_idempotent_commutative_associative(
    kind: Kind[Any], history: list[Op], seed: int
) -> None:
    a, b, c = three_states(kind, history, seed)
    assert kind.joined(a, a) == a
    assert kind.joined(a, b) == kind.joined(b, a)
    assert kind.joined(kind.joined(a, b), c) == kind.joined(a, kind.joined(b, c))
    # join is an upper bound: joining either input again changes nothing
    ab = kind.joined(a, b)
    assert kind.joined(ab, a) == ab and kind.joined(ab, b) == ab


@pytest.mark.parametrize("kind", CAUSAL_KINDS, ids=lambda k: k.name)
@given(history=ops, seed=seeds)
def test_same_deltas_in_any_order_with_duplicates_converge(
    kind: Kind[Any], history: list[Op], seed: int
) -> None:
    run = simulate(kind, history, random.Random(seed), loss=0.0, dup=0.3)
    a, b, c = (run.states[r] for r in REPLICAS)
    assert a == b == c
    # and a fresh replica given every delta once, in reverse, lands in the same state
    fresh = kind.new()
    for _, d in reversed(run.deltas):
        kind.join(fresh, d)
    assert fresh == a


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
@settings(max_examples=300)
@given(history=ops, seed=seeds, loss=st.sampled_from([0.2, 0.5, 0.9]))
def test_losses_are_repaired_by_digest_driven_anti_entropy(
    kind: Kind[Any], history: list[Op], seed: int, loss: float
) -> None:
    run = simulate(kind, history, random.Random(seed), loss=loss, dup=0.2)
    # the bound: two rounds of every replica pulling from every other
    anti_entropy(kind, run.states, rounds=2)
    a, b, c = (run.states[r] for r in REPLICAS)
    assert a == b == c
    # and once equal, anti-entropy has nothing more to send
    if kind.name == "lww":
        return  # a register's anti-entropy message is the register itself
    for src in REPLICAS:
        for dst in REPLICAS:
            assert kind.sync(run.states[src], run.states[dst]).is_empty()


@settings(max_examples=400)
@given(history=ops, seed=seeds, limit=st.integers(1, 6))
def test_anti_entropy_converges_even_with_a_tiny_removal_log(
    history: list[Op], seed: int, limit: int
) -> None:
    """Evicted removal records cost bandwidth (whole-state repair), never convergence."""
    run = simulate(ORMAP, history, random.Random(seed), loss=0.5, new=lambda: ORMap(limit))
    anti_entropy(ORMAP, run.states, rounds=3)
    a, b, c = (run.states[r] for r in REPLICAS)
    assert a == b == c


# --- delta-mutators: X ⊔ mδ(X) == m(X), with m written out directly as the reference -------


def ref_write(m: ORMap[Any, Any], r: str, key: Any, value: Any) -> ORMap[Any, Any]:
    entries = {k: dict(e) for k, e in m.entries.items()}
    covers = dict(m.covers)
    d = Dot(r, m.ctx.max_counter(r) + 1)
    kvv = m.key_vv(key)
    kvv.pop(r, None)
    for old in entries.get(key, {}):
        covers.pop(old, None)
    entries[key] = {d: value}
    if kvv:
        covers[d] = tuple(sorted(kvv.items()))
    ctx = m.ctx.copy()
    ctx.add(d)
    return ORMap.from_parts(entries, covers, ctx)


def ref_remove(m: ORMap[Any, Any], r: str, keys: list[Any]) -> ORMap[Any, Any]:
    present = [k for k in keys if k in m]
    if not present:
        return m.copy()
    entries = {k: dict(e) for k, e in m.entries.items() if k not in present}
    covers = {d: c for d, c in m.covers.items() if m._index[d] not in present}
    ctx = m.ctx.copy()
    ctx.add(Dot(r, m.ctx.max_counter(r) + 1))
    return ORMap.from_parts(entries, covers, ctx)


@given(history=ops, seed=seeds, who=st.sampled_from(REPLICAS), key=st.integers(0, 4))
def test_ormap_delta_equals_mutation(history: list[Op], seed: int, who: str, key: int) -> None:
    # a replica mints dots only as itself (see test_mvregister_delta_equals_mutation)
    for replica, m in zip(REPLICAS, three_states(ORMAP, history, seed), strict=True):
        if replica != who:
            continue
        before = m.copy()
        delta = m.write(who, key, 99)
        assert list(delta.entries) == [key]  # small: just the key written
        assert ORMAP.joined(m, delta) == ref_write(m, who, key, 99)
        delta = m.remove(who, [key, 7])
        assert not delta.entries
        assert ORMAP.joined(m, delta) == ref_remove(m, who, [key, 7])
        assert m == before  # delta-mutators are pure


@given(history=ops, seed=seeds, who=st.sampled_from(REPLICAS), e=st.integers(0, 4))
def test_aworset_delta_equals_mutation(history: list[Op], seed: int, who: str, e: int) -> None:
    # a replica mints dots only as itself (see test_mvregister_delta_equals_mutation)
    for replica, s in zip(REPLICAS, three_states(CAUSAL_KINDS[1], history, seed), strict=True):
        if replica != who:
            continue
        added = s.copy()
        added.join(s.add(who, e))
        assert added.elements() == s.elements() | {e}
        assert added.map == ref_write(s.map, who, e, None)
        removed = s.copy()
        removed.join(s.remove(who, e))
        assert removed.elements() == s.elements() - {e}
        assert removed.map == ref_remove(s.map, who, [e])


@given(history=ops, seed=seeds, who=st.sampled_from(REPLICAS), v=st.integers())
def test_mvregister_delta_equals_mutation(history: list[Op], seed: int, who: str, v: int) -> None:
    # a replica mints dots only as itself: writing as another replica on a copy that has
    # not seen all of that replica's dots would reuse a dot, which no real node does
    for replica, g in zip(REPLICAS, three_states(CAUSAL_KINDS[2], history, seed), strict=True):
        if replica != who:
            continue
        written = g.copy()
        written.join(g.write(who, v))
        assert written.values() == [v]
        assert written.map == ref_write(g.map, who, 0, v)
        reset = g.copy()
        reset.join(g.reset(who))
        assert reset.values() == []
        assert reset.map == ref_remove(g.map, who, [0])


@given(history=ops, seed=seeds, wall=st.integers(0, 5), v=st.integers())
def test_lww_delta_equals_mutation(history: list[Op], seed: int, wall: int, v: int) -> None:
    for g in three_states(KINDS[3], history, seed):
        ts = Timestamp(wall, 10**6, "z")
        out = g.copy()
        out.join(g.set(ts, v))
        expect = (ts, v) if g.ts is None or ts > g.ts else (g.ts, g.value)
        assert (out.ts, out.value) == expect


# --- semantics ---------------------------------------------------------------------------------


def test_concurrent_add_and_remove_add_wins() -> None:
    a: AWORSet[str] = AWORSet()
    b: AWORSet[str] = AWORSet()
    a.join(a.add("a", "x"))
    b.join(a)
    rm = b.remove("b", "x")  # b removes the add it saw...
    readd = a.add("a", "x")  # ...while a adds x again
    a.join(readd)
    b.join(rm)
    a.join(rm)
    b.join(readd)
    assert a == b and "x" in a


def test_remove_covers_only_what_was_seen() -> None:
    a: AWORSet[str] = AWORSet()
    b: AWORSet[str] = AWORSet()
    a.join(a.add("a", "x"))
    unseen = b.add("b", "x")
    b.join(unseen)
    rm = a.remove("a", "x")
    a.join(rm)
    a.join(unseen)
    assert "x" in a  # b's add was never observed by the remove


def test_mvregister_keeps_concurrent_values_and_a_later_write_supersedes_them() -> None:
    a: MVRegister[int] = MVRegister()
    b: MVRegister[int] = MVRegister()
    da, db = a.write("a", 1), b.write("b", 2)
    a.join(da)
    b.join(db)
    a.join(db)
    b.join(da)
    assert sorted(a.values()) == sorted(b.values()) == [1, 2]
    a.join(a.write("a", 3))
    b.join(a)
    assert a.values() == b.values() == [3]


def test_a_peer_that_missed_an_overwrite_drops_the_stale_value() -> None:
    """Anti-entropy ships only the newest write; per-key dominance retires the old one,
    even when the overwrite came from another replica (the covers vector)."""
    a: MVRegister[int] = MVRegister()
    b: MVRegister[int] = MVRegister()
    c: MVRegister[int] = MVRegister()
    first = a.write("a", 1)
    for g in (a, b, c):
        g.join(first)
    b.join(b.write("b", 2))  # supersedes a's value; c never hears of this delta
    a.join(a.delta_for(b.digest()))  # a had nothing b lacks
    a.join(b.delta_for(a.digest()))
    c.join(b.delta_for(c.digest()))
    assert a.values() == c.values() == [2] and a == b == c


def test_a_missed_removal_is_resent_by_anti_entropy() -> None:
    a: ORMap[str, int] = ORMap()
    b: ORMap[str, int] = ORMap()
    b.join(a.write("a", "k", 1))
    a.join(b)
    a.join(a.write("a", "k", 2))
    rm = a.remove("a", ["k"])
    a.join(rm)  # b gets neither the overwrite nor the removal
    delta = a.delta_for(b.digest())
    assert not delta.entries and delta.records
    b.join(delta)
    assert "k" not in b and a == b


def test_lww_resolves_by_timestamp_then_node() -> None:
    g: LWWRegister[str] = LWWRegister()
    g.join(g.set(Timestamp(5, 0, "b"), "from b"))
    g.join(g.set(Timestamp(5, 0, "a"), "from a"))  # same time, smaller node: loses
    assert g.value == "from b"
    assert g.set(Timestamp(4, 9, "z"), "older").is_empty()
    g.join(g.set(Timestamp(5, 1, "a"), "newer"))
    assert g.value == "newer"


def test_join_returns_the_keys_that_changed() -> None:
    a: ORMap[str, int] = ORMap()
    b: ORMap[str, int] = ORMap()
    assert b.join(a.write("a", "x", 1)) == {"x"}
    assert b.join(a.write("a", "x", 1)) == set()  # same dot again: nothing new
    a.join(b)
    assert b.join(a.remove("a", ["x", "y"])) == {"x"}


def test_equal_replicas_have_an_empty_delta_and_a_flat_digest() -> None:
    a: ORMap[int, int] = ORMap()
    for i in range(2000):
        a.join(a.write("a", i, i))
    b = a.copy()
    assert a.delta_for(b.digest()).is_empty()
    assert dict(a.digest().vv) == {"a": 2000} and not a.digest().cloud


@pytest.mark.parametrize("limit", [1, 3, 32768])
def test_long_lossy_histories_with_periodic_anti_entropy_converge(limit: int) -> None:
    """Seeded stress: 4 replicas, 120 operations each run, half the deltas lost, pairwise
    anti-entropy now and then, removals of several keys at once; a removal log from one
    record (constant eviction) to the default."""
    names = "abcd"
    for seed in range(300):
        rng = random.Random(seed)
        reps: dict[str, ORMap[str, int]] = {r: ORMap(limit) for r in names}
        queue: list[tuple[str, ORMap[str, int]]] = []
        for _ in range(120):
            r = rng.choice(names)
            keys = rng.sample("wxyz", rng.randint(1, 2))
            m = reps[r]
            d = m.write(r, keys[0], rng.randint(0, 9)) if rng.random() < 0.6 else m.remove(r, keys)
            m.join(d)
            queue += [(o, d) for o in names if o != r and rng.random() < 0.5]
            if queue and rng.random() < 0.5:
                rng.shuffle(queue)
                dst, dd = queue.pop()
                reps[dst].join(dd)
            if rng.random() < 0.1:
                src, dst = rng.sample(names, 2)
                reps[dst].join(reps[src].delta_for(reps[dst].digest()))
        for dst, dd in queue:
            if rng.random() < 0.5:
                reps[dst].join(dd)
        for _ in range(2):
            for src in names:
                for dst in names:
                    if src != dst:
                        reps[dst].join(reps[src].delta_for(reps[dst].digest()))
        assert all(reps[x] == reps["a"] for x in names), f"seed {seed}"
