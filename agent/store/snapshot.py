"""Snapshots: the whole state in one new file, after which the log it covers can go.

A snapshot is written as ``snap-N.snap.tmp``, fsynced, renamed to ``snap-N.snap`` and
the directory fsynced: a power cut leaves either the old set of files or the new one,
never a half snapshot under a valid name (a leftover ``.tmp`` is deleted at open).
Snapshot N covers every segment numbered below N.

Two snapshots are kept, with the segments after the older one: if the newest turns out
corrupt, recovery falls back to the older one and replays those segments, losing
nothing. So a snapshot deletes the segments and snapshots older than its predecessor.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from agent.store import names
from agent.store.fs import FileOps
from agent.store.record import KIND_SNAPSHOT, Record, encode

KEEP = 2

log = logging.getLogger("agent.store")


@dataclass(frozen=True)
class SnapshotBudget:
    """When to snapshot: once the log since the last snapshot passes ``min_log_bytes``
    and ``ratio`` times the last snapshot's size. The ratio bounds the extra writing a
    snapshot costs to 1/ratio of the log; the minimum keeps small states from
    snapshotting every few records; ``max_log_bytes`` bounds recovery time and disk."""

    min_log_bytes: int = 1 << 20
    ratio: float = 2.0
    max_log_bytes: int = 64 << 20

    def due(self, log_bytes: int, last_snapshot_bytes: int) -> bool:
        if log_bytes >= self.max_log_bytes:
            return True
        return log_bytes >= max(self.min_log_bytes, self.ratio * last_snapshot_bytes)


def write_snapshot(
    fs: FileOps, directory: str, number: int, seq: int, meta: dict[str, Any], state: bytes
) -> int:
    """Durably write snapshot ``number`` covering records up to ``seq``; its size.
    OSError if any step fails (the temporary file is then removed if possible)."""
    frame = encode(Record(seq, KIND_SNAPSHOT, [number, meta, state]))
    final = os.path.join(directory, names.snapshot_name(number))
    tmp = final + names.TMP_SUFFIX
    try:
        fs.write_file(tmp, frame)
        fs.rename(tmp, final)
        fs.fsync_dir(directory)
    except OSError:
        try:
            fs.unlink(tmp)
        except (FileNotFoundError, NotADirectoryError):
            pass  # it was never made: nothing to clean up, nothing to say
        except OSError as e:  # the write already failed (and is reported); the next open
            log.warning("store: could not delete %s (%s)", tmp, e)  # removes it
        raise
    return len(frame)


def prune(fs: FileOps, directory: str, snapshots: list[int]) -> tuple[list[str], int]:
    """Delete snapshots beyond the newest ``KEEP`` and the segments before the oldest
    kept one. Best effort, since a leftover is only disk space, and the next prune
    tries it again; but every failure is logged and counted (the caller's
    ``unlink_errors``), because a card that cannot delete will soon be full.
    Returns (what it deleted, how many deletions failed)."""
    snapshots.sort()
    keep = snapshots[-KEEP:]
    if len(keep) < KEEP:
        return [], 0  # the only snapshot: keep every segment as its fallback
    floor = keep[0]
    deleted: list[str] = []
    try:
        segs, snaps, _ = names.parse(fs.listdir(directory))
    except OSError as e:
        log.warning("store: cannot list %s to prune it (%s)", directory, e)
        return deleted, 1
    doomed = [name for n, name in segs.items() if n < floor]
    doomed += [name for n, name in snaps.items() if n < floor]
    failed = 0
    for name in doomed:
        try:
            fs.unlink(os.path.join(directory, name))
            deleted.append(name)
        except OSError as e:
            failed += 1
            log.warning("store: could not delete %s, covered by a snapshot (%s)", name, e)
    snapshots[:] = keep
    return deleted, failed
