"""Recovery at open: the newest valid snapshot, then the segments after it.

It never raises and never refuses: a damaged snapshot is quarantined and the previous
one (or, failing that, the segments alone) is used; a torn or corrupt segment tail is
copied to ``quarantine/<segment>-<offset>.bin`` and truncated away; a file that cannot
be read is moved to quarantine whole. What could not be done (a read-only card) is
reported in ``problems`` and tried again at the next open; the damaged bytes are never
destroyed before a copy of them is safe.

Deltas are CRDT joins, so a segment after a damaged one is still replayed: the damage
loses only the records it hit, and anti-entropy from peers refills those. But a lost
record may have held this node's own latest dots, which its peers already hold: so any
damage at all makes ``Recovered.damaged`` true, and the node then signs its new writes
with a new replica id (agent/store/replica_id.py) instead of reusing those dots.

A bug in the recovery itself (any exception) is no excuse to start over the same files:
the whole store is moved to the quarantine and reported as damaged, never re-read as if
it were empty and never appended to.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from agent.store import names, quarantine
from agent.store.fs import FileOps
from agent.store.record import KIND_DELTA, KIND_META, KIND_SNAPSHOT, Record, decode, frame_ends

log = logging.getLogger("agent.store")


@dataclass
class Recovered:
    """What the store found on disk: restore ``state`` (None: start empty), then apply
    ``deltas`` in order; ``meta`` is the node metadata as last written."""

    state: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    deltas: list[bytes] = field(default_factory=list)
    last_seq: int = 0  # the highest record sequence number recovered
    snapshot_seq: int = 0  # the sequence number the snapshot covers (0: no snapshot)
    snapshots: list[int] = field(default_factory=list)  # snapshot numbers kept, ascending
    next_segment: int = 0  # the number for the first new segment
    log_bytes: int = 0  # bytes of log after the snapshot (for the snapshot budget)
    quarantined: list[str] = field(default_factory=list)  # files written to quarantine/
    problems: list[str] = field(default_factory=list)  # what was wrong, for the journal
    unlink_errors: int = 0  # leftover temporary files that could not be deleted

    @property
    def damaged(self) -> bool:
        """Something durable may be missing (every problem is damage or an unusable
        directory): the records lost may have held this node's own newest dots."""
        return bool(self.problems)


def parse_snapshot(data: bytes, number: int) -> Record | None:
    """The snapshot record in ``data`` if the file is exactly one valid snapshot frame."""
    recs, damage = decode(data)
    if damage is not None or len(recs) != 1:
        return None
    rec = recs[0]
    if rec.kind != KIND_SNAPSHOT or rec.payload[0] != number:
        return None
    return rec


def replay_segment(
    data: bytes, last_seq: int, meta: dict[str, Any], deltas: list[bytes]
) -> tuple[int, int | None]:
    """Apply one segment's records after ``last_seq`` (pure); returns the new last_seq and
    the offset of the first damaged byte (None if the whole segment is valid)."""
    recs, damage = decode(data)
    for i, rec in enumerate(recs):
        if rec.kind == KIND_SNAPSHOT:  # never written to a segment: treat as damage
            damage = _frame_offset(data, i)
            break
        if rec.seq <= last_seq:
            continue  # covered by the snapshot, or a retried batch written twice
        if rec.kind == KIND_DELTA:
            deltas.append(rec.payload)
        elif rec.kind == KIND_META:
            meta.update(rec.payload)
        last_seq = rec.seq
    return last_seq, damage


def _frame_offset(data: bytes, index: int) -> int:
    return 0 if index == 0 else frame_ends(data)[index - 1]


