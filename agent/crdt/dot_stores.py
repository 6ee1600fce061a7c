"""Dot stores and their causal join, as in Almeida, Shoker, Baquero (2018), section 6.

A causal CRDT's state is a pair (store, context). The store holds the dots of what is
live; the context holds every dot ever seen, so a dot that is in the context but not in
the store is known to have been removed. That is what lets a join tell "you never saw
this" (keep it) from "you saw it and removed it" (drop it) without tombstones:

    (s, c) join (s', c') = ((s & s') | (s - c') | (s' - c),  c | c')

The three stores:

- DotSet: a set of dots (the store of an add-wins flag or set element).
- DotFun: dot -> value, values immutable per dot (the store of a multi-value register).
- DotMap: key -> dot store, joined key by key with the shared context, empty stores
  dropped (the store of observed-remove maps and sets).

These are the pure, functional reference forms: they build new containers and never
mutate their arguments. The maps the agent keeps (agent.crdt.ormap) join in place and
in time proportional to the delta; the tests check them against these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Set
from typing import Any, TypeVar

from agent.crdt.causal_context import CausalContext
from agent.crdt.dot import Dot

K = TypeVar("K")
V = TypeVar("V")
S = TypeVar("S")

DotSet = frozenset[Dot]
DotFun = Mapping[Dot, V]
DotMap = Mapping[K, S]


def join_dot_set(s1: Set[Dot], c1: CausalContext, s2: Set[Dot], c2: CausalContext) -> DotSet:
    """The causal join of two DotSets (their contexts are joined by the caller)."""
    return frozenset(
        [d for d in s1 if d in s2 or not c2.contains(d)]
        + [d for d in s2 if d not in s1 and not c1.contains(d)]
    )


def join_dot_fun(
    f1: Mapping[Dot, V], c1: CausalContext, f2: Mapping[Dot, V], c2: CausalContext
) -> dict[Dot, V]:
    """The causal join of two DotFuns. A dot's value never changes, so a dot present on
    both sides carries the same value and either copy will do."""
    out = {d: v for d, v in f1.items() if d in f2 or not c2.contains(d)}
    for d, v in f2.items():
        if d not in f1 and not c1.contains(d):
            out[d] = v
    return out


def join_dot_map(
    m1: Mapping[K, S],
    c1: CausalContext,
    m2: Mapping[K, S],
    c2: CausalContext,
    join_inner: Callable[[S, CausalContext, S, CausalContext], S],
    empty: S,
) -> dict[K, S]:
    """The causal join of two DotMaps: key by key, dropping keys whose store is empty."""
    out: dict[K, S] = {}
    for k in m1.keys() | m2.keys():
        v = join_inner(m1.get(k, empty), c1, m2.get(k, empty), c2)
        if v:
            out[k] = v
    return out


def dots_of(store: Any) -> Iterator[Dot]:
    """Every dot in a (possibly nested) dot store."""
    if isinstance(store, Dot):
        yield store
    elif isinstance(store, Mapping):
        for k, v in store.items():
            if isinstance(k, Dot):
                yield k
            else:
                yield from dots_of(v)
    else:
        for d in store:
            yield from dots_of(d)
