"""The replicated model (DESIGN.md, "The replicated model"): the origin catalogue and the
observations, as one causal delta-state CRDT; verdicts derived from it, never stored.

Sans-I/O: every method takes its inputs (specs, statuses, HLC timestamps, who is dead)
and returns a delta to disseminate, or the answer; nothing here reads a clock, a socket
or a file. The caller applies deltas from peers with ``apply``, repairs losses with
``state_digest``/``delta_for`` (anti-entropy), and persists with ``snapshot``/``restore``.

One observed-remove map holds everything, so there is one causal context and the
anti-entropy digest is one version vector entry per node, however many origins there
are. Its keys:

- ``(origin_id, "d", node, source)`` -> Declaration(ts, spec): ``node`` declares the
  origin, from its config (source "config") or through its API ("api"). Only ``node``
  writes it. The origin exists while any declaration survives; the effective spec is
  the declaration with the greatest HLC timestamp (then node name): last writer wins,
  the same on every node.
- ``(origin_id, "o", observer)`` -> Observation(status, since, latency_band, reason):
  written only by ``observer``, and only when something an operator would call a change
  happens: status flips, the latency band moves, the reason changes. A check that
  returns what it returned last time writes nothing, so deltas, gossip and SD writes
  scale with change, not with time.

Both are single-writer registers, so two writes to one key are never concurrent (short
of two nodes sharing a name, or a node whose store was lost writing before it has
heard its old writes back from its peers), and each key holds one value.

The node name owns the keys; the *dots* are signed with ``dot_id``, which is the node
name too unless its store was born after ids were persisted or was damaged: then it is
``name~<random>`` (agent/store/incarnation.py explains why a node that may have lost
its own newest dots must never issue them again).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from agent.crdt import (
    DEFAULT_RECORD_LIMIT,
    CrdtDecodeError,
    Digest,
    Interner,
    ItemCodec,
    Lookup,
    ORMap,
    Timestamp,
    decode_digest,
    decode_ormap,
    decode_ts,
    encode_digest,
    encode_ormap,
    encode_ts,
    fail,
)
from agent.domain import (
    ORIGIN_ID_RE,
    ConfigError,
    OriginSpec,
    field_default,
    format_duration,
    parse_duration,
    parse_origin,
)

log = logging.getLogger(__name__)

SOURCES = ("config", "api")
STATUSES = ("up", "down")
LATENCY_BANDS = ("<10ms", "<100ms", "<1s", ">=1s")
VERDICTS = ("up", "down", "disputed", "unknown")
MAX_REASON = 120  # a reason is a short label ("HTTP 503", "connect timeout"), not a log


def latency_band(seconds: float) -> str:
    """The band a probe latency falls in; jitter inside a band is not a change."""
    if seconds < 0.010:
        return "<10ms"
    if seconds < 0.100:
        return "<100ms"
    if seconds < 1.0:
        return "<1s"
    return ">=1s"


class Declaration(NamedTuple):
    ts: Timestamp
    spec: OriginSpec


class Observation(NamedTuple):
    status: str  # "up" | "down"
    since: Timestamp  # HLC time of the transition to this status
    latency_band: str | None  # one of LATENCY_BANDS; None when there is no latency (down)
    reason: str


Key = tuple[str, ...]
Value = Declaration | Observation
Delta = ORMap[Key, Value]
"""A delta is a small state of the same type; ``Delta.is_empty()`` when there is nothing."""


class UnknownSpecKeys:
    """Keys in peers' origin specs that this agent does not know (a newer agent's): the
    spec is taken without them (and passes them on unchanged), each one is counted, and
    each key name is logged once (the last ``remember`` names are remembered, which bounds
    the memory a hostile peer can make us spend)."""

    __slots__ = ("_names", "count", "remember")

    def __init__(self, remember: int = 64) -> None:
        self.remember = remember
        #: keys ignored, in every spec decoded (edge_agent_peer_spec_unknown_keys_total)
        self.count = 0
        self._names: dict[str, None] = {}

    def report(self, origin_id: Any, names: Iterable[str]) -> None:
        for name in names:
            self.count += 1
            if name in self._names:
                continue
            if len(self._names) >= self.remember:
                del self._names[next(iter(self._names))]
            self._names[name] = None
            log.warning(
                "a peer's spec of origin %.64r has the key %.64r, which this agent does not "
                "know (a newer agent's?): ignored here, kept when passed on",
                origin_id,
                name,
            )


#: The process's one record of unknown spec keys (decode_delta is a plain function,
#: also run off the loop).
UNKNOWN_SPEC_KEYS = UnknownSpecKeys()


def canonical_spec(spec: OriginSpec) -> OriginSpec:
    """The spec as every peer will decode it (durations pass through their text form, so
    0.0015 s becomes 2 ms): the declaring node keeps exactly what the others see."""
    if _survives_encoding(spec):
        return spec  # the common case, without parsing the spec again (batches of 10,000)
    for _ in range(4):
        again = parse_origin(spec.to_dict())
        if again == spec:
            return spec
        spec = again
    raise ValueError(f"origin {spec.id!r}: spec does not survive its own encoding")


_HTTP_ONLY_DEFAULTS = {
    name: field_default(OriginSpec, name)
    for name in ("expect_status", "expect_body", "method", "headers", "tls_verify")
}


@functools.lru_cache(maxsize=256)
def _duration_survives(seconds: float) -> bool:
    """A duration parses back from its text form unchanged (a fleet uses a few)."""
    return parse_duration(format_duration(seconds)) == seconds


def _survives_encoding(spec: OriginSpec) -> bool:
    """Whether ``spec.to_dict()`` parses back to ``spec`` for certain, checked field by
    field for the only lossy parts of the encoding: durations (their text form) and the
    fields ``to_dict`` leaves out (those of http origins for tcp ones, ``tls_verify`` for
    plain http), which parse back to their defaults. ``address`` is kept in its one
    spelling and ``fail_open`` is a bool, so both survive as they are."""
    for value in (spec.interval, spec.timeout, spec.down_interval):
        if value is not None and not _duration_survives(value):
            return False
    if spec.kind == "http":
        return spec.tls or spec.tls_verify == _HTTP_ONLY_DEFAULTS["tls_verify"]
    return all(getattr(spec, name) == value for name, value in _HTTP_ONLY_DEFAULTS.items())


class State:
    """One node's replica of the fleet state. ``replica`` is this node's name: only it
    may write its own registers. ``dot_id`` (default: the name) signs every event (dot)
    this replica makes; it must never be an id whose counter this replica may have lost
    (agent/store/incarnation.py)."""

    def __init__(
        self,
        replica: str,
        *,
        dot_id: str | None = None,
        record_limit: int = DEFAULT_RECORD_LIMIT,
    ) -> None:
        if not replica:
            raise ValueError("replica name is empty")
        self.replica = replica
        self.dot_id = dot_id or replica
        self._map: ORMap[Key, Value] = ORMap(record_limit)
        self._by_origin: dict[str, set[Key]] = {}

    # --- catalogue -----------------------------------------------------------------------

    def declare(self, spec: OriginSpec, node: str, source: str, ts: Timestamp) -> Delta | None:
        """``node`` (this replica) declares ``spec``; None if it already declares exactly
        this spec from this source."""
        self._own(node, "declare for")
        if source not in SOURCES:
            raise ValueError(f"source {source!r} is not one of {SOURCES}")
        spec = canonical_spec(spec)
        key: Key = (spec.id, "d", node, source)
        current = self._map.values_at(key)
        if len(current) == 1 and isinstance(current[0], Declaration) and current[0].spec == spec:
            return None
        return self._local(self._map.write(self.dot_id, key, Declaration(ts, spec)))

    def declare_many(
        self, decls: Iterable[tuple[OriginSpec, Timestamp]], node: str, source: str
    ) -> Delta | None:
        """``declare`` for many origins (distinct ids), as one delta: a batch of 10,000
        is one write to the store and one change to replicate, made in one join."""
        self._own(node, "declare for")
        if source not in SOURCES:
            raise ValueError(f"source {source!r} is not one of {SOURCES}")
        writes: list[tuple[Key, Value]] = []
        for spec, ts in decls:
            spec = canonical_spec(spec)
            key: Key = (spec.id, "d", node, source)
            current = self._map.values_at(key)
            if (
                len(current) == 1
                and isinstance(current[0], Declaration)
                and current[0].spec == spec
            ):
                continue
            writes.append((key, Declaration(ts, spec)))
        if not writes:
            return None
        return self._local(self._map.write_many(self.dot_id, writes))

    def retract(self, origin_id: str, node: str, source: str) -> Delta | None:
        """Remove ``node``'s declaration of ``origin_id`` from ``source``, and nobody
        else's; None if there is none. Any replica may retract (the API on one node may
        remove an API declaration made through another)."""
        return self._remove([(origin_id, "d", node, source)])

    def retract_many(self, keys: list[tuple[str, str, str]]) -> Delta | None:
        """Retract many (origin_id, node, source) declarations as one delta (a batch
        apply removes thousands in one write, one replication delta)."""
        return self._remove([(o, "d", n, s) for o, n, s in keys])

    def declarations(self, origin_id: str) -> list[tuple[str, str, Declaration]]:
        """(node, source, declaration) for every surviving declaration of ``origin_id``."""
        out = []
        for key in self._by_origin.get(origin_id, ()):
            if key[1] == "d":
                for v in self._map.values_at(key):
                    if isinstance(v, Declaration):
                        out.append((key[2], key[3], v))
        return sorted(out, key=lambda t: (t[2].ts, t[0], t[1]))

    def spec(self, origin_id: str) -> OriginSpec | None:
        """The effective spec: the newest declaration (HLC, then node name) wins."""
        decls = self.declarations(origin_id)
        return decls[-1][2].spec if decls else None

    def catalogue(self) -> dict[str, OriginSpec]:
        """Every origin some declaration keeps alive, with its effective spec."""
        out = {}
        for origin_id in self._by_origin:
            spec = self.spec(origin_id)
            if spec is not None:
                out[origin_id] = spec
        return out

    # --- observations --------------------------------------------------------------------

    def observe(
        self,
        origin_id: str,
        observer: str,
        status: str,
        since: Timestamp,
        latency_band: str | None,
        reason: str,
        *,
        fresh: bool = False,
    ) -> Delta | None:
        """Record what ``observer`` (this replica) sees of ``origin_id``; None when that
        is what it already recorded, unless ``fresh``: a node that has just taken an
        origin over rewrites even an unchanged observation, because the nodes handing it
        over wait for a new write from it. ``since`` is used only when the status changes:
        a new band or reason under the same status keeps the original ``since``."""
        self._own(observer, "observe as")
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {STATUSES}")
        if latency_band is not None and latency_band not in LATENCY_BANDS:
            raise ValueError(f"latency band {latency_band!r} is not one of {LATENCY_BANDS}")
        reason = reason[:MAX_REASON]
        current = self.observation(origin_id, observer)
        if current is not None and current.status == status:
            if current.latency_band == latency_band and current.reason == reason and not fresh:
                return None
            since = current.since
        key: Key = (origin_id, "o", observer)
        new = Observation(status, since, latency_band, reason)
        return self._local(self._map.write(self.dot_id, key, new))

    def remove_observation(self, origin_id: str, observer: str) -> Delta | None:
        """Drop ``observer``'s observation (it no longer owns the origin); None if none."""
        return self._remove([(origin_id, "o", observer)])

    def remove_observations(self, origin_ids: Iterable[str], observer: str) -> Delta | None:
        """``remove_observation`` for many origins as one delta (one event): a node that
        stops checking 10,000 origins at once writes one record, not 10,000."""
        return self._remove([(o, "o", observer) for o in origin_ids])

    def observation(self, origin_id: str, observer: str) -> Observation | None:
        # the newest of the register's values (several only after concurrent writes); read
        # for every owner of every origin a member change moves, so no list is built
        best = None
        for v in self._map.get((origin_id, "o", observer)).values():
            if isinstance(v, Observation) and (best is None or v.since > best.since):
                best = v
        return best

    def observations(self, origin_id: str) -> dict[str, Observation]:
        """observer -> observation, for every observer that has reported on the origin."""
        out = {}
        for key in self._by_origin.get(origin_id, ()):
            if key[1] == "o":
                obs = self.observation(origin_id, key[2])
                if obs is not None:
                    out[key[2]] = obs
        return out

    def verdict(self, origin_id: str, owners: Sequence[str]) -> str:
        """From the current owners' observations only: "unknown" when none has reported,
        "up"/"down" when all that have agree, "disputed" when they disagree."""
        seen = set()
        for owner in owners:
            obs = self.observation(origin_id, owner)
            if obs is not None:
                seen.add(obs.status)
        if not seen:
            return "unknown"
        return seen.pop() if len(seen) == 1 else "disputed"

    def reap(self, dead_observers: Iterable[str]) -> Delta | None:
        """Remove every observation made by ``dead_observers`` (the caller has decided
        they are dead beyond the reap time). One event, however many it removes."""
        dead = set(dead_observers)
        if not dead:
            return None
        return self._remove([k for k in self._map if k[1] == "o" and k[2] in dead])

    # --- replication ---------------------------------------------------------------------

    def apply(self, delta: Delta) -> set[str]:
        """Join a delta (or a whole state) from a peer; returns the origin ids whose
        declarations or observations changed, for the caller's events."""
        changed = self._map.join(delta)
        by_origin = self._by_origin
        for key in changed:
            keys = by_origin.get(key[0])
            if key in self._map:
                if keys is None:
                    by_origin[key[0]] = {key}
                else:
                    keys.add(key)
            elif keys is not None:
                keys.discard(key)
                if not keys:
                    del by_origin[key[0]]
        return {key[0] for key in changed}

    def state_digest(self) -> Digest:
        """The causal context: a version vector entry per node (plus rare outliers)."""
        return self._map.digest()

    def delta_for(self, remote_digest: Digest) -> Delta:
        """What a peer with ``remote_digest`` lacks (empty when it lacks nothing)."""
        return self._map.delta_for(remote_digest)

    def origins(self) -> set[str]:
        """Every origin id with a declaration or an observation."""
        return set(self._by_origin)

    def own_high_water(self) -> int:
        """The highest HLC wall time (ms) in this replica's own writes: a floor for the
        HLC's restored high-water mark when the persisted one is lost or stale."""
        best = 0
        for key, ents in self._map.entries.items():
            if key[2] != self.replica:
                continue
            for v in ents.values():
                ts = v.ts if isinstance(v, Declaration) else v.since
                if ts.node == self.replica and ts.wall_ms > best:
                    best = ts.wall_ms
        return best

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and self._map == other._map

    __hash__ = None  # type: ignore[assignment]

    @property
    def crdt(self) -> Delta:
        """The underlying map (read it, do not mutate it)."""
        return self._map

    # --- persistence and wire ------------------------------------------------------------

    def snapshot(self) -> bytes:
        return encode_delta(self._map)

    @classmethod
    def restore(
        cls,
        replica: str,
        data: bytes,
        *,
        dot_id: str | None = None,
        record_limit: int = DEFAULT_RECORD_LIMIT,
    ) -> State:
        """A state from ``snapshot()`` bytes; CrdtDecodeError if they are not valid."""
        st = cls(replica, dot_id=dot_id, record_limit=record_limit)
        st._map = decode_delta(data, record_limit=record_limit)  # adopted, not joined: faster
        for key in st._map:
            st._by_origin.setdefault(key[0], set()).add(key)
        return st

    # --- internals -----------------------------------------------------------------------

    def _own(self, who: str, what: str) -> None:
        if who != self.replica:
            raise ValueError(f"replica {self.replica!r} cannot {what} {who!r}")

    def _local(self, delta: Delta) -> Delta:
        self.apply(delta)
        return delta

    def _remove(self, keys: list[Key]) -> Delta | None:
        delta = self._map.remove(self.dot_id, keys)
        return None if delta.is_empty() else self._local(delta)


