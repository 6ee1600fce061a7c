"""File names in the store directory: what is a segment, a snapshot, a leftover."""

from __future__ import annotations

import re

SEGMENT_RE = re.compile(r"^seg-(\d{10})\.log$")
SNAPSHOT_RE = re.compile(r"^snap-(\d{10})\.snap$")
TMP_SUFFIX = ".tmp"
QUARANTINE_DIR = "quarantine"


def segment_name(n: int) -> str:
    return f"seg-{n:010d}.log"


def snapshot_name(n: int) -> str:
    """Snapshot ``n`` covers every segment numbered below ``n``."""
    return f"snap-{n:010d}.snap"


def parse(names: list[str]) -> tuple[dict[int, str], dict[int, str], list[str]]:
    """(segments by number, snapshots by number, leftover temporary files)."""
    segs: dict[int, str] = {}
    snaps: dict[int, str] = {}
    tmps: list[str] = []
    for name in names:
        if m := SEGMENT_RE.match(name):
            segs[int(m.group(1))] = name
        elif m := SNAPSHOT_RE.match(name):
            snaps[int(m.group(1))] = name
        elif name.endswith(TMP_SUFFIX):
            tmps.append(name)
    return segs, snaps, tmps
