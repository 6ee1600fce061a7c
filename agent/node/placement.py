"""Placement: which eligible members own (check) each origin.

Each origin is owned by its top-k eligible members by weighted rendezvous score
(logarithmic method), so no origin is checked by every node and none goes unchecked
while any eligible member is left. Sans-I/O and deterministic: every node that sees
the same members computes the same owners, so nobody has to agree on anything.

Hash spec (frozen: every node and every future version must compute identical owners;
``tests/test_placement.py`` pins it with fixed vectors, docs/placement.md explains it)::

    key   = UTF-8(node name) + b"\\x00" + UTF-8(origin id)
    x     = MurmurHash3_x64_128(key, seed=SEED), as the unsigned 128-bit integer
            h1 + 2**64 * h2  (== mmh3.hash128(key, seed=SEED, signed=False))
    u     = x >> 75                  the top 53 bits
    h     = (u | 1) * 2**-53         odd multiples of 2**-53: exact, in [2**-53, 1 - 2**-53]
    rkey  = weight / math.log(h)     IEEE-754 double; negative; score = -rkey
    rank  = ascending (rkey, node name): highest score first, equal scores by name
            (code-point order, the same as UTF-8 byte order)

SEED = 0x65646765 (b"edge" read big-endian). UTF-8 uses Python's "surrogatepass" so a
malformed name can never raise (names off the wire are valid UTF-8 anyway).

Failure domains (sites), also frozen: a member's domain is its ``site`` tag, or the member
alone when it has none. Walk the ranking and take a member only if its domain is not
taken yet, until k; if the walk ends with fewer than k (fewer than k domains), add the
best-ranked members not yet taken until k. Owners are listed in ranking order. Without
site tags every member is its own domain and the owners are the first k of the ranking.

Incremental updates (why this is a class, not a function): each origin keeps an exact
prefix of its ranking, up to k + spare entries, with rank keys. With sites, the prefix is
of the ranking thinned to each domain's best k members (nothing below them can ever be
an owner), long enough to show the owners plus spare entries, at most k(k-1)+1+spare
(a rescan makes it so when a change leaves it too short). A join costs one hash per
origin and changes an origin only if the newcomer beats the last cached entry; a leave
touches only the origins whose cache holds the leaver (inverted index), rescanning all
members for an origin only when its cache falls below k. The result always equals
:func:`compute_owners` from scratch (property-tested).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, KeysView, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

import mmh3

from agent.domain import ROLE

__all__ = [
    "ROLE",
    "SEED",
    "SPARE",
    "Member",
    "OwnerChange",
    "Placement",
    "claims_role",
    "compute_owners",
    "member_from_tags",
    "parse_weight",
    "score",
    "unit_hash",
    "unit_interval",
]

SEED = 0x65646765
"""mmh3 seed of the placement hash (b"edge"); part of the frozen spec."""

SPARE = 2
"""Default extra ranked entries cached per origin beyond k, so most leaves need no rescan."""

ELIGIBLE_STATES = frozenset({"alive", "suspect"})

_TWO_M53 = 2.0**-53

# mmh3 >= 5 has a direct unsigned digest (fastest). Never pass hash128's `signed` flag
# positionally: mmh3 5.3 treats any positional 4th argument as signed=True.
_digest: Callable[[bytes, int], int] = getattr(mmh3, "mmh3_x64_128_uintdigest", None) or (
    lambda key, seed: mmh3.hash128(key, seed=seed, x64arch=True, signed=False)
)

Entry = tuple[float, str]
"""(rank key, node name); ascending order is best first."""

Domain = str | tuple[str]
"""A failure domain: the site, or (name,) for a member without one (its own domain)."""

_Touched = dict[str, tuple[str, ...]]
"""origin -> its owners before the current operation first changed them."""


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def unit_interval(x: int) -> float:
    """Map an unsigned 128-bit hash into the open interval (0, 1), exactly (see spec)."""
    return ((x >> 75) | 1) * _TWO_M53


def unit_hash(node: str, origin_id: str) -> float:
    """h of (node, origin) in (0, 1): the uniform draw behind the score."""
    return unit_interval(_digest(_utf8(node) + b"\x00" + _utf8(origin_id), SEED))


def score(node: str, weight: float, origin_id: str) -> float:
    """Weighted rendezvous score -weight/ln(h); the highest k scores own the origin."""
    return -(weight / math.log(unit_hash(node, origin_id)))


def _valid_weight(w: float) -> bool:
    return isinstance(w, (int, float)) and math.isfinite(w) and w > 0


def parse_weight(value: str | None) -> float:
    """Weight from a member's "weight" tag: absent or invalid -> 1.0.

    Invalid means unparseable, NaN, infinite, zero or negative. The local config refuses
    such weights, so they only come from a foreign or corrupt node; treating it as a
    normal member keeps its share checked ("degrade, don't die"), and every node reads
    the same tag, so every node makes the same choice.
    """
    if value is None:
        return 1.0
    try:
        w = float(value)
    except (TypeError, ValueError):
        return 1.0
    return w if _valid_weight(w) else 1.0


@dataclass(frozen=True, slots=True)
class Member:
    """A cluster member as placement sees it. Only eligible members own origins."""

    name: str
    weight: float = 1.0
    eligible: bool = True
    site: str | None = None
    """Failure domain; None: the member is a domain of its own."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"member name must be a str, not {type(self.name).__name__}")
        if not _valid_weight(self.weight):
            raise ValueError(f"member {self.name!r}: weight {self.weight!r} must be finite and > 0")
        if self.site is not None and (not isinstance(self.site, str) or not self.site):
            raise ValueError(f"member {self.name!r}: site {self.site!r} must be a non-empty str")

    @property
    def domain(self) -> Domain:
        return self.site if self.site is not None else (self.name,)


