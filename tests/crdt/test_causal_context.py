"""The causal context against a plain set of dots, and its anti-entropy arithmetic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.crdt import CausalContext, Dot

dots = st.builds(Dot, st.sampled_from("abc"), st.integers(1, 12))
dot_sets = st.sets(dots, max_size=30)


def ctx_of(ds: set[Dot]) -> CausalContext:
    c = CausalContext()
    for d in sorted(ds, key=lambda d: (d.counter * 7919) % 13):  # any insertion order
        c.add(d)
    return c


@given(dot_sets, dots)
def test_contains_matches_a_plain_set(ds: set[Dot], probe: Dot) -> None:
    c = ctx_of(ds)
    assert c.contains(probe) == (probe in ds)
    assert set(c.dots()) == ds and c.dot_count() == len(ds)


@given(dot_sets)
def test_is_always_compact(ds: set[Dot]) -> None:
    c = ctx_of(ds)
    for d in c.cloud:
        assert d.counter > c.vv.get(d.replica, 0) + 1  # a gap below every outlier
    assert c == CausalContext(c.vv, c.cloud)


@given(dot_sets, dot_sets, dot_sets)
def test_merge_is_a_join(x: set[Dot], y: set[Dot], z: set[Dot]) -> None:
    def m(p: CausalContext, q: CausalContext) -> CausalContext:
        out = p.copy()
        out.merge(q)
        return out

    cx, cy, cz = ctx_of(x), ctx_of(y), ctx_of(z)
    assert m(cx, cx) == cx
    assert m(cx, cy) == m(cy, cx) == ctx_of(x | y)
    assert m(m(cx, cy), cz) == m(cx, m(cy, cz)) == ctx_of(x | y | z)
    assert m(cx, cy).includes(cx) and cx.includes(cy) == (y <= x)


@given(dot_sets, dot_sets)
def test_missing_from_is_set_difference(mine: set[Dot], theirs: set[Dot]) -> None:
    missing = ctx_of(mine).missing_from(ctx_of(theirs).digest())
    assert set(missing.dots()) == mine - theirs


@given(dot_sets, st.sampled_from("abcd"))
def test_next_dot_is_fresh(ds: set[Dot], replica: str) -> None:
    d = ctx_of(ds).next_dot(replica)
    assert d.replica == replica and all(d.counter > x.counter for x in ds if x.replica == replica)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), dots),
        st.tuples(st.just("merge"), dot_sets),
        st.tuples(st.just("copy"), st.none()),
        st.tuples(st.just("ask"), st.sampled_from("abc")),
    ),
    max_size=40,
)


@given(ops)
def test_max_counter_stays_exact_through_adds_merges_and_copies(steps: list[tuple]) -> None:
    """max_counter keeps a running maximum of the cloud (so a write is O(1)): asked at
    any point, it equals the highest counter of the dots held."""
    c, held = CausalContext(), set()
    for op, arg in steps:
        if op == "add":
            c.add(arg)
            held.add(arg)
        elif op == "merge":
            c.merge(ctx_of(arg))
            held |= arg
        elif op == "copy":
            c = c.copy()
        else:  # asked now: the running maximum is built here, and kept from here on
            want = max((d.counter for d in held if d.replica == arg), default=0)
            assert c.max_counter(arg) == want
    for r in "abc":
        want = max((d.counter for d in held if d.replica == r), default=0)
        assert c.max_counter(r) == want and c.next_dot(r) == Dot(r, want + 1)


def test_digest_of_a_compact_context_is_one_entry_per_replica() -> None:
    c = CausalContext()
    for i in range(1, 10_001):
        for r in "abc":
            c.add(Dot(r, i))
    assert c.digest() == (({"a": 10_000, "b": 10_000, "c": 10_000}), frozenset(), None)
