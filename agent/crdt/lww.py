"""Last-writer-wins register, ordered by HLC timestamp (wall, logical, node).

The simplest lattice that resolves a conflict to *one* value the same way everywhere:
the greatest timestamp wins. Timestamps are unique per event (an HLC never issues one
twice, and the node name breaks ties), so there are no ties to resolve. Used where a
single answer is needed and "newest" is the right one: the effective spec of an origin
declared, with different specs, by several nodes.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from agent.crdt.hlc import Timestamp

V = TypeVar("V")


class LWWRegister(Generic[V]):
    __slots__ = ("ts", "value")

    def __init__(self, ts: Timestamp | None = None, value: V | None = None) -> None:
        self.ts = ts
        self.value = value

    def set(self, ts: Timestamp, value: V) -> LWWRegister[V]:
        """Delta-mutator: the delta is the new state, or bottom if ``ts`` is not newer."""
        if self.ts is not None and ts <= self.ts:
            return LWWRegister()
        return LWWRegister(ts, value)

    def join(self, other: LWWRegister[V]) -> bool:
        """In place; whether the value changed."""
        if other.ts is None or (self.ts is not None and other.ts <= self.ts):
            return False
        self.ts, self.value = other.ts, other.value
        return True

    def is_empty(self) -> bool:
        return self.ts is None

    def copy(self) -> LWWRegister[V]:
        return LWWRegister(self.ts, self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LWWRegister) and (self.ts, self.value) == (other.ts, other.value)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LWWRegister({self.ts!r}, {self.value!r})"
