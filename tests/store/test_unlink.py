"""Deletions the store cannot make (a covered segment or snapshot, a leftover temporary
file) are logged and counted for /metrics, and tried again: never silently ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.store import Store
from agent.store.names import parse

from .support import EIO, FaultyOps, payload, recovered_seqs, state_for


def write(store: Store, n: int) -> None:
    for _ in range(n):
        store.append_delta(payload(store.last_seq + 1))


def test_a_failed_delete_of_a_covered_file_is_counted_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fs = FaultyOps()
    s = Store(tmp_path, fs=fs)
    fs.err, fs.failing = EIO, {"unlink"}
    for _ in range(3):  # the third snapshot makes the first and its segments redundant
        write(s, 10)
        s.commit()
        assert s.snapshot(state_for(s.last_seq))
    assert s.stats.unlink_errors >= 2, s.stats  # snapshot 1 and segment 0 are still there
    assert "could not delete" in caplog.text
    left = parse(os.listdir(tmp_path))[1]
    assert min(left) == 1 and len(left) == 3
    fs.err = None  # the card deletes again: the next prune removes the leftovers
    write(s, 1)
    s.commit()
    assert s.snapshot(state_for(s.last_seq))
    assert len(parse(os.listdir(tmp_path))[1]) == 2
    assert recovered_seqs(Store(tmp_path).recovered) == list(range(1, 32))


def test_a_leftover_temporary_file_that_cannot_be_deleted_is_counted(tmp_path: Path) -> None:
    Store(tmp_path).close()
    (tmp_path / "snap-0000000009.snap.tmp").write_bytes(b"half a snapshot")
    fs = FaultyOps()
    fs.err, fs.failing = EIO, {"unlink"}
    s = Store(tmp_path, fs=fs)
    assert s.stats.unlink_errors == 1 and s.recovered.unlink_errors == 1