def claims_role(tags: Mapping[str, str]) -> bool:
    """Whether a member's tags claim it is an edge-agent: our role and a version tag.

    A claim only: a foreign node can set both tags (agent/node/proof.py).
    """
    return tags.get("role") == ROLE and bool(tags.get("version"))


def member_from_tags(name: str, state: str, tags: Mapping[str, str], *, proven: bool) -> Member:
    """The Member for a gossip member: eligible iff alive/suspect, its tags claim the role
    (``role=edge-agent`` and a ``version``) and it has ``proven`` the claim by speaking our
    replication protocol (agent/node/proof.py). A role tag alone is what a stock Serf agent
    or a memberlist node with meta ``edge-agent`` shows: it must never own origins it
    does not check.

    Build the local node's own Member from its advertised tags too (not from config):
    the tag carries the weight as every other node sees it.

    The ``site`` tag is used as it is (any non-empty string; every node reads the same
    tag, so every node makes the same choice); absent or empty: a domain of its own.
    """
    eligible = state in ELIGIBLE_STATES and claims_role(tags) and proven
    return Member(name, parse_weight(tags.get("weight")), eligible, tags.get("site") or None)


class OwnerChange(NamedTuple):
    """One origin whose ranked owner tuple changed; () means no owners / no origin."""

    origin: str
    old: tuple[str, ...]
    new: tuple[str, ...]


def _unique(members: Iterable[Member]) -> dict[str, Member]:
    out: dict[str, Member] = {}
    for m in members:
        if m.name in out:
            raise ValueError(f"duplicate member name {m.name!r}")
        out[m.name] = m
    return out


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, not {k!r}")


def _top(names: Iterable[str], pw: list[tuple[bytes, float]], ob: bytes, n: int) -> list[Entry]:
    """The best n entries for one origin over all nodes (pw: prefix, weight per name)."""
    if not pw:
        return []
    digest, log, t = _digest, math.log, _TWO_M53
    keys = [w / log(((digest(p + ob, SEED) >> 75) | 1) * t) for p, w in pw]
    if len(keys) <= n:
        return sorted(zip(keys, names, strict=True))
    cut = heapq.nsmallest(n, keys)[-1]  # floats only: fast; ties at the cut kept below
    return sorted([e for e in zip(keys, names, strict=True) if e[0] <= cut])[:n]


