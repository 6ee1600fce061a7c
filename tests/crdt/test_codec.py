"""Round trips of every state and delta, and a fuzz: hostile bytes only ever raise
CrdtDecodeError, and whatever does decode can be joined without an exception."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.crdt import (
    AWORSet,
    CausalContext,
    CrdtDecodeError,
    Digest,
    Dot,
    LWWRegister,
    MVRegister,
    ORMap,
    Timestamp,
    codec,
)
from agent.crdt.codec import (
    SCALAR,
    STR,
    TIMESTAMP,
    ItemCodec,
    decode_aworset,
    decode_context,
    decode_digest,
    decode_lww,
    decode_mvregister,
    decode_ormap,
    encode_aworset,
    encode_context,
    encode_digest,
    encode_lww,
    encode_mvregister,
    encode_ormap,
)

from .support import AWORSET, MVREGISTER, ORMAP, REPLICAS, Op, ops, simulate


def ormap_of(history: list[Op], seed: int) -> list[ORMap[int, int]]:
    run = simulate(ORMAP, history, random.Random(seed), loss=0.3)
    return [run.states[r] for r in REPLICAS] + [d for _, d in run.deltas[-3:]]


INT: Any = SCALAR


@given(ops, st.integers(0, 2**32))
def test_ormap_and_its_deltas_round_trip(history: list[Op], seed: int) -> None:
    for m in ormap_of(history, seed):
        back = decode_ormap(encode_ormap(m, INT, INT), INT, INT)
        assert back == m
        assert back.records == m.records and back.horizon == m.horizon
        assert back.digest() == m.digest()  # the live-dot fingerprint survives too
        assert decode_digest(encode_digest(m.digest())) == m.digest()
        assert decode_context(encode_context(m.ctx)) == m.ctx


@given(ops, st.integers(0, 2**32))
def test_set_and_registers_round_trip(history: list[Op], seed: int) -> None:
    rnd = random.Random(seed)
    for s in simulate(AWORSET, history, rnd).states.values():
        assert decode_aworset(encode_aworset(s, INT), INT) == s
    for g in simulate(MVREGISTER, history, rnd).states.values():
        assert decode_mvregister(encode_mvregister(g, INT), INT) == g
    lww: LWWRegister[Timestamp] = LWWRegister()
    assert decode_lww(encode_lww(lww, TIMESTAMP), TIMESTAMP) == lww
    lww.join(lww.set(Timestamp(seed, 1, "a"), Timestamp(2, 3, "b")))
    assert decode_lww(encode_lww(lww, TIMESTAMP), TIMESTAMP) == lww


def test_encoding_is_compact() -> None:
    m: ORMap[str, None] = ORMap()
    delta = m.write("edge-node-01", "shop", None)
    assert len(encode_ormap(delta, STR, SCALAR)) < 40
    big: AWORSet[str] = AWORSet()
    for i in range(1000):
        big.join(big.add("edge-node-01", f"origin-{i}"))
    # replica ids are interned: ~10 bytes per element for its name, ~10 for its dot
    assert len(encode_aworset(big)) < 1000 * 22
    assert len(encode_digest(big.digest())) < 40


def test_invariant_violations_are_rejected() -> None:
    def msg(body: list[Any], strings: list[str] | None = None) -> bytes:
        out: bytes = msgpack.packb([3, 1, strings or ["a"], *body])
        return out

    ok = [[0, 2], [], [0, [0, 1, None, []]], [], []]
    assert decode_ormap(msg(ok), SCALAR, SCALAR).values_at(0) == [None]
    bad: list[list[Any]] = [
        [[0, 2], [], [0, [0, 3, None, []]], [], []],  # live dot not in the context
        [[0, 2], [], [0, [0, 1, None, []], 1, [0, 1, None, []]], [], []],  # one dot twice
        [[0, 2], [], [0, [0, 1, None, []], 0, [0, 2, None, []]], [], []],  # key twice
        [[0, 2, 0, 3], [], [], [], []],  # replica twice in the vector
        [[0, 0], [], [], [], []],  # counter 0
        [[0, 2], [], [], [0, 5, [0, []]], []],  # record outside the context
        [[0, 2], [], [], [0, 1, []], []],  # empty record
        [[5, 2], [], [], [], []],  # string index out of range
        [[0, True], [], [], [], []],  # bool is not a counter
        [[0, 2**63], [], [], [], []],  # counter out of range
        [[0, 2], [], [0, []], [], []],  # register without entries
    ]
    for body in bad:
        with pytest.raises(CrdtDecodeError):
            decode_ormap(msg(body), SCALAR, SCALAR)
    with pytest.raises(CrdtDecodeError):
        decode_ormap(msg(ok, ["x" * 5000]), SCALAR, SCALAR)


# --- fuzz -------------------------------------------------------------------------------------

Decoder = Callable[[bytes], Any]
DECODERS: list[tuple[str, Decoder]] = [
    ("ormap", lambda b: decode_ormap(b, SCALAR, SCALAR)),
    ("aworset", lambda b: decode_aworset(b, SCALAR)),
    ("mvregister", lambda b: decode_mvregister(b, SCALAR)),
    ("lww", lambda b: decode_lww(b, TIMESTAMP)),
    ("context", decode_context),
    ("digest", decode_digest),
]


def _corpus() -> list[bytes]:
    rnd = random.Random(7)
    history = [
        (rnd.randrange(3), rnd.randrange(10), rnd.randrange(4), rnd.randrange(6)) for _ in range(30)
    ]
    out: list[bytes] = []
    for m in ormap_of(history, 1):
        out += [encode_ormap(m, SCALAR, SCALAR), encode_digest(m.digest()), encode_context(m.ctx)]
    g: MVRegister[int] = MVRegister()
    g.join(g.write("a", 5))
    out.append(encode_mvregister(g, SCALAR))
    lww: LWWRegister[Timestamp] = LWWRegister(Timestamp(1, 2, "x"), Timestamp(3, 4, "y"))
    out.append(encode_lww(lww, TIMESTAMP))
    return out


CORPUS = _corpus()
TARGET: ORMap[Any, Any] = ORMap()
for _d in (TARGET.write("a", 1, 1), TARGET.write("b", 2, 2)):
    TARGET.join(_d)


ODD_VALUES: list[Any] = [None, True, 0, -1, 1, 2, 2**63, 2**64 - 1, -(2**63), 1.5, "", "a", b"x"]
ODD_VALUES += [[], [0], [[]], {"a": 1}, "é" * 3, [0, 0], [1, 1, None, []]]


def mutate_structure(rnd: random.Random, data: bytes) -> bytes:
    """Mutate inside the msgpack tree, so the mutant gets past the framing and tests the
    validation of types, ranges and invariants."""
    tree = msgpack.unpackb(data)
    lists: list[list[Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            lists.append(node)
            for child in node:
                walk(child)

    walk(tree)
    for _ in range(rnd.randint(1, 3)):
        target = rnd.choice(lists)
        op = rnd.randrange(4)
        if op == 0 and target:
            target[rnd.randrange(len(target))] = rnd.choice(ODD_VALUES)
        elif op == 1 and target:
            del target[rnd.randrange(len(target))]
        elif op == 2 and target:
            target.insert(rnd.randrange(len(target) + 1), rnd.choice(target))
        else:
            target.append(rnd.choice(ODD_VALUES))
    out: bytes = msgpack.packb(tree)
    return out


def mutate(rnd: random.Random, data: bytes) -> bytes:
    if rnd.random() < 0.5:
        return mutate_structure(rnd, data)
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(6)
        pos = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            b[pos % len(b)] = rnd.randrange(256)
        elif op == 1:
            b[pos:pos] = bytes(
                [rnd.choice([0xC0, 0xC2, 0xCC, 0xCD, 0xD0, 0xDC, 0xDD, 0x90, 0x9F, 0xFF])]
            )
        elif op == 2:
            del b[pos : pos + rnd.randint(1, 8)]
        elif op == 3:
            b = b[: rnd.randrange(len(b) + 1)]
        elif op == 4:
            other = rnd.choice(CORPUS)
            start = rnd.randrange(len(other) + 1)
            b[pos:pos] = other[start : start + rnd.randint(1, 16)]
        elif b:
            b[pos % len(b)] ^= 1 << rnd.randrange(8)
    return bytes(b)


def check(data: bytes) -> int:
    """Feed one input to every decoder; returns how many accepted it."""
    accepted = 0
    for _, decode in DECODERS:
        try:
            obj = decode(data)
        except CrdtDecodeError:
            continue
        accepted += 1
        if isinstance(obj, ORMap):
            TARGET.copy().join(obj)
            obj.delta_for(TARGET.digest())
        elif isinstance(obj, AWORSet | MVRegister):
            obj.map.delta_for(TARGET.digest())
        elif isinstance(obj, CausalContext):
            TARGET.delta_for(obj.digest())
        elif isinstance(obj, Digest):
            TARGET.delta_for(obj)
    return accepted


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    check(data)


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(CORPUS), st.randoms(use_true_random=False))
def test_fuzz_mutated_encodings_hypothesis(data: bytes, rnd: random.Random) -> None:
    check(mutate(rnd, data))


def test_fuzz_mutated_encodings_seeded() -> None:
    """30,000 seeded mutants (plus 6,000 above from hypothesis), every decoder each."""
    rnd = random.Random(20260501)
    t0 = time.perf_counter()
    accepted = 0
    for _ in range(30_000):
        accepted += check(mutate(rnd, rnd.choice(CORPUS)))
    assert accepted > 1000  # the mutants are not all trivially rejected
    assert time.perf_counter() - t0 < 30


def test_the_corpus_itself_decodes() -> None:
    assert all(check(c) >= 1 for c in CORPUS)
    assert Dot("a", 1) in decode_context(encode_context(CausalContext.of([Dot("a", 1)])))


# --- a bug is not malformed input ------------------------------------------------------------


def test_a_buggy_item_codec_is_not_reported_as_malformed_input() -> None:
    """An item decoder that trips over its own code raises its own error: CrdtDecodeError
    would make the caller drop the delta and count a peer's fault, hiding our bug."""

    def broken(o: Any, lookup: Any) -> Any:
        return o.no_such_attribute  # the kind of slip a decoder could ship with

    buggy = ItemCodec(SCALAR.encode, broken)
    m: ORMap[Any, Any] = ORMap()
    m.join(m.write("a", 1, 1))
    with pytest.raises(AttributeError):
        decode_ormap(encode_ormap(m, SCALAR, SCALAR), SCALAR, buggy)


def test_a_bug_inside_the_codec_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise KeyError("planted decoder bug")

    data = encode_context(CausalContext.of([Dot("a", 1)]))
    monkeypatch.setattr(codec, "_dec_ctx", broken)
    with pytest.raises(KeyError):
        decode_context(data)
