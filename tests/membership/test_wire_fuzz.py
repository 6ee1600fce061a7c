"""Seeded mutation fuzzing: hostile bytes may only ever produce DecodeError, cheaply.

The property fails on a decoder bug: the decoders convert only what malformed bytes
raise, so a bug escapes as its own exception type (and no DecodeError may claim to be
an internal error in disguise).

Default: 100,000 mutated inputs (60% UDP packets, 40% TCP streams fed in random
chunks), well under a minute on a 2-core box. EDGE_FUZZ_CASES=N changes the total,
EDGE_FUZZ_SEED the seed. Mutations are structure-aware where it matters: payloads
are mutated *inside* compression and encryption and then re-wrapped, otherwise
almost every mutant would die at the LZW or GCM layer and the parsers behind them
would go unfuzzed.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import time
import tracemalloc
from collections.abc import Callable

import msgpack
import pytest

from agent.membership import lzw
from agent.membership.codec import (
    add_crc,
    compress_message,
    decode_packet,
    encode_message,
    encode_packet,
    make_compound,
)
from agent.membership.errors import DecodeError
from agent.membership.keyring import Keyring
from agent.membership.messages import (
    AckResp,
    Alive,
    Dead,
    ErrResp,
    IndirectPingReq,
    Message,
    NackResp,
    NodeState,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)
from agent.membership.meta import decode_tags, encode_tags
from agent.membership.serf_messages import (
    JoinIntent,
    LeaveIntent,
    SerfPushPull,
    decode_serf_message,
    encode_serf_message,
)
from agent.membership.stream import StreamDecoder, StreamMessage, encode_stream

from .wire_support import captures

TOTAL = int(os.environ.get("EDGE_FUZZ_CASES", "100000"))
SEED = int(os.environ.get("EDGE_FUZZ_SEED", "20261126"))
PACKET_CASES = TOTAL * 6 // 10
STREAM_CASES = TOTAL - PACKET_CASES
RING = Keyring([bytes(range(32))], random_bytes=lambda n: b"\x05" * n)
LOCAL = b"\x7f\x00\x00\x01"
INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC6, 0xCF]
INTERESTING += [0xD9, 0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0x90, 0x9F, 0x80, 0x8F, 0xA0]
INTERESTING += [0xBF, 0x07, 0x09, 0x0A, 0x0C, 0xF4, 0xE0]


def _messages() -> list[bytes]:
    serf = encode_serf_message(SerfPushPull(ltime=3, status_ltimes={"a": 1}, events=(None,)))
    msgs: list[Message] = [
        Ping(1, "s1", LOCAL, 7946, "py1"),
        IndirectPingReq(2, LOCAL, 7946, "t", True, LOCAL, 1, "me"),
        AckResp(3, b"\x01\x84" + bytes(60)),
        NackResp(4),
        Suspect(5, "x", "y"),
        Alive(6, "py1", LOCAL, 7946, encode_tags({"role": "edge", "dc": "x"})),
        Dead(7, "x", "x"),
        UserMsg(encode_serf_message(LeaveIntent(9, "py1"))),
        UserMsg(encode_serf_message(JoinIntent(9, "py1"))),
        UserMsg(serf),
    ]
    return [encode_message(m) for m in msgs]


MSGS = _messages()
PP = PushPull(
    nodes=tuple(
        PushNodeState(f"n{i}", LOCAL, 7946, encode_tags({"i": str(i)}), i, NodeState(i % 4))
        for i in range(4)
    ),
    user_state=encode_serf_message(SerfPushPull(ltime=2, status_ltimes={"n0": 1})),
    join=True,
)
STREAM_MSGS: list[StreamMessage] = [
    PP,
    Ping(9, "s1"),
    AckResp(9),
    ErrResp("nope"),
    UserMsg(b"\x03ev"),
]


def _mutate_bytes(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        op = rng.randrange(8)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice(INTERESTING)
        elif op == 2:
            b.insert(rng.randrange(len(b) + 1), rng.choice(INTERESTING))
        elif op == 3 and b:
            del b[rng.randrange(len(b)) :]
        elif op == 4 and b:
            i = rng.randrange(len(b))
            del b[i : i + rng.randrange(1, 8)]
        elif op == 5 and b:
            i = rng.randrange(len(b))
            b[i:i] = b[i : i + rng.randrange(1, 32)]
        elif op == 6:
            other = rng.choice(corpus)
            i = rng.randrange(len(other) + 1)
            b[rng.randrange(len(b) + 1) :] = other[i:]
        elif op == 7 and len(b) >= 2:
            i = rng.randrange(len(b) - 1)
            b[i : i + 2] = rng.randrange(65536).to_bytes(2, "big")
    return bytes(b)


def _packet(rng: random.Random) -> tuple[bytes, Keyring | None]:
    """A mutated packet; the mutation happens at a random layer, then gets re-wrapped."""
    parts = rng.sample(MSGS, rng.randint(1, 4))
    body = parts[0] if len(parts) == 1 else make_compound(parts)
    if rng.random() < 0.2:
        body = make_compound([body, rng.choice(MSGS)])
    body = _mutate_bytes(rng, body, MSGS)
    if body and rng.random() < 0.4:
        body = compress_message(body)
        if rng.random() < 0.3:
            body = _mutate_bytes(rng, body, MSGS)
    if body and rng.random() < 0.3:
        body = add_crc(body)
    ring = None
    if rng.random() < 0.25:
        ring = RING
        body = RING.encrypt(body, version=rng.randrange(2))
        if rng.random() < 0.2:
            body = _mutate_bytes(rng, body, MSGS)
    return body, ring


def _stream(rng: random.Random) -> tuple[bytes, Keyring | None]:
    msg = rng.choice(STREAM_MSGS)
    body = _mutate_bytes(rng, encode_stream(msg, compress=False), MSGS)
    if body and rng.random() < 0.5:
        body = compress_message(body)
        if rng.random() < 0.3:
            body = _mutate_bytes(rng, body, MSGS)
    ring = None
    if rng.random() < 0.3:
        ring = RING
        header = b"\x0a" + (len(body) + 29).to_bytes(4, "big")
        body = header + RING.encrypt(body, header)
        if rng.random() < 0.3:
            body = _mutate_bytes(rng, body, MSGS)
    return body, ring


def _decode_stream(rng: random.Random, data: bytes, ring: Keyring | None) -> None:
    dec = StreamDecoder(ring, require_encryption=rng.random() < 0.5 and ring is not None)
    pos = 0
    while pos < len(data) and not dec.done:
        n = rng.choice((1, 2, 7, 64, 4096))
        dec.feed(data[pos : pos + n])
        pos += n
        dec.next_message()
    if not dec.done:
        dec.feed_eof()
        dec.next_message()


def _malformed(err: DecodeError) -> str:
    """The kind of a DecodeError, checked to be about the input and not a bug renamed."""
    assert not err.reason.startswith("internal"), f"a decoder bug disguised as input: {err}"
    return err.kind.value


def _check_packet(rng: random.Random, data: bytes, ring: Keyring | None) -> None:
    result = decode_packet(data, ring)
    for problem in result.problems:
        _malformed(problem)
    for msg in result.messages:
        if isinstance(msg, UserMsg):
            with contextlib.suppress(DecodeError):
                decode_serf_message(msg.payload)
        if isinstance(msg, Alive):
            decode_tags(msg.meta)


def _run(
    cases: int,
    make: Callable[[random.Random], tuple[bytes, Keyring | None]],
    check: Callable[[random.Random, bytes, Keyring | None], None],
    seed: int,
) -> dict[str, int]:
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    worst = 0.0
    for i in range(cases):
        data, ring = make(rng)
        start = time.perf_counter()
        try:
            check(rng, data, ring)
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except DecodeError as err:
            kind = _malformed(err)
            outcomes[kind] = outcomes.get(kind, 0) + 1
        except Exception as exc:  # the property under test: a bug escapes as itself
            pytest.fail(f"case {i} (seed {seed}): {type(exc).__name__}: {exc}; input {data.hex()}")
        worst = max(worst, time.perf_counter() - start)
    assert worst < 2.0, f"slowest case took {worst:.2f}s"
    return outcomes


def test_fuzz_packets_only_raise_decode_error() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = _run(PACKET_CASES, _packet, _check_packet, SEED)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 64, f"max RSS grew {grown_mib:.0f} MiB"
    # The corpus must reach the inner parsers, not die at the envelope every time.
    assert outcomes.get("ok", 0) > PACKET_CASES // 4, outcomes


def test_fuzz_streams_only_raise_decode_error() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = _run(STREAM_CASES, _stream, _decode_stream, SEED + 1)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 64, f"max RSS grew {grown_mib:.0f} MiB"
    assert outcomes.get("ok", 0) > STREAM_CASES // 10, outcomes
    assert len(outcomes) > 5, outcomes  # many different failure classes exercised


def test_fuzz_allocation_is_bounded_per_input() -> None:
    """Under tracemalloc: no mutant makes the decoders allocate more than a few MiB."""
    rng = random.Random(SEED + 2)
    tracemalloc.start()
    try:
        worst = 0
        for i in range(1500):
            make, check = (_packet, _check_packet) if i % 2 else (_stream, _decode_stream)
            data, ring = make(rng)
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            with contextlib.suppress(DecodeError):
                check(rng, data, ring)
            worst = max(worst, tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
    assert worst < 4 * 1024 * 1024, f"a {len(data)}-byte input allocated {worst} bytes"


def zero_bomb(prefix: bytes, cycles: int) -> bytes:
    """An LZW stream expanding to ``prefix`` + ~7.4 MB of zeros per cycle, in ~5.5 kB each.

    Built code by code (each code is the previous one plus a zero: the KwKwK case)
    because compressing 50 MB with the Python encoder would take seconds.
    """
    bits = nbits = 0
    out = bytearray()

    def put(code: int, width: int) -> None:
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    put(256, 9)
    for b in prefix:  # literals, keeping the reader's code count in step
        put(b, 9)
    width, hi = 9, 257 + len(prefix)
    for _ in range(cycles):
        code = 0
        while hi < 4094:
            put(code, width)
            hi += 1
            if hi >= 1 << width:
                width += 1
            code = hi
        put(256, width)
        width, hi = 9, 257
    put(257, width)
    if nbits:
        out.append(bits & 0xFF)
    return bytes(out)


def _compress_raw(buf: bytes) -> bytes:
    return b"\x09\x82\xa4Algo\x00\xa3Buf" + msgpack.packb(buf, use_bin_type=False)


def _hostile(name: str) -> bytes:
    if name == "lzw bomb":
        return _compress_raw(zero_bomb(b"\x08", 7))  # ~50 MB of output
    if name == "nested lzw":
        inner = _compress_raw(zero_bomb(b"\x08", 4))
        return _compress_raw(lzw.compress(inner))
    return {
        "array32 header": b"\x00\xdd\xff\xff\xff\xff",
        "map32 header": b"\x04\xdf\xff\xff\xff\xff",
        "str32 header": b"\x04\x81\xa4Meta\xdb\xff\xff\xff\xff",
        "deep nesting": b"\x00" + b"\x91" * 100_000,
        "compound of compounds": make_compound([make_compound([b"\x07\xff"] * 255)] * 200),
        "crafted compress": b"\x09\x82\xa4Algo\x00\xa3Buf\xdb\x7f\xff\xff\xff",
    }[name]


def test_zero_bomb_is_what_it_claims() -> None:
    data = lzw.decompress(zero_bomb(b"\x08", 1), 10**8)
    assert data[:1] == b"\x08" and len(data) > 7_000_000 and data.count(0) == len(data) - 1


@pytest.mark.parametrize(
    "name",
    [
        "array32 header",
        "map32 header",
        "str32 header",
        "deep nesting",
        "compound of compounds",
        "lzw bomb",
        "nested lzw",
        "crafted compress",
    ],
)
def test_hostile_inputs_stay_small(name: str) -> None:
    data = _hostile(name)
    tracemalloc.start()
    try:
        for decode in (
            lambda: decode_packet(data),
            lambda: _decode_stream(random.Random(0), data, None),
        ):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            with contextlib.suppress(DecodeError):
                decode()
            peak = tracemalloc.get_traced_memory()[1] - base
            # Streams may legitimately inflate to 20 MiB; packets stop at 256 KiB.
            assert peak < 48 * 1024 * 1024, f"{name}: {peak} bytes"
    finally:
        tracemalloc.stop()


def test_real_serf_captures_survive_mutation() -> None:
    rng = random.Random(SEED + 3)
    seeds = [bytes.fromhex(v) for k, v in captures("plain").items() if k.startswith("udp")]
    streams = [bytes.fromhex(v) for k, v in captures("plain").items() if k.startswith("tcp")]
    for _ in range(3000):
        with contextlib.suppress(DecodeError):
            decode_packet(_mutate_bytes(rng, rng.choice(seeds), seeds))
        with contextlib.suppress(DecodeError):
            _decode_stream(rng, _mutate_bytes(rng, rng.choice(streams), streams), None)


def test_encode_packet_sanity_for_corpus() -> None:
    # The corpus itself decodes cleanly (otherwise the fuzz proves little).
    assert decode_packet(encode_packet(MSGS, compress=True, crc=True)).problems == ()
