"""Store figures (issue 7): SD-card wear per simulated day, next to SQLite, and recovery time.

    .venv/bin/python bench/store.py [--origins 1000] [--nodes 5] [--flap 0.01]
                                    [--records 1000000] [--seed 1]

* wear: a fleet of --nodes nodes, --origins origins each checked every 10 s by its 2
  owners, --flap of the origins going down for 30 s..10 min once per hour. The deltas
  are the real ones (agent.node.state): a check that returns what it returned last time
  writes nothing, so only transitions reach the disk. The deltas one node holds (every
  owner's, as replication delivers them) are written, batched per second (the group
  commit interval), by (a) agent.store and (b) SQLite in WAL mode, synchronous=NORMAL,
  one transaction per batch, in the same run. Each runs in its own process under
  `strace -c` (fsync/fdatasync calls); bytes are the process's write() bytes (wchar in
  /proc/self/io). The fleet's start-up (catalogue and first observations) is written
  first and not counted: the figures are a steady-state day. Goal: <= 10 MB/day and
  <= 0.5x SQLite's bytes.
* recovery: --records deltas (real observation deltas) in a store, then the time for
  Store() to open it (read, verify every CRC, decode every record). Goal: <= 5 s.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.crdt.hlc import HLC
from agent.domain.origin import parse_origin
from agent.node.state import State, decode_delta, encode_delta
from agent.store import SnapshotBudget, Store

DAY = 86_400
MB = 1_000_000


def wchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def simulate(origins: int, nodes: int, flap: float, seed: int) -> tuple[list, list]:
    """(setup batches, day batches): each batch is [second, [delta bytes, ...]]."""
    setup, events = simulate_events(origins, nodes, flap, seed)
    batches: dict[int, list[bytes]] = {}
    for at, _, d in events:
        batches.setdefault(at, []).append(d)
    day = [[t, batches[t]] for t in sorted(batches)]
    return [[0, setup]], day


def simulate_events(
    origins: int, nodes: int, flap: float, seed: int
) -> tuple[list[bytes], list[tuple[int, str, bytes]]]:
    """(setup deltas, the day's deltas as (second, observer node, delta bytes) in order).

    bench/api.py replays the same day through the agent's group commit: it needs to
    know which deltas node n0 made itself (its own observations) and which it received.
    """
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(nodes)]
    states = {n: State(n) for n in names}
    clocks = {n: HLC(n) for n in names}
    ids = [f"o{i:05d}" for i in range(origins)]
    owners = {o: rng.sample(names, 2) for o in ids}
    phase = {(o, n): rng.randrange(10) for o in ids for n in names}
    base_ms = 1_800_000_000_000
    setup: list[bytes] = []
    for n in names:
        for o in ids:
            spec = parse_origin({"id": o, "url": f"http://10.0.{int(o[1:]) // 250}.1/{o}"})
            d = states[n].declare(spec, n, "config", clocks[n].now(base_ms))
            assert d is not None
            setup.append(encode_delta(d))
    for o in ids:
        for n in owners[o]:
            d = states[n].observe(o, n, "up", clocks[n].now(base_ms), "<10ms", "HTTP 200")
            assert d is not None
            setup.append(encode_delta(d))
    # transitions: per hour, flap*origins origins go down for 30 s..10 min
    events: list[tuple[int, str, str]] = []  # (second the origin changes, origin, status)
    for hour in range(24):
        for o in rng.sample(ids, round(flap * origins)):
            down = hour * 3600 + rng.randrange(3600)
            events += [(down, o, "down"), (down + rng.randint(30, 600), o, "up")]
    # each owner sees it at its next check, after fall=3 / rise=2 consecutive results
    seen: list[tuple[int, str, str, str]] = []
    for t, o, status in events:
        for n in owners[o]:
            at = t + (10 - (t - phase[(o, n)]) % 10) % 10 + (20 if status == "down" else 10)
            seen.append((at, o, n, status))
    seen.sort()
    day: list[tuple[int, str, bytes]] = []
    for at, o, n, status in seen:
        if at >= DAY:
            continue
        ms = base_ms + at * 1000
        reason, band = ("HTTP 503", None) if status == "down" else ("HTTP 200", "<10ms")
        d = states[n].observe(o, n, status, clocks[n].now(ms), band, reason)
        if d is not None:
            day.append((at, n, encode_delta(d)))
        # the next check returns the same: it writes nothing
        again = states[n].observe(o, n, status, clocks[n].now(ms + 10_000), band, reason)
        assert again is None
    return setup, day


def worker(kind: str, directory: str, batches_file: str) -> None:
    """Write the batches with one engine; print the bytes it wrote (wchar)."""
    with open(batches_file, "rb") as f:
        batches = msgpack.unpackb(f.read())
    before = wchar()
    if kind == "store":
        s = Store(directory, snapshot_source=lambda: st.snapshot())
        rec = s.recovered  # restored as the runtime will: the snapshot must hold it all
        st = State.restore("n0", rec.state) if rec.state is not None else State("n0")
        for d in rec.deltas:
            st.apply(decode_delta(d))
        for _, deltas in batches:
            for d in deltas:
                st.apply(decode_delta(d))
                s.append_delta(d)
            s.commit()
        s.close()
        extra = f"snapshots={s.stats.snapshots} counted_bytes={s.stats.bytes_written}"
    else:
        db = sqlite3.connect(os.path.join(directory, "deltas.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS deltas (seq INTEGER PRIMARY KEY, body BLOB)")
        for _, deltas in batches:
            db.execute("BEGIN")
            db.executemany("INSERT INTO deltas (body) VALUES (?)", [(d,) for d in deltas])
            db.execute("COMMIT")
        db.close()
        extra = ""
    written = wchar() - before
    print(f"RESULT bytes={written} {extra}", flush=True)


def run_worker(
    kind: str, directory: str, batches: list, trace: bool, script: str = __file__
) -> tuple[int, int, str]:
    """(bytes written, fsync+fdatasync calls, extra) for one engine in its own process
    (``script --worker KIND DIR FILE``: this file's engines, or bench/api.py's)."""
    with tempfile.NamedTemporaryFile(suffix=".msgpack", delete=False) as f:
        f.write(msgpack.packb(batches))
    cmd = [sys.executable, script, "--worker", kind, directory, f.name]
    trace_out = f.name + ".strace"
    if trace:
        cmd = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", trace_out, *cmd]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
        syncs = 0
        if trace:
            text = Path(trace_out).read_text()
            for name in ("fsync", "fdatasync"):
                m = re.search(
                    rf"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?{name}$", text, re.M
                )
                syncs += int(m.group(1)) if m else 0
    finally:
        os.unlink(f.name)
        if os.path.exists(trace_out):
            os.unlink(trace_out)
    m = re.search(r"RESULT bytes=(\d+) ?(.*)", out)
    assert m, out
    return int(m.group(1)), syncs, m.group(2)


def wear(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    setup, day = simulate(args.origins, args.nodes, args.flap, args.seed)
    ndeltas = sum(len(b[1]) for b in day)
    checks = args.origins * 2 * DAY // 10
    print(
        f"simulated day: {args.origins} origins x 2 owners checked every 10 s "
        f"({checks:,} checks), {args.flap:.0%} flapping per hour, {args.nodes} nodes; "
        f"{ndeltas} deltas in {len(day)} one-second batches "
        f"(setup {len(setup[0][1])} deltas, not counted; "
        f"simulated in {time.monotonic() - t0:.1f} s)"
    )
    rows = {}
    for kind in ("store", "sqlite"):
        d = tempfile.mkdtemp(prefix=f"bench-store-{kind}-")
        try:
            run_worker(kind, d, setup, trace=False)
            rows[kind] = run_worker(kind, d, day, trace=True)
        finally:
            shutil.rmtree(d)
    sb, sf, extra = rows["store"]
    qb, qf, _ = rows["sqlite"]
    print(f"  {'':22}{'bytes/day':>14}{'fsyncs/day':>12}")
    print(f"  {'agent.store':22}{sb:>14,}{sf:>12,}   ({extra})")
    print(f"  {'SQLite WAL NORMAL':22}{qb:>14,}{qf:>12,}")
    ratio = sb / qb if qb else float("inf")
    ok = "met" if sb <= 10 * MB and ratio <= 0.5 else "MISSED"
    print(f"  ratio store/SQLite bytes: {ratio:.3f}  (goal <= 10 MB/day and <= 0.5x: {ok})")


def recovery(args: argparse.Namespace) -> None:
    st = State("n0")
    clock = HLC("n0")
    pool = []
    for i in range(1000):
        spec = parse_origin({"id": f"o{i:05d}", "url": f"http://10.0.0.1/o{i}"})
        st.declare(spec, "n0", "config", clock.now(1_800_000_000_000))
        status = "down" if i % 2 else "up"
        d = st.observe(f"o{i:05d}", "n0", status, clock.now(1_800_000_000_000 + i), None, "x")
        assert d is not None
        pool.append(encode_delta(d))
    directory = tempfile.mkdtemp(prefix="bench-store-recovery-")
    try:
        never = SnapshotBudget(min_log_bytes=1 << 40, max_log_bytes=1 << 40)
        s = Store(directory, segment_bytes=64 << 20, budget=never)
        for i in range(args.records):
            s.append_delta(pool[i % len(pool)])
            if i % 10_000 == 9_999:
                s.commit()
        s.close()
        size = s.stats.bytes_written
        t0 = time.perf_counter()
        rec = Store(directory).recovered
        took = time.perf_counter() - t0
        assert len(rec.deltas) == args.records and not rec.problems
    finally:
        shutil.rmtree(directory)
    ok = "met" if took <= 5 else "MISSED"
    print(
        f"recovery: {args.records:,} records ({size / MB:.1f} MB of log, avg "
        f"{size // args.records} B/record) opened in {took:.2f} s (goal <= 5 s: {ok})"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--origins", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--flap", type=float, default=0.01)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if shutil.which("strace") is None:
        sys.exit("bench/store.py needs strace (to count fsyncs)")
    wear(args)
    recovery(args)


if __name__ == "__main__":
    main()
