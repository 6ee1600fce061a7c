"""Framing: round trips, and a decoder that stops at the first damage and never raises."""

from __future__ import annotations

import random
import struct

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
