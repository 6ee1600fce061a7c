"""Add-wins observed-remove set: DotMap[E, DotSet] in the paper's terms.

An element is present while some add of it survives; a remove covers only the adds its
replica has seen, so an add concurrent with a remove wins. Here it is an ORMap whose
registers hold no value (a DotFun of units is a DotSet), which gives it the map's
in-place join and digest-driven anti-entropy for free.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from agent.crdt.causal_context import Digest
from agent.crdt.ormap import ORMap

E = TypeVar("E", bound=Hashable)


class AWORSet(Generic[E]):
    __slots__ = ("map",)

    def __init__(self, m: ORMap[E, None] | None = None) -> None:
        self.map: ORMap[E, None] = m if m is not None else ORMap()

    def elements(self) -> set[E]:
        return set(self.map.keys())

    def __contains__(self, e: object) -> bool:
        return e in self.map

    def __iter__(self) -> Iterator[E]:
        return iter(self.map)

    def __len__(self) -> int:
        return len(self.map)

    # delta-mutators
    def add(self, replica: str, e: E) -> AWORSet[E]:
        return AWORSet(self.map.write(replica, e, None))

    def remove(self, replica: str, e: E) -> AWORSet[E]:
        """An empty delta if ``e`` is absent (no event is made)."""
        return AWORSet(self.map.remove(replica, [e]))

    def join(self, other: AWORSet[E]) -> set[E]:
        """In place; returns the elements whose presence (or dots) changed."""
        return self.map.join(other.map)

    def digest(self) -> Digest:
        return self.map.digest()

    def delta_for(self, remote: Digest) -> AWORSet[E]:
        return AWORSet(self.map.delta_for(remote))

    def is_empty(self) -> bool:
        return self.map.is_empty()

    def copy(self) -> AWORSet[E]:
        return AWORSet(self.map.copy())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AWORSet) and self.map == other.map

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AWORSet({sorted(map(repr, self.map.keys()))})"
