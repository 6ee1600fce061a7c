"""Replica simulation for the CRDT property tests: run a history of operations on a few
replicas, deliver the resulting deltas late, out of order, twice or never, and repair
with digest-driven anti-entropy."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hypothesis import strategies as st

from agent.crdt import AWORSet, LWWRegister, MVRegister, ORMap, Timestamp

T = TypeVar("T")

REPLICAS = ("a", "b", "c")

# (replica, kind, key, value): kind picks write vs remove, key/value are small so that
# operations collide on keys and run concurrently with each other
Op = tuple[int, int, int, int]
ops = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 9), st.integers(0, 3), st.integers(0, 5)),
    max_size=60,
)


@dataclass
class Kind(Generic[T]):
    """How to drive one CRDT type in the simulation."""

    name: str
    new: Callable[[], T]
    mutate: Callable[[T, str, Op, int], T]  # (state, replica, op, step) -> delta
    join: Callable[[T, T], Any]
    copy: Callable[[T], T]
    sync: Callable[[T, T], T]  # what `src` sends `dst` in anti-entropy

    def joined(self, a: T, b: T) -> T:
        out = self.copy(a)
        self.join(out, b)
        return out


def _ormap_mut(m: ORMap[int, int], r: str, op: Op, step: int) -> ORMap[int, int]:
    _, kind, key, value = op
    if kind < 6:
        return m.write(r, key, value)
    keys = [key] if kind < 9 else [0, 1, 2, 3]  # sometimes one event removes many keys
    return m.remove(r, keys)


def _set_mut(s: AWORSet[int], r: str, op: Op, step: int) -> AWORSet[int]:
    return s.add(r, op[2]) if op[1] < 6 else s.remove(r, op[2])


def _reg_mut(g: MVRegister[int], r: str, op: Op, step: int) -> MVRegister[int]:
    return g.write(r, op[3]) if op[1] < 7 else g.reset(r)


def _lww_mut(g: LWWRegister[int], r: str, op: Op, step: int) -> LWWRegister[int]:
    # wall times collide on purpose; (wall, logical, node) stays unique via the step
    return g.set(Timestamp(op[2], step, r), op[3])


def _ormap_sync(src: ORMap[int, int], dst: ORMap[int, int]) -> ORMap[int, int]:
    return src.delta_for(dst.digest())


ORMAP: Kind[ORMap[int, int]] = Kind("ormap", ORMap, _ormap_mut, ORMap.join, ORMap.copy, _ormap_sync)
AWORSET: Kind[AWORSet[int]] = Kind(
    "aworset",
    AWORSet,
    _set_mut,
    AWORSet.join,
    AWORSet.copy,
    lambda src, dst: src.delta_for(dst.digest()),
)
MVREGISTER: Kind[MVRegister[int]] = Kind(
    "mvregister",
    MVRegister,
    _reg_mut,
    MVRegister.join,
    MVRegister.copy,
    lambda src, dst: src.delta_for(dst.digest()),
)
# a single register has no causal context to digest: its anti-entropy is the state itself
LWW: Kind[LWWRegister[int]] = Kind(
    "lww", LWWRegister, _lww_mut, LWWRegister.join, LWWRegister.copy, lambda src, dst: src
)
KINDS: list[Kind[Any]] = [ORMAP, AWORSET, MVREGISTER, LWW]
CAUSAL_KINDS: list[Kind[Any]] = [ORMAP, AWORSET, MVREGISTER]


@dataclass
class Run(Generic[T]):
    states: dict[str, T]
    deltas: list[tuple[str, T]] = field(default_factory=list)  # (origin replica, delta)


def simulate(
    kind: Kind[T],
    history: list[Op],
    rnd: random.Random,
    loss: float = 0.0,
    dup: float = 0.0,
    new: Callable[[], T] | None = None,
) -> Run[T]:
    """Apply ``history``; each delta reaches each other replica at a random later time,
    twice with probability ``dup``, never with probability ``loss``."""
    make = new or kind.new
    run = Run({r: make() for r in REPLICAS})
    queue: list[tuple[str, T]] = []
    for step, op in enumerate(history):
        r = REPLICAS[op[0]]
        delta = kind.mutate(run.states[r], r, op, step)
        kind.join(run.states[r], delta)
        run.deltas.append((r, delta))
        for other in REPLICAS:
            if other == r or rnd.random() < loss:
                continue
            queue.append((other, delta))
            if rnd.random() < dup:
                queue.append((other, delta))
        rnd.shuffle(queue)
        for _ in range(rnd.randint(0, len(queue))):
            dst, d = queue.pop()
            kind.join(run.states[dst], d)
    rnd.shuffle(queue)
    for dst, d in queue:
        kind.join(run.states[dst], d)
    return run


def anti_entropy(kind: Kind[T], states: dict[str, T], rounds: int) -> None:
    """``rounds`` rounds in which every replica pulls from every other."""
    for _ in range(rounds):
        for src in REPLICAS:
            for dst in REPLICAS:
                if src != dst:
                    kind.join(states[dst], kind.sync(states[src], states[dst]))
