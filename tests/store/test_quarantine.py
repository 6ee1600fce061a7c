"""What the store does with what it cannot use: damaged files are kept aside, never
deleted, never overwritten, never appended to."""

from __future__ import annotations

import os
from pathlib import Path

from agent.store import Store, quarantine
from agent.store.fs import FileOps
from agent.store.names import QUARANTINE_DIR, parse

from .support import payload, state_for


def write(store: Store, n: int) -> None:
    for _ in range(n):
        store.append_delta(payload(store.last_seq + 1))


class BuggyRead(FileOps):
    """A recovery bug, not a disk error: the read path raises something unexpected."""

    def read(self, path: str) -> bytes:
        raise RuntimeError("a bug in recovery")


def test_a_bug_in_recovery_sets_the_whole_store_aside_and_never_appends_to_it(
    tmp_path: Path,
) -> None:
    s = Store(tmp_path)
    write(s, 5)
    s.commit()
    s.snapshot(state_for(5))
    write(s, 3)
    s.close()
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    s = Store(tmp_path, fs=BuggyRead())
    rec = s.recovered
    assert "recovery failed" in rec.problems[0]
    kept = {n: (tmp_path / QUARANTINE_DIR / f"{n}-0.bin") for n in before}
    assert {n: p.read_bytes() for n, p in kept.items() if p.exists()} == before  # all kept
    assert rec.damaged and s.stats.quarantined_files == len(before)
    write(s, 2)
    assert s.commit()
    segs, snaps, _ = parse(os.listdir(tmp_path))
    assert not snaps and min(segs) > max(parse(list(before))[0])  # a new log, not theirs


def test_the_quarantine_never_overwrites_what_it_holds(tmp_path: Path) -> None:
    fs = FileOps()
    first = quarantine.copy_aside(fs, str(tmp_path), "seg-0000000000.log-0.bin", b"one")
    second = quarantine.copy_aside(fs, str(tmp_path), "seg-0000000000.log-0.bin", b"two")
    assert (first, second) == ("seg-0000000000.log-0.bin", "seg-0000000000.log-0.bin.1")
    q = tmp_path / QUARANTINE_DIR
    assert (q / first).read_bytes() == b"one" and (q / second).read_bytes() == b"two"
