"""A dot: one event, named by the replica that made it and that replica's counter.

Dots are what the delta-state CRDTs (Almeida, Shoker, Baquero 2018) use instead of
timestamps: every write gets a fresh, globally unique dot, so "have I seen this
write?" is a set-membership question, and no clock is needed to order anything.
A NamedTuple, not a class: there is one per live entry, and a tuple is the cheapest
hashable thing Python has.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import NamedTuple

_M64 = (1 << 64) - 1


class Dot(NamedTuple):
    """Event number ``counter`` (1, 2, 3, ...) made by ``replica``."""

    replica: str
    counter: int

    def __repr__(self) -> str:
        return f"{self.replica}:{self.counter}"


@lru_cache(maxsize=4096)
def _replica_hash(replica: str) -> int:
    return zlib.crc32(replica.encode("utf-8", "surrogatepass"))


def dot_hash(d: Dot) -> int:
    """A 64-bit hash of a dot, the same in every process (Python's ``hash`` of a str is
    salted per process); XOR-ed over the live dots it fingerprints a store."""
    z = (((_replica_hash(d.replica) << 32) ^ d.counter) + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64  # splitmix64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)
