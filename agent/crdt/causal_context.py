"""The causal context: every dot a replica has seen, kept compact.

Represented as a version vector ``{replica: n}`` (all of replica's dots 1..n have been
seen) plus a "dot cloud" of outliers that arrived out of order. ``compact()`` folds
outliers into the vector as soon as the gap below them fills, so in a quiet, converged
cluster the context is one integer per replica, however many items the state holds.
That is what makes it a good anti-entropy digest: two replicas compare contexts of a
few bytes per replica, and the sender ships only the dots the receiver lacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

from agent.crdt.dot import Dot


class Digest(NamedTuple):
    """An immutable summary of a causal context, as sent to a peer for anti-entropy.

    ``fingerprint``, when a store provides one, summarises which of those dots are still
    live, so two replicas with equal contexts can tell whether their stores agree too."""

    vv: Mapping[str, int]
    cloud: frozenset[Dot]
    fingerprint: int | None = None

    def contains(self, dot: Dot) -> bool:
        return dot.counter <= self.vv.get(dot.replica, 0) or dot in self.cloud


class CausalContext:
    """A set of dots as version vector + outliers; mutable, cheap to query."""

    __slots__ = ("_top", "cloud", "vv")

    def __init__(self, vv: Mapping[str, int] | None = None, cloud: Iterable[Dot] = ()) -> None:
        self.vv: dict[str, int] = {r: n for r, n in (vv or {}).items() if n > 0}
        self.cloud: set[Dot] = set(cloud)
        #: per replica, the highest counter ever put in the cloud (None: not built yet).
        #: A dot leaves the cloud only when the vector covers it, so max(vector, _top) is
        #: the highest counter held: ``max_counter`` (each local write) is O(1), not a
        #: scan of the cloud, which holds thousands while a big batch spreads.
        self._top: dict[str, int] | None = None
        self.compact()

    @classmethod
    def of(cls, dots: Iterable[Dot]) -> CausalContext:
        """A context holding exactly ``dots``."""
        return cls(None, dots)

    # --- queries -------------------------------------------------------------------------

    def contains(self, dot: Dot) -> bool:
        return dot.counter <= self.vv.get(dot.replica, 0) or dot in self.cloud

    __contains__ = contains

    def max_counter(self, replica: str) -> int:
        """The highest counter of ``replica`` seen (in the vector or the cloud)."""
        top = self._top
        if top is None:
            top = self._top = {}
            for d in self.cloud:
                if top.get(d.replica, 0) < d.counter:
                    top[d.replica] = d.counter
        return max(self.vv.get(replica, 0), top.get(replica, 0))

    def next_dot(self, replica: str) -> Dot:
        """The dot ``replica``'s next event should carry. Pure: joining the delta adds it."""
        return Dot(replica, self.max_counter(replica) + 1)

    def dot_count(self) -> int:
        """How many dots this context holds (what iterating ``dots()`` would cost)."""
        return sum(self.vv.values()) + len(self.cloud)

    def dots(self) -> Iterator[Dot]:
        for r, n in self.vv.items():
            for c in range(1, n + 1):
                yield Dot(r, c)
        yield from self.cloud

    def is_empty(self) -> bool:
        return not self.vv and not self.cloud

    def includes(self, other: CausalContext) -> bool:
        """Whether every dot of ``other`` is in self."""
        for r, n in other.vv.items():
            mine = self.vv.get(r, 0)
            # where the vector falls short, the cloud may still hold the rest
            if mine < n and any(Dot(r, c) not in self.cloud for c in range(mine + 1, n + 1)):
                return False
        return all(self.contains(d) for d in other.cloud)

    # --- updates -------------------------------------------------------------------------

    def add(self, dot: Dot) -> None:
        n = self.vv.get(dot.replica, 0)
        if dot.counter <= n:
            return
        if dot.counter != n + 1:
            self.cloud.add(dot)
            top = self._top
            if top is not None and top.get(dot.replica, 0) < dot.counter:
                top[dot.replica] = dot.counter
            return
        n += 1
        if self.cloud:
            while (nxt := Dot(dot.replica, n + 1)) in self.cloud:
                self.cloud.discard(nxt)
                n += 1
        self.vv[dot.replica] = n

    def merge(self, other: CausalContext) -> None:
        """Union, in place.

        The cloud is always compact (no dot covered by, or contiguous with, the vector).
        When the vector did not move, only ``other``'s outliers can fold, so only they
        are looked at: a delta that gathers 10,000 observations between two commits
        has 10,000 outliers, and sorting them all on every join made that quadratic."""
        vv = self.vv
        advanced = False
        for r, n in other.vv.items():
            if n > vv.get(r, 0):
                vv[r] = n
                advanced = True
        if advanced:
            if other.cloud:
                self.cloud |= other.cloud
                top = self._top
                if top is not None:
                    for d in other.cloud:
                        if top.get(d.replica, 0) < d.counter:
                            top[d.replica] = d.counter
            if self.cloud:
                self.compact()
            return
        for d in other.cloud:
            self.add(d)

    def compact(self) -> None:
        """Fold outliers that are covered by, or contiguous with, the vector into it."""
        if not self.cloud:
            return
        vv = self.vv
        keep: set[Dot] = set()
        for d in sorted(self.cloud):
            n = vv.get(d.replica, 0)
            if d.counter <= n:
                continue
            if d.counter == n + 1:
                vv[d.replica] = d.counter
            else:
                keep.add(d)
        self.cloud = keep

    def copy(self) -> CausalContext:
        c = CausalContext.__new__(CausalContext)
        c.vv = dict(self.vv)
        c.cloud = set(self.cloud)
        c._top = None if self._top is None else dict(self._top)
        return c

    # --- anti-entropy --------------------------------------------------------------------

    def digest(self) -> Digest:
        return Digest(dict(self.vv), frozenset(self.cloud))

    def missing_from(self, remote: Digest | CausalContext) -> CausalContext:
        """The dots this context holds that ``remote`` does not (what the peer lacks).
        ``remote`` may be a live context: no copy of its cloud is needed to ask it."""
        out = CausalContext()
        for r, n in self.vv.items():
            m = remote.vv.get(r, 0)
            if n <= m:
                continue
            if m == 0 and not remote.cloud:
                out.vv[r] = n
                continue
            for c in range(m + 1, n + 1):
                d = Dot(r, c)
                if d not in remote.cloud:
                    out.cloud.add(d)
        for d in self.cloud:
            if not remote.contains(d):
                out.cloud.add(d)
        out.compact()
        return out

    # --- comparison ----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CausalContext):
            return NotImplemented
        return self.vv == other.vv and self.cloud == other.cloud

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CausalContext({self.vv}, {sorted(self.cloud)})"
