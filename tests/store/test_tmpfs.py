"""Read-only and full filesystems for real: a 1 MiB tmpfs, remounted read-only or filled.

The store must keep accepting records in memory, report the fault, and catch up when
the filesystem is writable or has room again. Needs root (mount); under CI=true a
missing prerequisite fails instead of skipping. Every mount is unmounted, even on failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.store import Store
from tests.conftest import require

from .support import payload, recovered_seqs, state_for


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    require(os.geteuid() == 0, "root for tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        sh("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt))
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        require(False, f"mount tmpfs ({e})")
    try:
        yield mnt
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            sh("mount", "-o", "remount,rw", str(mnt))
        try:
            sh("umount", str(mnt))
        except subprocess.CalledProcessError:
            sh("umount", "-l", str(mnt))


def fill(directory: Path) -> Path:
    """Fill the filesystem until ENOSPC; the filler file is returned for deletion."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        block = b"\xff" * 4096
        while True:
            try:
                os.write(fd, block)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    return filler


def add(s: Store, n: int) -> None:
    for _ in range(n):
        s.append_delta(payload(s.last_seq + 1))


def test_read_only_then_writable_again(small_fs: Path) -> None:
    d = small_fs / "store"
    s = Store(d)
    add(s, 20)
    assert s.commit() and s.fault is None
    sh("mount", "-o", "remount,ro", str(small_fs))  # the store holds no open fd to block it
    add(s, 20)
    assert not s.commit()
    assert s.fault is not None and "read-only" in s.fault
    assert not s.snapshot(state_for(s.last_seq)) and s.stats.write_errors == 2
    add(s, 20)  # still taking records from memory
    assert not s.commit() and s.stats.pending_records == 40
    assert recovered_seqs(Store(d).recovered) == list(range(1, 21))  # a restart while ro opens
    sh("mount", "-o", "remount,rw", str(small_fs))
    assert s.commit() and s.fault is None and s.stats.pending_records == 0
    s.close()
    assert recovered_seqs(Store(d).recovered) == list(range(1, 61))


def test_disk_full_then_space_returns(small_fs: Path) -> None:
    d = small_fs / "store"
    s: Store
    s = Store(d, max_pending_bytes=4000, snapshot_source=lambda: state_for(s.last_seq))
    add(s, 20)
    assert s.commit()
    filler = fill(small_fs)
    for _ in range(200):  # the segment's last page may still have room for a few batches
        add(s, 10)
        if not s.commit():
            break
    assert s.fault is not None and "disk full" in s.fault
    for _ in range(20):
        add(s, 10)
        assert not s.commit()
    assert s.stats.records_dropped > 0  # past the memory bound: a snapshot must catch up
    filler.unlink()
    assert s.commit() and s.fault is None
    assert s.stats.snapshots == 1
    add(s, 5)
    s.close()
    rec = Store(d).recovered
    assert recovered_seqs(rec) == list(range(1, s.last_seq + 1)) and rec.quarantined == []


def test_open_on_a_full_card_with_a_torn_tail(small_fs: Path) -> None:
    d = small_fs / "store"
    s = Store(d)
    add(s, 10)
    s.close()
    seg = d / "seg-0000000000.log"
    with open(seg, "ab") as f:
        f.write(b"\x10\x00\x00\x00torn")
    filler = fill(small_fs)
    rec = Store(d).recovered  # cannot quarantine (no space): opens anyway, keeps the bytes
    assert recovered_seqs(rec) == list(range(1, 11)) and rec.quarantined == []
    assert any("could not quarantine" in p for p in rec.problems)
    filler.unlink()
    rec = Store(d).recovered
    assert recovered_seqs(rec) == list(range(1, 11)) and len(rec.quarantined) == 1
