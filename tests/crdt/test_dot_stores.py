"""The paper's causal joins of (store, context) pairs are lattice joins."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent.crdt import CausalContext, Dot
from agent.crdt.dot_stores import (
    DotSet,
    dots_of,
    join_dot_fun,
    join_dot_map,
    join_dot_set,
)

dots = st.builds(Dot, st.sampled_from("ab"), st.integers(1, 5))


@st.composite
def dotset_pairs(draw: st.DrawFn) -> tuple[DotSet, CausalContext]:
    ctx = draw(st.sets(dots, max_size=10))
    store = draw(st.sets(st.sampled_from(sorted(ctx)), max_size=10)) if ctx else set()
    return frozenset(store), CausalContext.of(ctx)


@st.composite
def dotfun_pairs(draw: st.DrawFn) -> tuple[dict[Dot, int], CausalContext]:
    store, ctx = draw(dotset_pairs())
    return {d: hash(d) % 7 for d in store}, ctx  # a dot's value is fixed by the dot


@st.composite
def dotmap_pairs(draw: st.DrawFn) -> tuple[dict[str, DotSet], CausalContext]:
    store, ctx = draw(dotset_pairs())
    out: dict[str, set[Dot]] = {}
    for d in store:  # each dot lives under one key
        out.setdefault(draw(st.sampled_from("xyz")), set()).add(d)
    return {k: frozenset(v) for k, v in out.items()}, ctx


def pair_join(kind: str, p: tuple[Any, CausalContext], q: tuple[Any, CausalContext]) -> Any:
    (s1, c1), (s2, c2) = p, q
    if kind == "set":
        store: Any = join_dot_set(s1, c1, s2, c2)
    elif kind == "fun":
        store = join_dot_fun(s1, c1, s2, c2)
    else:
        store = join_dot_map(s1, c1, s2, c2, join_dot_set, frozenset())
    ctx = c1.copy()
    ctx.merge(c2)
    return store, ctx


PAIRS = {"set": dotset_pairs(), "fun": dotfun_pairs(), "map": dotmap_pairs()}


@given(st.data(), st.sampled_from(sorted(PAIRS)))
def test_causal_join_laws(data: st.DataObject, kind: str) -> None:
    a, b, c = (data.draw(PAIRS[kind]) for _ in range(3))

    def j(p: Any, q: Any) -> Any:
        return pair_join(kind, p, q)

    assert j(a, a) == a
    assert j(a, b) == j(b, a)
    assert j(j(a, b), c) == j(a, j(b, c))
    store, ctx = j(a, b)
    assert all(ctx.contains(d) for d in dots_of(store))


def test_seen_and_absent_means_removed() -> None:
    d1, d2 = Dot("a", 1), Dot("b", 1)
    mine = (frozenset({d1, d2}), CausalContext.of([d1, d2]))
    theirs = (frozenset({d2}), CausalContext.of([d1, d2]))  # they removed d1
    unseen: tuple[DotSet, CausalContext] = (
        frozenset(),
        CausalContext(),
    )  # they never heard of either
    assert pair_join("set", mine, theirs)[0] == {d2}
    assert pair_join("set", mine, unseen)[0] == {d1, d2}
