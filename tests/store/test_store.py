"""Store unit tests: commit, reopen, meta, segments, snapshots, faults (injected)."""

from __future__ import annotations

import os
from pathlib import Path

from agent.crdt.hlc import HLC
from agent.node.state import State, decode_delta, encode_delta
from agent.store import SnapshotBudget, Store
from agent.store.names import QUARANTINE_DIR, parse

from .support import EIO, ENOSPC, EROFS, FaultyOps, payload, recovered_seqs, state_for


def files(d: Path) -> tuple[list[int], list[int]]:
    segs, snaps, _ = parse(os.listdir(d))
    return sorted(segs), sorted(snaps)


def write(store: Store, n: int) -> None:
    for _ in range(n):
        store.append_delta(payload(store.last_seq + 1))


def test_nothing_is_written_before_commit_and_everything_after(tmp_path: Path) -> None:
    s = Store(tmp_path)
    write(s, 10)
    assert Store(tmp_path).recovered.deltas == []  # buffered only
    assert s.commit() and s.stats.fsyncs == 2  # the segment, then its new directory entry
    assert s.stats.commits == 1 and s.stats.bytes_written == s.stats.log_bytes > 0
    rec = Store(tmp_path).recovered
    assert recovered_seqs(rec) == list(range(1, 11)) and rec.last_seq == 10
    assert s.commit() and s.stats.commits == 1  # nothing pending: no write, no fsync


