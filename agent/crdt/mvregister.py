"""Multi-value register: DotFun[V] in the paper's terms.

A write supersedes every value its replica has seen; writes no replica saw each other
make are all kept, and a reader sees them all (and resolves them, e.g. by timestamp).
This keeps conflicts visible instead of silently picking one by a clock. Here it is an
ORMap with a single key.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from agent.crdt.causal_context import Digest
from agent.crdt.ormap import ORMap

V = TypeVar("V")

_KEY = 0


class MVRegister(Generic[V]):
    __slots__ = ("map",)

    def __init__(self, m: ORMap[int, V] | None = None) -> None:
        self.map: ORMap[int, V] = m if m is not None else ORMap()

    def values(self) -> list[V]:
        """The concurrent values (none before the first write or after a reset)."""
        return self.map.values_at(_KEY)

    # delta-mutators
    def write(self, replica: str, value: V) -> MVRegister[V]:
        return MVRegister(self.map.write(replica, _KEY, value))

    def reset(self, replica: str) -> MVRegister[V]:
        """Clear the values this replica has seen (an empty delta if there are none)."""
        return MVRegister(self.map.remove(replica, [_KEY]))

    def join(self, other: MVRegister[V]) -> bool:
        """In place; whether the register changed."""
        return bool(self.map.join(other.map))

    def digest(self) -> Digest:
        return self.map.digest()

    def delta_for(self, remote: Digest) -> MVRegister[V]:
        return MVRegister(self.map.delta_for(remote))

    def is_empty(self) -> bool:
        return self.map.is_empty()

    def copy(self) -> MVRegister[V]:
        return MVRegister(self.map.copy())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MVRegister) and self.map == other.map

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MVRegister({self.values()!r})"