# --- codec -------------------------------------------------------------------------------------


def _enc_key(key: Key, intern: Interner) -> list[Any]:
    if key[1] == "d":
        return [0, intern(key[0]), intern(key[2]), SOURCES.index(key[3])]
    return [1, intern(key[0]), intern(key[2])]


def _dec_key(o: Any, lookup: Lookup) -> Key:
    if type(o) is not list or len(o) not in (3, 4) or type(o[0]) is not int:
        fail("key is not [kind, origin, node(, source)]")
    origin_id = lookup(o[1])
    node = lookup(o[2])
    if not ORIGIN_ID_RE.match(origin_id) or not node:
        fail(f"bad key {origin_id!r}/{node!r}")
    origin_id, node = sys.intern(origin_id), sys.intern(node)
    if o[0] == 0 and len(o) == 4 and type(o[3]) is int and 0 <= o[3] < len(SOURCES):
        return (origin_id, "d", node, SOURCES[o[3]])
    if o[0] == 1 and len(o) == 3:
        return (origin_id, "o", node)
    fail("bad key kind")


def _enc_value(v: Value, intern: Interner) -> list[Any]:
    if isinstance(v, Declaration):
        spec = v.spec.to_dict()
        if v.spec.peer_extra:  # a newer agent's keys, passed on as they came
            spec.update(v.spec.peer_extra)
        return [0, encode_ts(v.ts, intern), spec]
    band = None if v.latency_band is None else LATENCY_BANDS.index(v.latency_band)
    return [1, STATUSES.index(v.status), encode_ts(v.since, intern), band, v.reason]


