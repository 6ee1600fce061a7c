"""msgpack encoding of every CRDT state and delta, and validating decoding.

Compact on the wire because deltas ride UDP gossip next to membership messages:
every string that names something (replica ids, keys, node names inside timestamps) is
written once per message in a string table and referred to by index; dots are two
integers; version vectors and dot sets are flat integer lists.

Decoding treats its input as hostile (it comes from peers and from an SD card that may
have been cut off mid-write): it checks every type, range and the CRDT invariants a
join relies on (each live dot is in the context, no dot is live at two keys, keys are
unique). Malformed input raises CrdtDecodeError and nothing else, so the caller can
count it and drop the message; every check says what it rejects (``fail``). Any other
exception is a bug in a decoder, not a peer's fault, and propagates as itself: read as
malformed input it would be counted as the peer's and the fuzz tests could not see it.

Message layout (a msgpack array): ``[kind, version, strings, ...body]``; the bodies:

- context: ``vv, cloud``; digest: ``vv, cloud, fingerprint`` (nil or uint64); with
  ``vv = [s, n, s, n, ...]``, ``cloud = [s, [c, c, ...], ...]`` (s: string index,
  n/c: counters)
- ormap: ``vv, cloud, entries, records, horizon`` with
  ``entries = [key, [s, c, value, covers, ...], ...]``, ``covers = [s, n, ...]``,
  ``records = [s, c, [key, kvv, ...], ...]`` and ``horizon = [s, n, ...]``
- lww: ``ts, value`` with ``ts = [wall_ms, logical, s]`` or nil
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar, cast

import msgpack

from agent.crdt.aworset import AWORSet
from agent.crdt.causal_context import CausalContext, Digest
from agent.crdt.dot import Dot
from agent.crdt.hlc import MAX_WALL_MS, Timestamp
from agent.crdt.lww import LWWRegister
from agent.crdt.mvregister import MVRegister
from agent.crdt.ormap import DEFAULT_RECORD_LIMIT, KeyVV, ORMap, RemovalRecord

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

VERSION = 1
KIND_CONTEXT, KIND_DIGEST, KIND_ORMAP, KIND_LWW = 1, 2, 3, 4
MAX_COUNTER = (1 << 63) - 1
MAX_STRING = 1024  # replica ids, origin ids and the like are short


class CrdtDecodeError(ValueError):
    """Malformed CRDT bytes: the only exception decoding raises."""


def fail(what: str) -> NoReturn:
    raise CrdtDecodeError(what)


class Interner:
    """Builds a message's string table while encoding."""

    __slots__ = ("index", "strings")

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.index: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.strings)
            self.strings.append(s)
        return i


class Lookup:
    """Resolves string indices while decoding; rejects anything that is not one."""

    __slots__ = ("strings",)

    def __init__(self, strings: Any) -> None:
        if type(strings) is not list:
            fail("string table is not a list")
        for s in strings:
            if type(s) is not str or len(s) > MAX_STRING:
                fail("string table entry is not a short string")
        self.strings: list[str] = strings

    def __call__(self, i: Any) -> str:
        if type(i) is not int or not 0 <= i < len(self.strings):
            fail(f"bad string index {i!r}")
        return self.strings[i]


@dataclass(frozen=True, slots=True)
class ItemCodec(Generic[T]):
    """How to encode one key or value type; ``decode`` raises CrdtDecodeError (``fail``)
    for a malformed item, and anything else it raises is a bug that propagates."""

    encode: Callable[[T, Interner], Any]
    decode: Callable[[Any, Lookup], T]


def _dec_str(o: Any, lookup: Lookup) -> str:
    return lookup(o)


def _dec_unit(o: Any, lookup: Lookup) -> None:
    if o is not None:
        fail("expected nil")


def _dec_scalar(o: Any, lookup: Lookup) -> Any:
    if o is None or type(o) in (bool, int, float, str, bytes):
        return o
    fail(f"not a scalar: {type(o).__name__}")


STR: ItemCodec[Any] = ItemCodec(lambda s, intern: intern(s), _dec_str)
UNIT: ItemCodec[Any] = ItemCodec(lambda v, intern: None, _dec_unit)
SCALAR: ItemCodec[Any] = ItemCodec(lambda v, intern: v, _dec_scalar)
"""Keys/values that are short strings (interned), nothing, or a msgpack scalar."""


# --- primitives ----------------------------------------------------------------------------


def counter(o: Any) -> int:
    if type(o) is not int or not 1 <= o <= MAX_COUNTER:
        fail(f"bad counter {o!r}")
    return o


def as_list(o: Any, what: str, even: bool = False) -> list[Any]:
    if type(o) is not list or (even and len(o) % 2):
        fail(f"{what} is not a{'n even' if even else ''} list")
    return o


def encode_ts(ts: Timestamp, intern: Interner) -> list[Any]:
    return [ts.wall_ms, ts.logical, intern(ts.node)]


