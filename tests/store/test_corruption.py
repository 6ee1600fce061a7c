"""Corruption: truncate or flip bytes at random offsets in segments and snapshots.

One store is built (two snapshots, segments between and after them), then each case
copies it, damages one file once, and reopens it. Recovery must never raise, must keep
every record before the damage, must quarantine the damaged bytes, and must invent
nothing. A damaged snapshot must lose nothing at all: the older snapshot and the
segments after it are kept for exactly that.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from agent.store import Store
from agent.store.names import QUARANTINE_DIR, SEGMENT_RE, SNAPSHOT_RE
from agent.store.record import decode, frame_ends

from .support import payload, recovered_seqs, state_for

CASES = 1200
TOTAL = 300


def build(d: Path) -> dict[str, list[int]]:
    """The template store; returns, per segment file, the seqs of its records in order."""
    s = Store(d, segment_bytes=1500)
    for seq in range(1, TOTAL + 1):
        s.append_delta(payload(seq))
        if seq % 17 == 0:
            s.commit()
        if seq in (100, 200):
            s.commit()
            assert s.snapshot(state_for(seq))
    s.close()
    seqs: dict[str, list[int]] = {}
    for name in os.listdir(d):
        if SEGMENT_RE.match(name):
            recs, damage = decode((d / name).read_bytes())
            assert damage is None
            seqs[name] = [r.seq for r in recs]
    return seqs


def test_random_truncations_and_flips(tmp_path: Path) -> None:
    template = tmp_path / "template"
    seg_seqs = build(template)
    names = sorted(os.listdir(template))
    snaps = [n for n in names if SNAPSHOT_RE.match(n)]
    assert len(snaps) == 2 and len(seg_seqs) >= 4
    newest_snap = int(SNAPSHOT_RE.match(snaps[-1]).group(1))  # type: ignore[union-attr]
    rng = random.Random(20261126)
    kinds = {"truncate": 0, "flip": 0, "snapshot": 0, "segment": 0, "quarantined": 0}
    for case in range(CASES):
        d = tmp_path / f"c{case}"
        shutil.copytree(template, d)
        name = rng.choice(names)
        path = d / name
        original = path.read_bytes()
        if rng.random() < 0.5:
            cut = rng.randrange(len(original))
            damaged = original[:cut]
            at, kind = cut, "truncate"
        else:
            at = rng.randrange(len(original))
            bad = bytearray(original)
            bad[at] ^= rng.randrange(1, 256)
            damaged = bytes(bad)
            kind = "flip"
        path.write_bytes(damaged)
        kinds[kind] += 1

        rec = Store(d).recovered  # must not raise
        got = recovered_seqs(rec)  # nothing invented, nothing twice
        assert got == sorted(got), f"case {case}: out of order"
        lost = set(range(1, TOTAL + 1)) - set(got)
        if m := SNAPSHOT_RE.match(name):
            kinds["snapshot"] += 1
            assert not lost, f"case {case}: {kind} of {name} at {at} lost {sorted(lost)[:5]}"
            if int(m.group(1)) == newest_snap:
                assert rec.quarantined == [f"{name}-0.bin"]
                assert (d / QUARANTINE_DIR / f"{name}-0.bin").read_bytes() == damaged
            continue
        kinds["segment"] += 1
        seg_n = int(SEGMENT_RE.match(name).group(1))  # type: ignore[union-attr]
        if seg_n < newest_snap:  # covered by the newest snapshot: not even read
            assert not lost and rec.quarantined == []
            continue
        ends = frame_ends(original)
        start = max([0, *(e for e in ends if e <= at)])  # the damaged frame's start
        kept = seg_seqs[name][: ends.index(start) + 1 if start else 0]
        assert not lost & set(kept), f"case {case}: lost a record before the damage"
        assert lost <= set(seg_seqs[name]), f"case {case}: lost a record in another file"
        assert lost == set(seg_seqs[name]) - set(kept)  # everything from the damage on
        if kind == "truncate" and at in (0, *ends):
            assert rec.quarantined == []  # cut on a frame boundary: gone, but no damage left
            continue
        target = f"{name}-{start}.bin"
        assert rec.quarantined == [target], f"case {case}: {rec.quarantined}"
        assert (d / QUARANTINE_DIR / target).read_bytes() == damaged[start:]
        assert path.read_bytes() == original[:start]  # truncated back to the valid prefix
        kinds["quarantined"] += 1
        if case % 10 == 0:  # a second open finds a clean store: same records, no new damage
            again = Store(d).recovered
            assert recovered_seqs(again) == got and again.quarantined == []
        shutil.rmtree(d)
    assert all(v > 50 for v in kinds.values()), kinds
