"""Crash test: SIGKILL a writer process at random points during heavy appends, commits
and snapshots, reopen, and check that every committed record is there and nothing else.

The writer is a forked child (a real process, killed for real; forking instead of
exec'ing keeps 200+ kills within seconds). After each ``commit()`` returns it reports
the last committed seq on a pipe; a report the parent has read is therefore a promise
the store made. The kill lands after a random number of reports plus a random jitter
of up to 2 ms: that is where it kills, not a wait for anything.
"""

from __future__ import annotations

import os
import random
import select
import signal
import struct
import time
from pathlib import Path

from agent.store import SnapshotBudget, Store

from .support import payload, recovered_seqs, state_for

KILLS = 400


def writer(directory: Path, out: int, seed: int) -> None:
    rng = random.Random(seed)
    s: Store
    s = Store(
        directory,
        segment_bytes=rng.choice([512, 4096, 1 << 20]),
        budget=SnapshotBudget(min_log_bytes=rng.choice([2000, 20_000]), ratio=2.0),
        snapshot_source=lambda: state_for(s.last_seq),
    )
    while True:
        for _ in range(rng.randint(1, 30)):
            s.append_delta(payload(s.last_seq + 1))
        if s.commit():
            os.write(out, struct.pack("<Q", s.last_seq))


def read_reports(fd: int, want: int, deadline: float) -> list[int]:
    """Read ``want`` reports (fewer if the child died); fail past the deadline."""
    buf = b""
    while len(buf) < want * 8:
        left = deadline - time.monotonic()
        assert left > 0, "writer stopped reporting"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, want * 8 - len(buf))
        if not chunk:
            break
        buf += chunk
    return [v for (v,) in struct.iter_unpack("<Q", buf[: len(buf) // 8 * 8])]


def drain(fd: int) -> list[int]:
    buf = b""
    while chunk := os.read(fd, 65536):
        buf += chunk
    return [v for (v,) in struct.iter_unpack("<Q", buf[: len(buf) // 8 * 8])]


def test_sigkill_during_heavy_load(tmp_path: Path) -> None:
    rng = random.Random(99)
    committed = 0  # every record up to here was promised durable
    highest = 0
    snapshots_seen = 0
    start = time.monotonic()
    for kill in range(KILLS):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer; it never returns
            try:
                os.close(r)
                writer(tmp_path, w, rng.randrange(1 << 30))
            finally:
                os._exit(1)
        os.close(w)
        try:
            reports = read_reports(r, rng.randint(0, 12), time.monotonic() + 20)
            time.sleep(rng.random() * 0.002)  # jitter: choose where in the batch to kill
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            reports += drain(r)
        finally:
            os.close(r)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "writer died"
        if reports:
            committed = max(committed, *reports)

        rec = Store(tmp_path).recovered  # it always starts
        got = recovered_seqs(rec)  # nothing invented or altered
        assert got == list(range(1, len(got) + 1)), f"kill {kill}: a hole in the log"
        assert len(got) >= committed, f"kill {kill}: lost committed records {len(got)}<{committed}"
        assert rec.quarantined == [] or all(q.startswith("seg-") for q in rec.quarantined)
        highest = max(highest, len(got))
        committed = max(committed, len(got))  # what is recovered now is the new baseline
        snapshots_seen += rec.state is not None
    elapsed = time.monotonic() - start
    assert highest > 1000 and snapshots_seen > KILLS // 2, (highest, snapshots_seen)
    assert elapsed < 90, f"crash test took {elapsed:.0f}s"