def decode_ts(o: Any, lookup: Lookup) -> Timestamp:
    if type(o) is not list or len(o) != 3:
        fail("timestamp is not [wall, logical, node]")
    w, lg, n = o
    if type(w) is not int or not 0 <= w <= MAX_WALL_MS:
        fail(f"bad wall time {w!r}")
    if type(lg) is not int or not 0 <= lg <= MAX_COUNTER:
        fail(f"bad logical time {lg!r}")
    return Timestamp(w, lg, lookup(n))


TIMESTAMP: ItemCodec[Timestamp] = ItemCodec(encode_ts, decode_ts)


def _enc_vv(vv: dict[str, int] | Any, intern: Interner) -> list[int]:
    out: list[int] = []
    for r, n in sorted(vv.items()) if isinstance(vv, dict) else vv:
        out += (intern(r), n)
    return out


def _dec_vv(o: Any, lookup: Lookup, what: str) -> dict[str, int]:
    flat = as_list(o, what, even=True)
    vv: dict[str, int] = {}
    for i in range(0, len(flat), 2):
        r = lookup(flat[i])
        if r in vv:
            fail(f"{what}: replica {r!r} twice")
        vv[r] = counter(flat[i + 1])
    return vv


def _dec_kvv(o: Any, lookup: Lookup) -> KeyVV:
    return tuple(sorted(_dec_vv(o, lookup, "covers").items()))


def _enc_ctx(ctx: CausalContext | Digest, intern: Interner) -> list[Any]:
    by_rep: dict[str, list[int]] = {}
    for d in ctx.cloud:
        by_rep.setdefault(d.replica, []).append(d.counter)
    cloud: list[Any] = []
    for r in sorted(by_rep):
        cloud += (intern(r), sorted(by_rep[r]))
    return [_enc_vv(dict(ctx.vv), intern), cloud]


def _dec_ctx(vv_o: Any, cloud_o: Any, lookup: Lookup) -> CausalContext:
    vv = _dec_vv(vv_o, lookup, "version vector")
    flat = as_list(cloud_o, "dot cloud", even=True)
    dots: list[Dot] = []
    for i in range(0, len(flat), 2):
        r = lookup(flat[i])
        dots.extend(Dot(r, counter(c)) for c in as_list(flat[i + 1], "cloud counters"))
    return CausalContext(vv, dots)


def _pack(kind: int, intern: Interner, body: list[Any]) -> bytes:
    out: bytes = msgpack.packb([kind, VERSION, intern.strings, *body], use_bin_type=True)
    return out


def _unpack(data: Any, kind: int, n_body: int) -> tuple[Lookup, list[Any]]:
    if not isinstance(data, bytes | bytearray | memoryview):
        fail("not bytes")
    try:
        msg = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as e:  # all that malformed bytes raise
        raise CrdtDecodeError(f"not msgpack: {e}") from None
    if type(msg) is not list or len(msg) != 3 + n_body:
        fail("not a CRDT message of the expected shape")
    if msg[0] != kind or type(msg[0]) is not int:
        fail(f"message kind {msg[0]!r}, expected {kind}")
    if msg[1] != VERSION or type(msg[1]) is not int:
        fail(f"unsupported version {msg[1]!r}")
    return Lookup(msg[2]), msg[3:]


# --- causal context and digest -------------------------------------------------------------


def encode_context(ctx: CausalContext) -> bytes:
    intern = Interner()
    return _pack(KIND_CONTEXT, intern, _enc_ctx(ctx, intern))


def decode_context(data: bytes) -> CausalContext:
    lookup, (vv, cloud) = _unpack(data, KIND_CONTEXT, 2)
    return _dec_ctx(vv, cloud, lookup)


def encode_digest(digest: Digest) -> bytes:
    intern = Interner()
    return _pack(KIND_DIGEST, intern, [*_enc_ctx(digest, intern), digest.fingerprint])


def decode_digest(data: bytes) -> Digest:
    lookup, (vv, cloud, fp) = _unpack(data, KIND_DIGEST, 3)
    if fp is not None and (type(fp) is not int or not 0 <= fp < 1 << 64):
        fail(f"bad fingerprint {fp!r}")
    vv_, cloud_, _ = _dec_ctx(vv, cloud, lookup).digest()
    return Digest(vv_, cloud_, fp)


# --- ORMap (and the set and register built on it) ------------------------------------------


def encode_ormap(m: ORMap[K, V], key: ItemCodec[K], value: ItemCodec[V]) -> bytes:
    intern = Interner()
    entries: list[Any] = []
    for k, ents in m.entries.items():
        flat: list[Any] = []
        for d, v in ents.items():
            flat += (intern(d.replica), d.counter, value.encode(v, intern))
            flat.append(_enc_vv(m.covers.get(d, ()), intern))
        entries += (key.encode(k, intern), flat)
    records: list[Any] = []
    for r, rec in m.records.items():
        items: list[Any] = []
        for k, kvv in rec:
            items += (key.encode(k, intern), _enc_vv(kvv, intern))
        records += (intern(r.replica), r.counter, items)
    body = [*_enc_ctx(m.ctx, intern), entries, records, _enc_vv(m.horizon, intern)]
    return _pack(KIND_ORMAP, intern, body)