class _Recovery:
    def __init__(self, fs: FileOps, directory: str) -> None:
        self.fs = fs
        self.dir = directory
        self.out = Recovered()

    def problem(self, msg: str) -> None:
        log.warning("store: %s", msg)
        self.out.problems.append(msg)

    def quarantine_file(self, name: str, why: str) -> None:
        """Move a whole file aside (no copy: it may be unreadable)."""
        try:
            target = quarantine.move_aside(self.fs, self.dir, name, f"{name}-0.bin")
        except OSError as e:
            self.problem(f"{name}: {why}; could not quarantine it ({e}); will retry next open")
            return
        self.out.quarantined.append(target)
        self.problem(f"{name}: {why}; moved to quarantine/{target}")

    def quarantine_tail(self, name: str, data: bytes, offset: int) -> bool:
        """Copy ``data[offset:]`` aside, then truncate the segment to ``offset``."""
        path = os.path.join(self.dir, name)
        try:
            target = quarantine.copy_aside(self.fs, self.dir, f"{name}-{offset}.bin", data[offset:])
        except OSError as e:
            self.problem(
                f"{name}: {len(data) - offset} damaged bytes at offset {offset}; could not "
                f"quarantine them ({e}); left in place, will retry next open"
            )
            return False
        self.out.quarantined.append(target)
        try:
            self.fs.truncate_path(path, offset)
        except OSError as e:
            self.problem(f"{name}: could not truncate at {offset} ({e}); ignored at replay")
        self.problem(
            f"{name}: {len(data) - offset} damaged bytes at offset {offset} "
            f"moved to quarantine/{target}"
        )
        return True

    def run(self) -> Recovered:
        out = self.out
        try:
            self.fs.makedirs(self.dir)
            listing = self.fs.listdir(self.dir)
        except OSError as e:
            self.problem(f"cannot use data directory {self.dir} ({e}); starting empty")
            return out
        segs, snaps, tmps = names.parse(listing)
        for tmp in tmps:  # a snapshot interrupted before its rename: never valid
            try:
                self.fs.unlink(os.path.join(self.dir, tmp))
            except OSError as e:  # only disk space: counted, tried again at the next open
                out.unlink_errors += 1
                log.warning("store: could not delete the leftover %s (%s)", tmp, e)
        out.next_segment = max([*segs, *(n for n in snaps)], default=-1) + 1
        chosen: Record | None = None
        chosen_n = 0
        kept: list[int] = []
        for n in sorted(snaps, reverse=True):
            if chosen is not None:
                kept.append(n)
                continue
            name = snaps[n]
            try:
                data = self.fs.read(os.path.join(self.dir, name))
            except OSError as e:
                self.quarantine_file(name, f"unreadable snapshot ({e})")
                continue
            rec = parse_snapshot(data, n)
            if rec is None:
                self.quarantine_file(name, "corrupt snapshot, falling back to an older one")
                continue
            chosen, chosen_n = rec, n
            kept.append(n)
        out.snapshots = sorted(kept)
        if chosen is not None:
            _, meta, state = chosen.payload
            out.state, out.meta, out.snapshot_seq = state, dict(meta), chosen.seq
            out.last_seq = chosen.seq
        for n in sorted(segs):
            if n < chosen_n:
                continue
            name = segs[n]
            try:
                data = self.fs.read(os.path.join(self.dir, name))
            except OSError as e:
                self.quarantine_file(name, f"unreadable segment ({e})")
                continue
            out.last_seq, damage = replay_segment(data, out.last_seq, out.meta, out.deltas)
            out.log_bytes += len(data) if damage is None else damage
            if damage is not None:
                self.quarantine_tail(name, data, damage)
        return out


def recover(fs: FileOps, directory: str) -> Recovered:
    """Read the store in ``directory``; never raises on anything found there."""
    try:
        return _Recovery(fs, directory).run()
    except Exception as e:  # a bug here must not stop the agent, nor lose the store
        log.exception("store: recovery failed; setting the whole store aside")
        moved, failed, next_segment = quarantine.move_everything(fs, directory)
        problems = [f"recovery failed ({e!r}); {len(moved)} files moved to quarantine/"]
        for msg in failed:
            log.error("store: %s", msg)
        return Recovered(quarantined=moved, problems=problems + failed, next_segment=next_segment)