def _choose(ranked: list[Entry], dom: Mapping[str, Domain], k: int) -> tuple[str, ...]:
    """The site rule over a whole ranking: the best member of each domain in rank order
    until k, then the best of the rest until k; listed in ranking order."""
    taken: set[Domain] = set()
    chosen: list[int] = []
    for i, (_, name) in enumerate(ranked):
        if len(chosen) == k:
            break
        if dom[name] not in taken:
            taken.add(dom[name])
            chosen.append(i)
    rest = (i for i in range(len(ranked)) if i not in chosen)
    fill = [i for i, _ in zip(rest, range(k - len(chosen)), strict=False)]
    return tuple(ranked[i][1] for i in sorted(chosen + fill))


def compute_owners(
    members: Iterable[Member], k: int, origins: Iterable[str]
) -> dict[str, tuple[str, ...]]:
    """Owners of every origin from scratch: the reference the incremental path must equal."""
    _check_k(k)
    eligible = [m for m in _unique(members).values() if m.eligible]
    names = [m.name for m in eligible]
    pw = [(_utf8(m.name) + b"\x00", float(m.weight)) for m in eligible]
    dom = {m.name: m.domain for m in eligible}
    if len(set(dom.values())) == len(dom):  # no two members share a site: the first k
        return {o: tuple(e[1] for e in _top(names, pw, _utf8(o), k)) for o in origins}
    return {o: _choose(_top(names, pw, _utf8(o), len(pw)), dom, k) for o in origins}