def decode_ormap_context(data: bytes) -> CausalContext:
    """Only the causal context of an encoded ORMap (CrdtDecodeError if malformed): what
    a receiver needs to tell that a delta holds nothing new, without validating every
    entry. A big batch reaches a node several times (gossip pass-on, anti-entropy)."""
    lookup, body = _unpack(data, KIND_ORMAP, 5)
    return _dec_ctx(body[0], body[1], lookup)


def decode_ormap(
    data: bytes,
    key: ItemCodec[K],
    value: ItemCodec[V],
    record_limit: int = DEFAULT_RECORD_LIMIT,
) -> ORMap[K, V]:
    lookup, (vv_o, cloud_o, entries_o, records_o, horizon_o) = _unpack(data, KIND_ORMAP, 5)
    ctx = _dec_ctx(vv_o, cloud_o, lookup)
    entries: dict[K, dict[Dot, V]] = {}
    covers: dict[Dot, KeyVV] = {}
    seen: set[Dot] = set()
    flat = as_list(entries_o, "entries", even=True)
    for i in range(0, len(flat), 2):
        k = key.decode(flat[i], lookup)
        if k in entries:
            fail(f"key {k!r} twice")
        dots_flat = as_list(flat[i + 1], "register")
        if not dots_flat or len(dots_flat) % 4:
            fail("register is not [replica, counter, value, covers]*")
        ents: dict[Dot, V] = {}
        for j in range(0, len(dots_flat), 4):
            d = Dot(lookup(dots_flat[j]), counter(dots_flat[j + 1]))
            if d in seen:
                fail(f"dot {d!r} live twice")
            if not ctx.contains(d):
                fail(f"live dot {d!r} is not in the context")
            seen.add(d)
            ents[d] = value.decode(dots_flat[j + 2], lookup)
            kvv = _dec_kvv(dots_flat[j + 3], lookup)
            if kvv:
                covers[d] = kvv
        entries[k] = ents
    records: dict[Dot, RemovalRecord] = {}
    flat = as_list(records_o, "records")
    if len(flat) % 3:
        fail("records are not [replica, counter, items]*")
    for i in range(0, len(flat), 3):
        r = Dot(lookup(flat[i]), counter(flat[i + 1]))
        if r in records or not ctx.contains(r):
            fail(f"removal record {r!r} repeated or not in the context")
        items = as_list(flat[i + 2], "record items", even=True)
        if not items:
            fail("empty removal record")
        records[r] = tuple(
            (key.decode(items[j], lookup), _dec_kvv(items[j + 1], lookup))
            for j in range(0, len(items), 2)
        )
    horizon = _dec_vv(horizon_o, lookup, "horizon")
    return ORMap.from_parts(entries, covers, ctx, records, horizon, record_limit)


def encode_aworset(s: AWORSet[Any], element: ItemCodec[Any] = STR) -> bytes:
    return encode_ormap(s.map, element, UNIT)


def decode_aworset(data: bytes, element: ItemCodec[Any] = STR) -> AWORSet[Any]:
    return AWORSet(decode_ormap(data, element, UNIT))


def _dec_reg_key(o: Any, lookup: Lookup) -> int:
    if o != 0 or type(o) is not int:
        fail("register key is not 0")
    return 0


_REG_KEY: ItemCodec[int] = ItemCodec(lambda k, intern: 0, _dec_reg_key)


def encode_mvregister(r: MVRegister[V], value: ItemCodec[V]) -> bytes:
    return encode_ormap(r.map, _REG_KEY, value)


def decode_mvregister(data: bytes, value: ItemCodec[V]) -> MVRegister[V]:
    return MVRegister(decode_ormap(data, _REG_KEY, value))


# --- LWW register --------------------------------------------------------------------------


def encode_lww(r: LWWRegister[V], value: ItemCodec[V]) -> bytes:
    intern = Interner()
    body: list[Any] = [None, None]
    if r.ts is not None:
        body = [encode_ts(r.ts, intern), value.encode(cast(V, r.value), intern)]
    return _pack(KIND_LWW, intern, body)


def decode_lww(data: bytes, value: ItemCodec[V]) -> LWWRegister[V]:
    lookup, (ts_o, v_o) = _unpack(data, KIND_LWW, 2)
    if ts_o is None:
        if v_o is not None:
            fail("value without a timestamp")
        return LWWRegister()
    return LWWRegister(decode_ts(ts_o, lookup), value.decode(v_o, lookup))
