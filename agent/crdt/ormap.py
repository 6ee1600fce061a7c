"""The observed-remove map of multi-value registers: the engine under every causal type.

State: ``entries`` (key -> DotFun: dot -> value; one register per key) and one shared
causal context, as the DotMap[K, DotFun[V]] of Almeida et al. (2018). A write puts a
fresh dot at the key and covers the dots that were there; a remove covers them with no
new value; a concurrent write and remove keep the write (add-wins), because the remover
never saw the writer's dot. AWORSet and MVRegister are this map with a unit value and a
single key.

Digest-driven anti-entropy (Enes et al. 2019) sends a peer only the dots its causal
context lacks, so a peer never sees the deltas of writes it missed that were later
superseded or removed, and may keep a stale entry those deltas would have removed. The
additions below close that gap; each is cheap, and the last is a safety net that makes
convergence unconditional:

- *Per-key dominance.* A replica's dots at one key are causally ordered (it saw its own
  earlier write), so its later dot at a key supersedes its earlier one there. A write
  also records, in ``covers``, the highest dot of every *other* replica it superseded at
  that key (a dotted version vector; empty for single-writer keys, which is every key of
  agent.node.state until a node whose store was lost writes under a new replica id).
  Joining drops any entry another entry at its key supersedes.
- *Removals are events.* A remove takes a dot of its own, so a digest shows a peer
  missing it, and makes a removal *record* (dot -> [(key, what it superseded)]) that
  travels with the delta and is kept in a log bounded to ``record_limit`` keys, so
  ``delta_for`` can resend it and a stale write arriving after the removal stays dead.
  ``horizon`` is the newest evicted removal per replica: a peer missing a dot at or below
  it is sent the whole state instead.
- *A fingerprint of the live dots* (XOR of a stable 64-bit hash) rides in the digest.
  Two replicas with equal contexts but different fingerprints have seen the same events
  and kept different survivors (only possible after log eviction, or a bug): the whole
  state is sent, and the causal join's "seen and not kept means removed" repairs both.

Joins are in place and cost time proportional to the delta (an index maps each live
dot to its key), not to the state: the agent applies thousands of small deltas into a
state of tens of thousands of entries on a Pi Zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, KeysView, Mapping
from typing import Any, Generic, TypeVar

from agent.crdt.causal_context import CausalContext, Digest
from agent.crdt.dot import Dot, dot_hash
from agent.crdt.dot_stores import join_dot_fun

K = TypeVar("K")
V = TypeVar("V")

KeyVV = tuple[tuple[str, int], ...]
"""A per-key version vector, sorted by replica: what an entry or a removal superseded."""

RemovalRecord = tuple[tuple[Any, KeyVV], ...]

DEFAULT_RECORD_LIMIT = 32768
_EMPTY: dict[Dot, Any] = {}


def _supersedes(e: Dot, e_covers: KeyVV, x: Dot) -> bool:
    if e.replica == x.replica:
        return e.counter > x.counter
    return any(r == x.replica and n >= x.counter for r, n in e_covers)


def _kvv_covers(kvv: KeyVV, x: Dot) -> bool:
    return any(r == x.replica and n >= x.counter for r, n in kvv)


class ORMap(Generic[K, V]):
    """Observed-remove map of multi-value registers, with delta-mutators and an in-place
    causal join. Deltas are ORMaps too (small ones)."""

    __slots__ = (
        "_fp",
        "_index",
        "_record_size",
        "_tomb_refs",
        "_tomb_vv",
        "covers",
        "ctx",
        "entries",
        "horizon",
        "record_limit",
        "records",
    )

    def __init__(self, record_limit: int = DEFAULT_RECORD_LIMIT) -> None:
        self.entries: dict[K, dict[Dot, V]] = {}
        self.covers: dict[Dot, KeyVV] = {}  # only entries that superseded another replica
        self.ctx = CausalContext()
        self.records: dict[Dot, RemovalRecord] = {}
        self.horizon: dict[str, int] = {}
        self.record_limit = record_limit
        self._index: dict[Dot, K] = {}
        self._fp = 0  # XOR of dot_hash over the live dots
        self._record_size = 0
        # per key, what the logged removals there superseded: a stale write that arrives
        # after the removal (its newer successor was removed with the key) stays dead
        self._tomb_vv: dict[K, dict[str, int]] = {}
        self._tomb_refs: dict[K, int] = {}

    @classmethod
    def from_parts(
        cls,
        entries: dict[K, dict[Dot, V]],
        covers: dict[Dot, KeyVV],
        ctx: CausalContext,
        records: dict[Dot, RemovalRecord] | None = None,
        horizon: dict[str, int] | None = None,
        record_limit: int = DEFAULT_RECORD_LIMIT,
    ) -> ORMap[K, V]:
        """Build from already-validated parts (the codec's way in)."""
        m: ORMap[K, V] = cls(record_limit)
        m.entries = {k: e for k, e in entries.items() if e}
        m._index = {d: k for k, e in m.entries.items() for d in e}
        for d in m._index:
            m._fp ^= dot_hash(d)
        m.covers = {d: c for d, c in covers.items() if c and d in m._index}
        m.ctx = ctx
        m.horizon = dict(horizon or {})
        for r, rec in (records or {}).items():
            m._log(r, rec)
        return m

    # --- reads ---------------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[K]:
        return iter(self.entries)

    def keys(self) -> KeysView[K]:
        return self.entries.keys()

    def get(self, key: K) -> Mapping[Dot, V]:
        """The register at ``key``: dot -> value (several values only after concurrent
        writes by different replicas)."""
        return self.entries.get(key, _EMPTY)

    def values_at(self, key: K) -> list[V]:
        return list(self.entries.get(key, _EMPTY).values())

    def dot_count(self) -> int:
        return len(self._index)

    def is_empty(self) -> bool:
        return not self.entries and not self.records and self.ctx.is_empty()

    def key_vv(self, key: K) -> dict[str, int]:
        """What the register at ``key`` has superseded, its own dots included."""
        kvv: dict[str, int] = {}
        for d in self.entries.get(key, _EMPTY):
            if kvv.get(d.replica, 0) < d.counter:
                kvv[d.replica] = d.counter
            for r, n in self.covers.get(d, ()):
                if kvv.get(r, 0) < n:
                    kvv[r] = n
        return kvv

    # --- delta-mutators (pure: they return a delta; join it to apply) --------------------

    def write(self, replica: str, key: K, value: V) -> ORMap[K, V]:
        """Set the register at ``key`` to ``value``, superseding what ``replica`` sees."""
        d = self.ctx.next_dot(replica)
        live = self.entries.get(key, _EMPTY)
        kvv = self.key_vv(key)
        kvv.pop(replica, None)  # own earlier dots are superseded by counter order
        delta: ORMap[K, V] = ORMap()
        delta._put(key, d, value, tuple(sorted(kvv.items())))
        delta.ctx = CausalContext.of([d, *live])
        return delta

    def write_many(self, replica: str, items: Iterable[tuple[K, V]]) -> ORMap[K, V]:
        """Many ``write``s as one delta, their dots consecutive: equal to the join of the
        deltas of writing them one after another (keys must be distinct). A batch of
        10,000 writes then costs one join instead of 10,000."""
        n = self.ctx.max_counter(replica)
        delta: ORMap[K, V] = ORMap()
        dots: list[Dot] = []
        for key, value in items:
            if key in delta.entries:
                raise ValueError(f"key {key!r} is written twice in one batch")
            n += 1
            d = Dot(replica, n)
            live = self.entries.get(key, _EMPTY)
            kvv = self.key_vv(key)
            kvv.pop(replica, None)  # own earlier dots are superseded by counter order
            delta._put(key, d, value, tuple(sorted(kvv.items())))
            dots.append(d)
            dots.extend(live)
        delta.ctx = CausalContext.of(dots)
        return delta

    def remove(self, replica: str, keys: Iterable[K]) -> ORMap[K, V]:
        """Remove ``keys`` (one event for all of them); an empty delta if none is present."""
        record: list[tuple[K, KeyVV]] = []
        dots: list[Dot] = []
        for key in keys:
            live = self.entries.get(key)
            if not live:
                continue
            record.append((key, tuple(sorted(self.key_vv(key).items()))))
            dots.extend(live)
        delta: ORMap[K, V] = ORMap()
        if not record:
            return delta
        r = self.ctx.next_dot(replica)
        delta.records[r] = tuple(record)
        delta.ctx = CausalContext.of([r, *dots])
        return delta

    # --- join ----------------------------------------------------------------------------

    def join(self, other: ORMap[K, V]) -> set[K]:
        """self ⊔ other, in place; returns the keys whose register changed."""
        changed: set[K] = set()
        sctx, octx = self.ctx, other.ctx
        index, covers = self._index, self.covers
        # 1. keys the other side has entries for: the DotFun causal join, then dominance
        for key, oents in other.entries.items():
            mine = self.entries.get(key)
            if mine is None:
                new = {d: v for d, v in oents.items() if not sctx.contains(d)}
                if not new:
                    continue
            else:
                new = join_dot_fun(mine, sctx, oents, octx)
            if len(new) > 1:
                cov = {d: covers.get(d) or other.covers.get(d, ()) for d in new}
                for x in [x for x in new if any(_supersedes(e, cov[e], x) for e in new if e != x)]:
                    del new[x]
            tomb = self._tomb_vv.get(key)
            if tomb:
                for x in [x for x in new if tomb.get(x.replica, 0) >= x.counter]:
                    del new[x]
            old = mine.keys() if mine is not None else _EMPTY.keys()
            if new.keys() == old:
                continue
            changed.add(key)
            for d in old - new.keys():
                del index[d]
                covers.pop(d, None)
                self._fp ^= dot_hash(d)
            for d in new.keys() - old:
                index[d] = key
                self._fp ^= dot_hash(d)
                c = other.covers.get(d)
                if c:
                    covers[d] = c
            if new:
                self.entries[key] = new
            else:
                del self.entries[key]
        # 2. entries the other side has seen and no longer holds: removed
        if octx.dot_count() <= len(index):
            gone = [d for d in octx.dots() if d in index]
        else:
            gone = [d for d in index if octx.contains(d)]
        for d in gone:
            key = index[d]
            if key not in other.entries:
                self._drop(key, d)
                changed.add(key)
        # 3. removal records: drop what the removed entries had superseded, and log them
        for r, rec in other.records.items():
            for key, kvv in rec:
                ents = self.entries.get(key)
                if ents:
                    for x in [x for x in ents if _kvv_covers(kvv, x)]:
                        self._drop(key, x)
                        changed.add(key)
            if r not in self.records:
                self._log(r, rec)
        sctx.merge(octx)
        for rep, h in other.horizon.items():
            if h > self.horizon.get(rep, 0):
                self.horizon[rep] = h
        return changed

    def _put(self, key: K, d: Dot, value: V, covers: KeyVV) -> None:
        """Add a live entry (building a delta)."""
        self.entries.setdefault(key, {})[d] = value
        self._index[d] = key
        self._fp ^= dot_hash(d)
        if covers:
            self.covers[d] = covers

    def _drop(self, key: K, d: Dot) -> None:
        ents = self.entries[key]
        del ents[d]
        del self._index[d]
        self.covers.pop(d, None)
        self._fp ^= dot_hash(d)
        if not ents:
            del self.entries[key]

    def _log(self, r: Dot, rec: RemovalRecord) -> None:
        self.records[r] = rec
        self._record_size += len(rec)
        for key, kvv in rec:
            tomb = self._tomb_vv.setdefault(key, {})
            for rep, n in kvv:
                if tomb.get(rep, 0) < n:
                    tomb[rep] = n
            self._tomb_refs[key] = self._tomb_refs.get(key, 0) + 1
        while self._record_size > self.record_limit and self.records:
            old = next(iter(self.records))
            evicted = self.records.pop(old)
            self._record_size -= len(evicted)
            if old.counter > self.horizon.get(old.replica, 0):
                self.horizon[old.replica] = old.counter
            for key, _ in evicted:
                self._tomb_refs[key] -= 1
                if not self._tomb_refs[key]:
                    del self._tomb_refs[key], self._tomb_vv[key]

    # --- anti-entropy --------------------------------------------------------------------

    def digest(self) -> Digest:
        vv, cloud, _ = self.ctx.digest()
        return Digest(vv, cloud, self._fp)

    def delta_for(self, remote: Digest) -> ORMap[K, V]:
        """Everything a peer whose context is ``remote`` lacks, and nothing it has."""
        missing = self.ctx.missing_from(remote)
        out: ORMap[K, V] = ORMap()
        if missing.is_empty():
            if (
                remote.fingerprint is not None
                and remote.fingerprint != self._fp
                and remote.vv == self.ctx.vv
                and remote.cloud == self.ctx.cloud
            ):
                return self.copy()  # same history seen, different survivors: repair all
            return out
        for rep, h in self.horizon.items():
            if missing.vv.get(rep, 0) > 0 or any(
                d.replica == rep and d.counter <= h for d in missing.cloud
            ):
                return self.copy()  # the peer is older than our removal log: send it all
        index = self._index
        n = missing.dot_count()
        if n <= len(index):
            live = [d for d in missing.dots() if d in index]
        else:
            live = [d for d in index if missing.contains(d)]
        for d in live:
            key = index[d]
            out._put(key, d, self.entries[key][d], self.covers.get(d, ()))
        if n <= len(self.records):
            recs = [d for d in missing.dots() if d in self.records]
        else:
            recs = [r for r in self.records if missing.contains(r)]
        for r in recs:
            out.records[r] = self.records[r]
        out.ctx = missing
        return out

    # --- copies and comparison -----------------------------------------------------------

    def copy(self) -> ORMap[K, V]:
        m: ORMap[K, V] = ORMap(self.record_limit)
        m.entries = {k: dict(e) for k, e in self.entries.items()}
        m.covers = dict(self.covers)
        m.ctx = self.ctx.copy()
        m.records = dict(self.records)
        m.horizon = dict(self.horizon)
        m._index = dict(self._index)
        m._fp = self._fp
        m._record_size = self._record_size
        m._tomb_vv = {k: dict(v) for k, v in self._tomb_vv.items()}
        m._tomb_refs = dict(self._tomb_refs)
        return m

    def __eq__(self, other: object) -> bool:
        """Equal replicated state (the removal log and horizon are local aids, not state)."""
        if not isinstance(other, ORMap):
            return NotImplemented
        return (
            self.entries == other.entries and self.covers == other.covers and self.ctx == other.ctx
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ORMap({self.entries!r}, ctx={self.ctx!r}, records={len(self.records)})"
