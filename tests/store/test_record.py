"""Framing: round trips, and a decoder that stops at the first damage and never raises."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.store.record import (
    HEADER_SIZE,
    KIND_DELTA,
    KIND_META,
    KIND_SNAPSHOT,
    Record,
    decode,
    encode,
    frame_ends,
)

RECS = [
    Record(1, KIND_DELTA, b"abc"),
    Record(2, KIND_META, {"hlc": 17, "peers": ["a:1", "b:2"]}),
    Record(3, KIND_SNAPSHOT, [4, {"inc": 1}, b"state"]),
]


def test_round_trip() -> None:
    buf = b"".join(encode(r) for r in RECS)
    assert decode(buf) == (RECS, None)
    assert decode(b"") == ([], None)


def test_stops_at_torn_tail() -> None:
    buf = b"".join(encode(r) for r in RECS)
    ends = frame_ends(buf)
    for cut in range(len(buf)):
        recs, damage = decode(buf[:cut])
        whole = [e for e in ends if e <= cut]
        assert recs == RECS[: len(whole)]
        assert damage == (None if cut in (0, *ends) else (whole[-1] if whole else 0))


def test_every_flipped_byte_is_caught() -> None:
    buf = b"".join(encode(r) for r in RECS)
    ends = frame_ends(buf)
    for i in range(len(buf)):
        for bit in (1, 0x80):
            bad = bytearray(buf)
            bad[i] ^= bit
            recs, damage = decode(bytes(bad))
            start = max([0, *(e for e in ends if e <= i)])
            assert damage == start, (i, bit)
            assert recs == RECS[: ends.index(start) + 1 if start else 0]


def test_zeroed_tail_and_absurd_length_are_damage() -> None:
    good = encode(RECS[0])
    assert decode(good + b"\0" * 64) == ([RECS[0]], len(good))
    huge = struct.pack("<II", 0xFFFF_FFFF, 0) + b"x" * 10
    assert decode(good + huge) == ([RECS[0]], len(good))


def test_valid_crc_but_bad_body_is_damage() -> None:
    import zlib

    import msgpack

    for body in (b"\xc1", msgpack.packb([1, 9, b"x"]), msgpack.packb({"a": 1}), b"\x93\x01"):
        length = struct.pack("<I", len(body))
        frame = length + struct.pack("<I", zlib.crc32(body, zlib.crc32(length))) + body
        assert decode(frame) == ([], 0)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_never_raise(data: bytes) -> None:
    recs, damage = decode(data)
    assert damage is None or 0 <= damage <= len(data)
    assert all(isinstance(r, Record) for r in recs)


def test_fuzz_mutated_frames_never_raise() -> None:
    rng = random.Random(7)
    buf = b"".join(encode(r) for r in RECS * 3)
    for _ in range(3000):
        bad = bytearray(buf)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
        bad = bad[: rng.randint(0, len(bad))]
        recs, damage = decode(bytes(bad))
        assert recs == (RECS * 3)[: len(recs)]  # a valid prefix, never garbage
        assert damage is None or damage >= len(recs) * HEADER_SIZE


def _frame(body: bytes) -> bytes:
    import zlib

    length = struct.pack("<I", len(body))
    return length + struct.pack("<I", zlib.crc32(body, zlib.crc32(length))) + body


def test_fuzz_bodies_behind_a_valid_crc_never_raise() -> None:
    """The CRC stops nearly every random mutant before the body is parsed; these get past
    it (the CRC is recomputed), so the body's validation is what is under test."""
    import msgpack

    rng = random.Random(11)
    odd: list[object] = [None, -1, 2**64 - 1, 1.5, "s", b"b", [], {}, [1, 2], {1: 2}, {"k": []}]
    rejected = 0
    for _ in range(5000):
        tree: list[object] = [r for r in rng.choice(RECS)]
        tree[2] = list(tree[2]) if isinstance(tree[2], list) else tree[2]
        target = tree[2] if isinstance(tree[2], list) and rng.random() < 0.3 else tree
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(3)
            if op == 0 and target:
                target[rng.randrange(len(target))] = rng.choice(odd)
            elif op == 1 and target:
                del target[rng.randrange(len(target))]
            else:
                target.append(rng.choice(odd))
        body = msgpack.packb(tree, use_bin_type=True)
        if rng.random() < 0.3:  # and raw damage inside the body
            b = bytearray(body)
            b[rng.randrange(len(b))] = rng.randrange(256)
            body = bytes(b)
        recs, damage = decode(_frame(body))
        assert all(isinstance(r, Record) for r in recs)
        rejected += damage == 0
    assert rejected > 1000


def test_a_fault_that_is_not_damage_is_not_read_as_damage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Damage means "truncate the log here"; a MemoryError or a bug read as damage would
    throw valid records away. Only what malformed bytes raise counts as damage."""
    import msgpack

    buf = b"".join(encode(r) for r in RECS)

    def out_of_memory(*args: object, **kwargs: object) -> object:
        raise MemoryError

    monkeypatch.setattr(msgpack, "unpackb", out_of_memory)
    with pytest.raises(MemoryError):
        decode(buf)