def test_group_commit_is_one_fsync_per_batch(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.commit()
    write(s, 1)
    s.commit()
    before = s.stats.fsyncs
    write(s, 500)
    s.commit()
    assert s.stats.fsyncs == before + 1


def test_meta_is_written_only_when_changed_and_restored(tmp_path: Path) -> None:
    s = Store(tmp_path)
    assert s.set_meta({"incarnation": 3, "hlc": 100, "peers": ["a:7946"]}) == 1
    assert s.set_meta({"incarnation": 3}) is None
    assert s.set_meta({"hlc": 200, "incarnation": 3}) == 2
    s.close()
    s2 = Store(tmp_path)
    assert s2.meta == {"incarnation": 3, "hlc": 200, "peers": ["a:7946"]}
    s2.snapshot(b"")
    s2.set_meta({"hlc": 300})
    s2.close()
    assert Store(tmp_path).meta == {"incarnation": 3, "hlc": 300, "peers": ["a:7946"]}


def test_segments_rotate_at_their_size_bound(tmp_path: Path) -> None:
    s = Store(tmp_path, segment_bytes=1000)
    for _ in range(20):
        write(s, 10)
        s.commit()
    segs, _ = files(tmp_path)
    assert len(segs) > 3
    assert all(os.path.getsize(tmp_path / f"seg-{n:010d}.log") <= 1000 for n in segs[:-1])
    assert recovered_seqs(Store(tmp_path).recovered) == list(range(1, 201))


def test_snapshots_cover_and_prune_the_log(tmp_path: Path) -> None:
    s = Store(tmp_path, segment_bytes=500)
    for round_ in range(1, 5):
        write(s, 30)
        s.commit()
        assert s.snapshot(state_for(s.last_seq))
        write(s, 5)  # after the snapshot, buffered
        s.commit()
        segs, snaps = files(tmp_path)
        assert len(snaps) == min(round_, 2)
        assert min(segs) >= snaps[0] or round_ == 1  # segments before the older snapshot go
    assert s.stats.snapshots == 4
    rec = Store(tmp_path).recovered
    assert recovered_seqs(rec) == list(range(1, 141))
    assert rec.snapshot_seq == 135 and len(rec.deltas) == 5


def test_snapshot_budget_triggers_an_automatic_snapshot(tmp_path: Path) -> None:
    budget = SnapshotBudget(min_log_bytes=2000, ratio=2.0)
    s: Store
    s = Store(tmp_path, budget=budget, snapshot_source=lambda: state_for(s.last_seq))
    for _ in range(30):
        write(s, 5)
        s.commit()
    assert s.stats.snapshots >= 1 and s.stats.log_bytes < 2000
    assert recovered_seqs(Store(tmp_path).recovered) == list(range(1, 151))


def test_budget_ratio_and_max() -> None:
    b = SnapshotBudget(min_log_bytes=100, ratio=2.0, max_log_bytes=10_000)
    assert not b.due(99, 0) and b.due(100, 0)
    assert not b.due(1999, 1000) and b.due(2000, 1000)
    assert b.due(10_000, 1_000_000)


def test_leftover_tmp_snapshot_is_removed(tmp_path: Path) -> None:
    s = Store(tmp_path)
    write(s, 3)
    s.close()
    (tmp_path / "snap-0000000009.snap.tmp").write_bytes(b"half a snapshot")
    rec = Store(tmp_path).recovered
    assert recovered_seqs(rec) == [1, 2, 3]
    assert not (tmp_path / "snap-0000000009.snap.tmp").exists()


def test_each_open_starts_a_new_segment_and_never_reuses_one(tmp_path: Path) -> None:
    for i in range(3):
        s = Store(tmp_path)
        write(s, 2)
        s.close()
        assert files(tmp_path)[0] == list(range(i + 1))
    (tmp_path / "seg-0000000003.log").write_bytes(b"")  # a number someone else holds
    s = Store(tmp_path)
    write(s, 1)
    s.close()
    assert recovered_seqs(Store(tmp_path).recovered) == list(range(1, 8))


def test_write_fault_keeps_records_and_catches_up(tmp_path: Path) -> None:
    for err, reason in ((ENOSPC, "disk full"), (EROFS, "read-only"), (EIO, "I/O error")):
        d = tmp_path / str(err)
        fs = FaultyOps()
        s = Store(d, fs=fs)
        write(s, 5)
        assert s.commit()
        fs.err = err
        write(s, 5)
        assert not s.commit() and not s.commit()
        assert s.fault is not None and reason in s.fault
        assert s.stats.write_errors == 2 and s.stats.pending_records == 5
        fs.err = None
        write(s, 1)
        assert s.commit() and s.fault is None
        assert recovered_seqs(Store(d).recovered) == list(range(1, 12))


def test_failed_fsync_rewrites_the_batch_without_duplicates(tmp_path: Path) -> None:
    fs = FaultyOps()
    fs.failing = {"fsync"}
    s = Store(tmp_path, fs=fs)
    write(s, 3)
    s.commit()
    fs.err = EIO
    write(s, 3)
    assert not s.commit()  # written, then fsync failed: the bytes are there but untrusted
    fs.err = None
    assert s.commit()
    s.close()
    rec = Store(tmp_path).recovered
    assert recovered_seqs(rec) == list(range(1, 7)) and rec.problems == []


def test_partial_write_is_truncated_before_retry(tmp_path: Path) -> None:
    class Partial(FaultyOps):
        def write_all(self, fd: int, data: bytes, path: str) -> None:
            if self.err is not None:
                os.write(fd, data[: len(data) // 2])  # half the batch reached the file
                raise OSError(ENOSPC, "No space left on device", path)
            super().write_all(fd, data, path)

    fs = Partial()
    s = Store(tmp_path, fs=fs)
    write(s, 4)
    s.commit()
    fs.err = ENOSPC
    write(s, 4)
    assert not s.commit()
    fs.err = None
    assert s.commit()
    rec = Store(tmp_path).recovered
    assert recovered_seqs(rec) == list(range(1, 9)) and rec.quarantined == []


def test_memory_bound_drops_then_a_snapshot_catches_up(tmp_path: Path) -> None:
    fs = FaultyOps()
    s: Store
    s = Store(
        tmp_path, fs=fs, max_pending_bytes=2000, snapshot_source=lambda: state_for(s.last_seq)
    )
    write(s, 5)
    s.commit()
    fs.err = EROFS
    for _ in range(50):
        write(s, 10)
        assert not s.commit()
        assert s.stats.pending_bytes <= 2000 + 100
    assert s.stats.records_dropped > 0 and s.fault is not None and s.snapshot_due
    fs.err = None
    assert s.commit() and s.fault is None and s.stats.snapshots == 1
    assert recovered_seqs(Store(tmp_path).recovered) == list(range(1, 506))


def test_snapshot_fault_is_reported_and_retried(tmp_path: Path) -> None:
    fs = FaultyOps()
    s = Store(tmp_path, fs=fs)
    write(s, 5)
    s.commit()
    fs.err = ENOSPC
    fs.failing = {"rename"}  # the temporary file is written, the rename fails
    assert not s.snapshot(state_for(5)) and s.fault is not None
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path))
    fs.failing = set()
    fs.err = None
    assert s.snapshot(state_for(5)) and s.fault is None
    assert recovered_seqs(Store(tmp_path).recovered) == list(range(1, 6))


def test_unusable_directory_still_opens(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    s = Store(blocker / "store")
    assert s.recovered.problems and s.recovered.deltas == []
    write(s, 3)
    assert not s.commit() and s.fault is not None


def test_unreadable_segment_is_quarantined(tmp_path: Path) -> None:
    class Unreadable(FaultyOps):
        def read(self, path: str) -> bytes:
            if path.endswith("seg-0000000000.log"):
                raise OSError(EIO, "Input/output error", path)
            return super().read(path)

    s = Store(tmp_path)
    write(s, 3)
    s.close()
    s = Store(tmp_path)
    write(s, 3)
    s.close()
    rec = Store(tmp_path, fs=Unreadable()).recovered
    assert recovered_seqs(rec) == [4, 5, 6]
    assert rec.quarantined == ["seg-0000000000.log-0.bin"]
    assert (tmp_path / QUARANTINE_DIR / "seg-0000000000.log-0.bin").exists()


def test_with_the_real_state_and_hlc(tmp_path: Path) -> None:
    from agent.domain.origin import parse_origin

    st = State("pi-1")
    hlc = HLC("pi-1")
    s = Store(tmp_path, snapshot_source=st.snapshot)
    spec = parse_origin({"id": "shop", "url": "http://shop.example/healthz"})
    d = st.declare(spec, "pi-1", "config", hlc.now(1_000))
    assert d is not None
    s.append_delta(encode_delta(d))
    s.commit()
    s.snapshot(st.snapshot())
    d = st.observe("shop", "pi-1", "down", hlc.now(2_000), None, "HTTP 503")
    assert d is not None
    s.append_delta(encode_delta(d))
    s.set_meta({"hlc": hlc.high_water})
    s.close()
    rec = Store(tmp_path).recovered
    assert rec.state is not None
    st2 = State.restore("pi-1", rec.state)
    for delta in rec.deltas:
        st2.apply(decode_delta(delta))
    assert st2 == st
    assert HLC("pi-1", rec.meta["hlc"]).now(0) > hlc.last