class Placement:
    """Current members, k and origins, with owners kept up to date incrementally.

    Every mutator returns the origins whose owner tuple changed, sorted by origin id,
    each as (origin, old, new). Not thread-safe; meant to live in one event loop.
    """

    __slots__ = (
        "_cached_in",
        "_dom",
        "_domains",
        "_k",
        "_members",
        "_multi",
        "_nodes",
        "_owners",
        "_owns",
        "_rsize",
        "_slots",
        "_spare",
    )

    def __init__(
        self,
        members: Iterable[Member] = (),
        k: int = 2,
        origins: Iterable[str] = (),
        *,
        spare: int = SPARE,
    ) -> None:
        _check_k(k)
        if not isinstance(spare, int) or spare < 0:
            raise ValueError(f"spare must be an integer >= 0, not {spare!r}")
        self._k = k
        self._spare = spare
        self._members: dict[str, Member] = _unique(members)
        # eligible members only: name -> (UTF-8 name + NUL, weight)
        self._nodes: dict[str, tuple[bytes, float]] = {}
        # eligible members only: name -> domain, and domain -> its members
        self._dom: dict[str, Domain] = {}
        self._domains: dict[Domain, set[str]] = {}
        self._multi = 0  # domains with two or more members; 0: owners are the first k
        self._rsize = 0  # entries in the thinned ranking: sum of min(k, domain size)
        # origin -> (UTF-8 id, cache): cache is an exact prefix of the thinned ranking
        # (every entry of it up to the cache's last), ascending, and shows the owners;
        # without shared sites it holds k + spare entries, or every member if fewer.
        self._slots: dict[str, tuple[bytes, list[Entry]]] = {}
        self._owners: dict[str, tuple[str, ...]] = {}
        self._cached_in: dict[str, set[str]] = {}  # node -> origins whose cache holds it
        self._owns: dict[str, set[str]] = {}  # node -> origins it owns (in top k)
        for m in self._members.values():
            if m.eligible:
                self._nodes[m.name] = (_utf8(m.name) + b"\x00", float(m.weight))
                self._add_domain(m)
                self._cached_in[m.name] = set()
                self._owns[m.name] = set()
        touched: _Touched = {}
        for o in origins:
            if o not in self._slots:
                self._add_origin(o, touched)

    # --- reading ----------------------------------------------------------------------

    @property
    def k(self) -> int:
        return self._k

    @property
    def spare(self) -> int:
        return self._spare

    @property
    def members(self) -> Mapping[str, Member]:
        """All members by name, eligible or not (read-only view)."""
        return MappingProxyType(self._members)

    @property
    def origins(self) -> KeysView[str]:
        return self._slots.keys()

    def owners(self, origin_id: str) -> tuple[str, ...]:
        """Ranked owners of a known origin (rank 1 first); () if nobody is eligible."""
        return self._owners[origin_id]

    def owned_by(self, node: str) -> set[str]:
        """Origins the node owns at any rank (a copy; empty for unknown nodes)."""
        return set(self._owns.get(node, ()))

    def assignment(self) -> dict[str, tuple[str, ...]]:
        """Every origin's owners: compare with compute_owners(...) to audit."""
        return dict(self._owners)

    # --- members ------------------------------------------------------------------------

    def add_member(self, member: Member) -> list[OwnerChange]:
        """A join: one hash per origin, no re-ranking. Duplicate names are rejected."""
        if member.name in self._members:
            raise ValueError(f"duplicate member name {member.name!r}")
        touched: _Touched = {}
        self._members[member.name] = member
        if member.eligible:
            self._join(member, touched)
        return self._changes(touched)

    def remove_member(self, name: str) -> list[OwnerChange]:
        """A leave or death: only origins whose cache holds the node are touched."""
        member = self._members.pop(name)  # KeyError for an unknown name
        touched: _Touched = {}
        if member.eligible:
            self._leave(name, touched)
        return self._changes(touched)

    def update_member(self, member: Member) -> list[OwnerChange]:
        """A known member's weight, site or eligibility changed (a leave then a join)."""
        old = self._members[member.name]  # KeyError for an unknown name
        touched: _Touched = {}
        self._update(old, member, touched)
        return self._changes(touched)

    def set_members(self, members: Iterable[Member]) -> list[OwnerChange]:
        """Replace the member set, applying only the differences."""
        new = _unique(members)
        touched: _Touched = {}
        for name in [n for n in self._members if n not in new]:
            if self._members.pop(name).eligible:
                self._leave(name, touched)
        for name, m in new.items():
            old = self._members.get(name)
            if old is None:
                self._members[name] = m
                if m.eligible:
                    self._join(m, touched)
            elif old is not m and old != m:
                self._update(old, m, touched)
        return self._changes(touched)

    # --- origins and k ------------------------------------------------------------------

    def add_origin(self, origin_id: str) -> list[OwnerChange]:
        """One new origin: one hash per eligible member."""
        if origin_id in self._slots:
            raise ValueError(f"duplicate origin id {origin_id!r}")
        touched: _Touched = {}
        self._add_origin(origin_id, touched)
        return self._changes(touched)

    def remove_origin(self, origin_id: str) -> list[OwnerChange]:
        touched: _Touched = {}
        self._remove_origin(origin_id, touched)  # KeyError for an unknown id
        return self._changes(touched)

    def set_origins(self, origin_ids: Iterable[str]) -> list[OwnerChange]:
        """Replace the origin set (duplicates in the input are fine)."""
        want = dict.fromkeys(origin_ids)
        touched: _Touched = {}
        for o in [o for o in self._slots if o not in want]:
            self._remove_origin(o, touched)
        for o in want:
            if o not in self._slots:
                self._add_origin(o, touched)
        return self._changes(touched)

    def set_k(self, k: int) -> list[OwnerChange]:
        """Change the replica count; rescans only origins whose cache is too short (with
        shared sites, every origin: the thinned ranking depends on k)."""
        _check_k(k)
        if k == self._k:
            return []
        self._k = k
        self._rsize = sum(min(k, len(names)) for names in self._domains.values())
        touched: _Touched = {}
        if self._multi:
            for o in self._slots:
                self._refill(o)
                self._settle(o, touched)
            return self._changes(touched)
        c = k + self._spare
        n = len(self._nodes)
        cached_in = self._cached_in
        for o, (_, cache) in self._slots.items():
            if len(cache) > c:
                for _, name in cache[c:]:
                    cached_in[name].discard(o)
                del cache[c:]
            elif len(cache) < k and len(cache) < n:
                self._refill(o)
            self._set_owners(o, tuple([e[1] for e in cache[:k]]), touched)
        return self._changes(touched)

    # --- internals ------------------------------------------------------------------------

    def _changes(self, touched: _Touched) -> list[OwnerChange]:
        owners = self._owners
        out = []
        for o in sorted(touched):
            new = owners.get(o, ())
            if new != touched[o]:
                out.append(OwnerChange(o, touched[o], new))
        return out

    def _set_owners(self, o: str, new: tuple[str, ...], touched: _Touched) -> None:
        old = self._owners[o]
        if old == new:
            return
        touched.setdefault(o, old)
        self._owners[o] = new
        owns = self._owns
        for name in old:
            if name not in new:
                owns[name].discard(o)
        for name in new:
            if name not in old:
                owns[name].add(o)

    def _add_domain(self, m: Member) -> None:
        d = m.domain
        self._dom[m.name] = d
        names = self._domains.setdefault(d, set())
        names.add(m.name)
        if len(names) == 2:
            self._multi += 1
        if len(names) <= self._k:
            self._rsize += 1

    def _drop_domain(self, name: str) -> None:
        d = self._dom.pop(name)
        names = self._domains[d]
        if len(names) <= self._k:
            self._rsize -= 1
        names.discard(name)
        if len(names) == 1:
            self._multi -= 1
        elif not names:
            del self._domains[d]

    def _resolve(self, cache: list[Entry]) -> tuple[tuple[str, ...], int] | None:
        """(owners, how many leading entries decide them) if the cache shows the owners,
        else None (the origin must be rescanned)."""
        k = self._k
        n = len(cache)
        if not self._multi:  # every member its own domain: the first k
            if n < k and n != self._rsize:
                return None
            return tuple([e[1] for e in cache[:k]]), min(k, n)
        dom = self._dom
        taken: set[Domain] = set()
        picked: list[int] = []
        for i, (_, name) in enumerate(cache):
            d = dom[name]
            if d not in taken:
                taken.add(d)
                picked.append(i)
                if len(picked) == k:
                    return tuple([cache[j][1] for j in picked]), i + 1
        # fewer than k domains in the cache: enough only if it holds the whole thinned
        # ranking, or every domain there is and k entries (the fill is then in it too)
        if n != self._rsize and not (len(taken) == len(self._domains) and n >= k):
            return None
        chosen = set(picked)
        for i in range(n):
            if len(chosen) >= k:
                break
            chosen.add(i)
        idx = sorted(chosen)
        return tuple([cache[j][1] for j in idx]), (idx[-1] + 1 if idx else 0)

    def _scan(self, ob: bytes) -> list[Entry]:
        """A new cache for one origin, from all eligible members."""
        nodes = self._nodes
        names, pw = nodes.keys(), list(nodes.values())
        m = self._k + self._spare
        if not self._multi:
            return _top(names, pw, ob, m)
        digest, log, t = _digest, math.log, _TWO_M53
        keys = [w / log(((digest(p + ob, SEED) >> 75) | 1) * t) for p, w in pw]
        entries = list(zip(keys, names, strict=True))
        while True:  # a longer prefix of the ranking until the thinned one shows the owners
            if m >= len(entries):
                ranked = sorted(entries)
            else:
                cut = heapq.nsmallest(m, keys)[-1]
                ranked = sorted([e for e in entries if e[0] <= cut])[:m]
            cache = self._thin(ranked)
            res = self._resolve(cache)
            if res is not None:
                del cache[res[1] + self._spare :]
                return cache
            if m >= len(entries):
                raise AssertionError("a full ranking must show the owners")
            m *= 4

    def _thin(self, ranked: list[Entry]) -> list[Entry]:
        """Keep each domain's best k entries: nothing below them can be an owner."""
        k, dom = self._k, self._dom
        seen: dict[Domain, int] = {}
        out = []
        for e in ranked:
            d = dom[e[1]]
            c = seen.get(d, 0)
            if c < k:
                seen[d] = c + 1
                out.append(e)
        return out

    def _refill(self, o: str) -> None:
        """Full rescan of one origin over all eligible members (the cache ran short)."""
        ob, cache = self._slots[o]
        cached_in = self._cached_in
        for _, name in cache:
            cached_in[name].discard(o)
        cache[:] = self._scan(ob)
        for _, name in cache:
            cached_in[name].add(o)

    def _settle(self, o: str, touched: _Touched) -> None:
        """Owners from the cache (rescanned if it cannot show them); trim it to size."""
        cache = self._slots[o][1]
        res = self._resolve(cache)
        if res is None:
            self._refill(o)
            res = self._resolve(cache)
            if res is None:
                raise AssertionError(f"a rescanned cache must show the owners of {o!r}")
        owners, decisive = res
        cap = decisive + self._spare
        if len(cache) > cap:
            cached_in = self._cached_in
            for _, name in cache[cap:]:
                cached_in[name].discard(o)
            del cache[cap:]
        self._set_owners(o, owners, touched)

    def _add_origin(self, o: str, touched: _Touched) -> None:
        ob = _utf8(o)
        cache = self._scan(ob)
        self._slots[o] = (ob, cache)
        for _, name in cache:
            self._cached_in[name].add(o)
        self._owners[o] = ()
        self._settle(o, touched)

    def _remove_origin(self, o: str, touched: _Touched) -> None:
        _, cache = self._slots.pop(o)
        for _, name in cache:
            self._cached_in[name].discard(o)
        self._set_owners(o, (), touched)
        del self._owners[o]

    def _update(self, old: Member, new: Member, touched: _Touched) -> None:
        self._members[new.name] = new
        if old.eligible == new.eligible and (
            not new.eligible or (old.weight == new.weight and old.site == new.site)
        ):
            return
        if old.eligible:
            self._leave(old.name, touched)
        if new.eligible:
            self._join(new, touched)

    def _join(self, member: Member, touched: _Touched) -> None:
        """Hash the newcomer against every origin; insert where it beats the cache's last."""
        rsize_before = self._rsize
        domains_before = len(self._domains)
        self._add_domain(member)
        if self._multi:
            self._join_sited(member, touched, rsize_before, domains_before)
            return
        name = member.name
        prefix = _utf8(name) + b"\x00"
        w = float(member.weight)
        n_before = len(self._nodes)
        self._nodes[name] = (prefix, w)
        mine = self._cached_in[name] = set()
        owned = self._owns[name] = set()
        cached_in = self._cached_in
        owners = self._owners
        owns = self._owns
        record = touched.setdefault
        k = self._k
        c = k + self._spare
        digest, log, t, seed = _digest, math.log, _TWO_M53, SEED
        for o, (ob, cache) in self._slots.items():
            key = w / log(((digest(prefix + ob, seed) >> 75) | 1) * t)
            n = len(cache)
            if n != n_before:  # a truncated prefix: must beat its last entry to be in it
                last = cache[-1]
                if key > last[0] or (key == last[0] and name > last[1]):
                    continue
            entry = (key, name)
            pos = bisect_left(cache, entry)
            cache.insert(pos, entry)
            mine.add(o)
            if pos < k:  # the newcomer takes the slot of the old k-th, if there were k
                record(o, owners[o])
                owned.add(o)
                if n >= k:
                    owns[cache[k][1]].discard(o)
                owners[o] = tuple([e[1] for e in cache[:k]])
            if n >= c:
                cached_in[cache.pop()[1]].discard(o)

    def _join_sited(
        self, member: Member, touched: _Touched, rsize_before: int, domains_before: int
    ) -> None:
        """The join with shared sites: where the newcomer enters a cache, it may push its
        domain's (k+1)-th entry out of the thinned ranking, and the owners are re-walked.
        A new domain while fewer than k exist changes every origin's owners: a cache it
        did not enter is rescanned."""
        name = member.name
        prefix = _utf8(name) + b"\x00"
        w = float(member.weight)
        self._nodes[name] = (prefix, w)
        mine = self._cached_in[name] = set()
        self._owns[name] = set()
        cached_in = self._cached_in
        k = self._k
        d = self._dom[name]
        crowded = len(self._domains[d]) > k  # its domain may now hold k + 1 cache entries
        recheck = len(self._domains[d]) == 1 and domains_before < k
        dom = self._dom
        digest, log, t, seed = _digest, math.log, _TWO_M53, SEED
        for o, (ob, cache) in self._slots.items():
            key = w / log(((digest(prefix + ob, seed) >> 75) | 1) * t)
            if len(cache) != rsize_before:
                last = cache[-1]
                if key > last[0] or (key == last[0] and name > last[1]):
                    if recheck:
                        self._settle(o, touched)
                    continue
            entry = (key, name)
            cache.insert(bisect_left(cache, entry), entry)
            mine.add(o)
            if crowded:
                same = [i for i, e in enumerate(cache) if dom[e[1]] == d]
                if len(same) > k:
                    cached_in[cache.pop(same[-1])[1]].discard(o)
            self._settle(o, touched)

    def _leave(self, name: str, touched: _Touched) -> None:
        """Drop the node from the caches that hold it; rescan only caches left short."""
        rsize_before = self._rsize
        multi_before = self._multi
        d = self._dom[name]
        crowded = len(self._domains[d]) > self._k  # its (k+1)-th member may move up
        self._drop_domain(name)
        del self._nodes[name]
        if multi_before:
            self._leave_sited(name, d, crowded, rsize_before, touched)
            return
        n_after = len(self._nodes)
        k = self._k
        slots = self._slots
        owners = self._owners
        owns = self._owns
        record = touched.setdefault
        for o in self._cached_in.pop(name):
            cache = slots[o][1]
            for pos, e in enumerate(cache):  # _remove_entry, inlined: 40,000 calls a death
                if e[1] == name:
                    del cache[pos]
                    break
            else:
                raise AssertionError(f"{name} missing from the cache of {o!r}")
            if pos >= k:
                continue  # a spare entry: owners unchanged
            if len(cache) < k and len(cache) < n_after:
                self._refill(o)
                self._set_owners(o, tuple([e[1] for e in cache[:k]]), touched)
                continue
            record(o, owners[o])  # fast path: the leaver's slot goes to the next in line
            owners[o] = tuple([e[1] for e in cache[:k]])
            if len(cache) >= k:
                owns[cache[k - 1][1]].add(o)
        del self._owns[name]  # every origin it owned was just handed on above

    def _cut_after_domain(self, o: str, cache: list[Entry], rest: set[str], gone: int) -> bool:
        """The leaver's domain had k entries in this cache: its next member ranks below
        the domain's last cached entry (or the leaver's place, ``gone``). If the cache cut
        right there still shows the owners, cut it (no hashing); else leave it, False."""
        last = max((i for i, e in enumerate(cache) if e[1] in rest), default=-1)
        end = max(last + 1, gone)
        if end >= len(cache):
            return True  # nothing below the cut is cached: nothing to drop
        if self._resolve(cache[:end]) is None:
            return False
        cached_in = self._cached_in
        for _, name in cache[end:]:
            cached_in[name].discard(o)
        del cache[end:]
        return True

    def _leave_sited(
        self, name: str, d: Domain, crowded: bool, rsize_before: int, touched: _Touched
    ) -> None:
        """The leave with shared sites: where the cache held k of the leaver's domain,
        that domain's next member enters the thinned ranking (found by hashing only the
        domain's members); then the owners are re-walked."""
        k = self._k
        cached_in = self._cached_in
        rest = self._domains.get(d, set())
        nodes = self._nodes
        for o in cached_in.pop(name):
            ob, cache = self._slots[o]
            complete = len(cache) == rsize_before
            pos = _remove_entry(cache, name, o)
            if crowded:
                held = {e[1] for e in cache if e[1] in rest}
                if len(held) == k - 1 and self._cut_after_domain(o, cache, rest, pos):
                    pass  # the domain's next member is below the cut: nothing to hash
                elif len(held) == k - 1:
                    digest, log, t = _digest, math.log, _TWO_M53
                    best = min(
                        [
                            (nodes[m][1] / log(((digest(nodes[m][0] + ob, SEED) >> 75) | 1) * t), m)
                            for m in rest - held
                        ]
                    )
                    if complete or (cache and best < cache[-1]):
                        cache.insert(bisect_left(cache, best), best)
                        cached_in[best[1]].add(o)
            self._settle(o, touched)
        del self._owns[name]


def _remove_entry(cache: list[Entry], name: str, origin: str) -> int:
    """Delete ``name``'s entry from ``origin``'s ranked cache; the position it had."""
    for pos, e in enumerate(cache):
        if e[1] == name:
            del cache[pos]
            return pos
    raise AssertionError(f"{name} missing from the cache of {origin!r}")
