"""Helpers for the store tests: deterministic records, fault injection, what was recovered."""

from __future__ import annotations

import errno
import os

from agent.store import Recovered
from agent.store.fs import FileOps


def payload(seq: int) -> bytes:
    """The delta a test writes as record ``seq``: its content proves it was not invented."""
    return b"d%08d" % seq + bytes((seq * 7 + i) % 251 for i in range(seq % 23))


def state_for(seq: int) -> bytes:
    """The 'state' a test snapshots after records 1..seq (stands for State.snapshot())."""
    return b"S%08d" % seq + b"." * 40


def seq_of(delta: bytes) -> int:
    return int(delta[1:9])


def recovered_seqs(rec: Recovered) -> list[int]:
    """Every delta seq the recovery yields (snapshot-covered ones included), checking
    that each delta and the snapshot are exactly what a writer wrote."""
    seqs: list[int] = []
    if rec.state is not None:
        assert rec.state == state_for(rec.snapshot_seq), rec.state[:20]
        seqs.extend(range(1, rec.snapshot_seq + 1))
    for d in rec.deltas:
        s = seq_of(d)
        assert d == payload(s), f"record {s} was altered or invented"
        seqs.append(s)
    assert len(seqs) == len(set(seqs)), "a record was replayed twice"
    return seqs


class FaultyOps(FileOps):
    """FileOps that raises ``OSError(err)`` for the operations in ``failing`` while
    ``err`` is set; ``failing`` empty means every mutating operation fails."""

    def __init__(self) -> None:
        self.err: int | None = None
        self.failing: set[str] = set()
        self.calls: list[str] = []

    def check(self, op: str, path: str) -> None:
        self.calls.append(op)
        if self.err is not None and (not self.failing or op in self.failing):
            raise OSError(self.err, os.strerror(self.err), path)


ENOSPC, EROFS, EIO = errno.ENOSPC, errno.EROFS, errno.EIO