def _dec_value(o: Any, lookup: Lookup) -> Value:
    if type(o) is not list or not o or type(o[0]) is not int:
        fail("value is not [kind, ...]")
    if o[0] == 0 and len(o) == 3:
        if type(o[2]) is not dict or not all(type(k) is str for k in o[2]):
            fail("spec is not a table")
        try:
            spec = parse_origin(o[2], where="spec", from_peer=True)
        except ConfigError as e:
            raise CrdtDecodeError(f"invalid origin spec: {e}") from None
        if spec.peer_extra:
            UNKNOWN_SPEC_KEYS.report(spec.id, (k for k, _ in spec.peer_extra))
        return Declaration(decode_ts(o[1], lookup), spec)
    if o[0] == 1 and len(o) == 5:
        _, status, since, band, reason = o
        if type(status) is not int or not 0 <= status < len(STATUSES):
            fail(f"bad status {status!r}")
        if band is not None and (type(band) is not int or not 0 <= band < len(LATENCY_BANDS)):
            fail(f"bad latency band {band!r}")
        if type(reason) is not str or len(reason) > MAX_REASON:
            fail("bad reason")
        return Observation(
            STATUSES[status],
            decode_ts(since, lookup),
            None if band is None else LATENCY_BANDS[band],
            reason,
        )
    fail("bad value kind")


