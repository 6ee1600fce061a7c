"""The identify message's decoder: malformed bytes raise IdentifyDecodeError, and only
malformed bytes do."""

from __future__ import annotations

import random

import msgpack
import pytest

from agent.shell.identify import (
    MAGIC,
    IdentifyDecodeError,
    IdentifyRequest,
    decode_identify,
    encode_identify,
)

GOOD = encode_identify(IdentifyRequest("n1", 5.0, "n0"))


def test_round_trip() -> None:
    assert decode_identify(GOOD) == IdentifyRequest("n1", 5.0, "n0")


def test_fuzz_mutants_only_raise_identify_decode_error() -> None:
    rng = random.Random(3)
    accepted = 0
    for _ in range(20_000):
        b = bytearray(GOOD)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(3) if len(b) > 1 else 1
            if op == 0:
                b[rng.randrange(1, len(b))] = rng.randrange(256)
            elif op == 1:
                b.insert(rng.randrange(1, len(b) + 1), rng.choice([0xC1, 0xDF, 0xDD, 0x81, 0xC0]))
            else:
                del b[rng.randrange(1, len(b)) :]
        try:
            decode_identify(bytes(b))
            accepted += 1
        except IdentifyDecodeError:
            pass
    assert accepted > 0


def test_a_fault_that_is_not_malformed_input_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting an out-of-memory (or a bug) as a peer's malformed message would hide it."""

    def out_of_memory(*args: object, **kwargs: object) -> object:
        raise MemoryError

    monkeypatch.setattr(msgpack, "unpackb", out_of_memory)
    with pytest.raises(MemoryError):
        decode_identify(bytes([MAGIC]) + b"\x80")
