"""LZW codec against vectors produced by Go 1.19.8's compress/lzw (the Go serf was built with)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.membership import lzw
from agent.membership.errors import DecodeError, ErrorKind

from .wire_support import load_vectors

VEC = load_vectors("lzw_go.json")


def gen(seed: str, n: int, alphabet: int) -> bytes:
    """The deterministic input generator the vectors were made with (see `_source`)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(b % alphabet for b in out[:n])


def _id(case: dict[str, Any]) -> str:
    if "seed" in case:
        return f"{case['seed']}-{case['n']}-{case['alphabet']}"
    return f"explicit-{len(case['input']) // 2}"


@pytest.mark.parametrize("case", VEC["encode"], ids=_id)
def test_encoder_is_byte_identical_to_go(case: dict[str, Any]) -> None:
    if "seed" in case:
        data = gen(case["seed"], case["n"], case["alphabet"])
        ours = lzw.compress(data)
        assert len(ours) == case["go_len"]
        assert hashlib.sha256(ours).hexdigest() == case["go_sha256"], case["why"]
    else:
        data = bytes.fromhex(case["input"])
        ours = lzw.compress(data)
        assert ours.hex() == case["go"]
    # Since ours == Go's output, decoding ours also proves we decode Go's stream.
    assert lzw.decompress(ours, len(data)) == data


@pytest.mark.parametrize("case", VEC["decode"], ids=lambda c: c["name"])
def test_decoder_agrees_with_go(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["input"])
    if case["go"] is None:
        with pytest.raises(DecodeError) as info:
            lzw.decompress(data, 1 << 20)
        assert info.value.kind is ErrorKind.BAD_COMPRESSION
    else:
        assert lzw.decompress(data, 1 << 20).hex() == case["go"]


def test_empty_input_is_clear_then_eof() -> None:
    assert lzw.compress(b"") == bytes.fromhex("000302")
    assert lzw.decompress(bytes.fromhex("000302"), 0) == b""


def test_output_bound_is_enforced_before_allocation() -> None:
    bomb = lzw.compress(b"\x00" * 1_000_000)  # ~3.5 kB expanding 300x
    assert len(bomb) < 5000
    with pytest.raises(DecodeError) as info:
        lzw.decompress(bomb, 64 * 1024)
    assert info.value.kind is ErrorKind.TOO_LARGE
    assert len(lzw.decompress(bomb, 1_000_000)) == 1_000_000


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600) | st.lists(st.sampled_from(b"ab\x00"), max_size=600).map(bytes))
def test_least_size_never_exceeds_the_real_stream(data: bytes) -> None:
    """The bound packets rely on to skip compressing (codec.compress_if_smaller) holds for
    random bytes and for the repetitive input that compresses best."""
    assert lzw.least_size(data) <= len(lzw.compress(data))


@pytest.mark.parametrize("case", [c for c in VEC["encode"] if "seed" in c][:40], ids=_id)
def test_least_size_holds_on_the_go_vectors(case: dict[str, Any]) -> None:
    data = gen(case["seed"], case["n"], case["alphabet"])
    assert lzw.least_size(data) <= case["go_len"]


def test_least_size_is_tight_for_distinct_pairs() -> None:
    """No byte pair repeats: every code is a literal, and the bound is the stream's size."""
    data = bytes(range(200))
    assert lzw.least_size(data) == len(lzw.compress(data))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400) | st.lists(st.sampled_from(b"ab\x00"), max_size=400).map(bytes),
    st.integers(0, 500),
)
def test_compress_within_is_compress_or_none_by_size(data: bytes, max_size: int) -> None:
    """Giving up early changes nothing: the stream when it fits, else None."""
    full = lzw.compress(data)
    assert lzw.compress_within(data, max_size) == (full if len(full) <= max_size else None)


def test_compress_within_gives_up_before_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """An incompressible input stops once its codes cannot fit, not at its last byte."""
    packed: list[list[int]] = []
    real = lzw._pack
    monkeypatch.setattr(lzw, "_pack", lambda codes: packed.append(codes) or real(codes))
    data = bytes(range(256)) * 2  # the second half compresses, but not enough
    assert lzw.compress_within(data, len(data) // 2) is None
    assert packed == []