KEY_CODEC: ItemCodec[Key] = ItemCodec(_enc_key, _dec_key)
VALUE_CODEC: ItemCodec[Value] = ItemCodec(_enc_value, _dec_value)


def encode_delta(delta: Delta) -> bytes:
    """A delta (or whole state) as bytes for gossip or the store."""
    return encode_ormap(delta, KEY_CODEC, VALUE_CODEC)


def decode_delta(data: bytes, *, record_limit: int = DEFAULT_RECORD_LIMIT) -> Delta:
    """Bytes from a peer or the store as a delta; CrdtDecodeError on anything malformed."""
    m = decode_ormap(data, KEY_CODEC, VALUE_CODEC, record_limit)
    for key, ents in m.entries.items():
        for v in ents.values():
            if (key[1] == "d") != isinstance(v, Declaration):
                fail(f"key {key!r} holds the wrong kind of value")
            if isinstance(v, Declaration) and v.spec.id != key[0]:
                fail(f"declaration of {v.spec.id!r} under key {key[0]!r}")
    return m


__all__ = [
    "LATENCY_BANDS",
    "SOURCES",
    "STATUSES",
    "UNKNOWN_SPEC_KEYS",
    "VERDICTS",
    "CrdtDecodeError",
    "Declaration",
    "Delta",
    "Digest",
    "Observation",
    "State",
    "decode_delta",
    "decode_digest",
    "encode_delta",
    "encode_digest",
    "latency_band",
]
