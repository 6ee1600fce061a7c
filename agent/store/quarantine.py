"""The quarantine: ``<store>/quarantine/``, where damaged store bytes are set aside.

Nothing put here is ever deleted or overwritten by the agent: it is the evidence an
operator (or a later, better decoder) needs, and the only copy of whatever the damage
did not destroy. A name already taken gets a ``.1``, ``.2``... suffix, because after a
store is lost its segment numbers start again from 0 and the next damage would
otherwise land on the same name as the last.
"""

from __future__ import annotations

import os

from agent.store import names
from agent.store.fs import FileOps


def directory(store_dir: str) -> str:
    return os.path.join(store_dir, names.QUARANTINE_DIR)


def _free_name(fs: FileOps, qdir: str, base: str) -> str:
    try:
        taken = set(fs.listdir(qdir))
    except FileNotFoundError:
        return base
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}.{i}"
    return name


def move_aside(fs: FileOps, store_dir: str, name: str, base: str) -> str:
    """Move the file ``name`` (whole: it may be unreadable) to the quarantine as
    ``base`` (or a free variant); the name it got. OSError if it could not."""
    qdir = directory(store_dir)
    fs.makedirs(qdir)
    target = _free_name(fs, qdir, base)
    fs.rename(os.path.join(store_dir, name), os.path.join(qdir, target))
    fs.fsync_dir(store_dir)
    fs.fsync_dir(qdir)
    return target


def copy_aside(fs: FileOps, store_dir: str, base: str, data: bytes) -> str:
    """Write ``data`` durably to the quarantine as ``base`` (or a free variant); the
    name it got. OSError if it could not."""
    qdir = directory(store_dir)
    fs.makedirs(qdir)
    target = _free_name(fs, qdir, base)
    fs.write_file(os.path.join(qdir, target), data)
    fs.fsync_dir(qdir)
    return target


def move_everything(fs: FileOps, store_dir: str) -> tuple[list[str], list[str], int]:
    """Set the whole store aside (recovery itself failed, so no file in it can be
    trusted): every segment, snapshot and leftover moves to the quarantine. Returns
    (names given in the quarantine, what could not be moved, the first segment number
    a new log may use: above every number seen, so a file left in place is never
    appended to)."""
    moved: list[str] = []
    failed: list[str] = []
    try:
        listing = fs.listdir(store_dir)
    except OSError as e:
        return moved, [f"cannot list {store_dir} ({e})"], 0
    segs, snaps, tmps = names.parse(listing)
    for name in [*segs.values(), *snaps.values(), *tmps]:
        try:
            moved.append(move_aside(fs, store_dir, name, f"{name}-0.bin"))
        except OSError as e:
            failed.append(f"{name}: could not quarantine it ({e})")
    return moved, failed, max([*segs, *snaps], default=-1) + 1
