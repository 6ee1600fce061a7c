"""Remembered peers: the last members we saw alive, kept under data_dir.

After a whole-site power cut nobody may answer mDNS (AP isolation) and the seeds may
be gone, but the members we last saw usually come back at the same addresses. So
the set of alive members (name, addr, port) is persisted and tried like seeds at
start, while the node sees no peer.

SD cards wear out: the file is written only when the set changes, and at most once
every MIN_INTERVAL seconds (the latest set wins). Writes are atomic (tmp + fsync +
rename + fsync of the directory), so a power cut leaves the old file or the new one.
A damaged file is logged, counted and ignored: we start as if we remembered nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.store import write_atomic

log = logging.getLogger(__name__)

FILENAME = "peers.json"
MIN_INTERVAL = 10.0
MAX_PEERS = 64  # enough to find the cluster again; bounds the file on a 500-node fleet
VERSION = 1


@dataclass(frozen=True, order=True)
class Peer:
    name: str
    addr: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return self.addr, self.port


class PeerStore:
    """Load once, then `update()` with the alive members whenever they change."""

    def __init__(self, data_dir: Path, *, min_interval: float = MIN_INTERVAL) -> None:
        self.path = data_dir / FILENAME
        self.min_interval = min_interval
        self.corrupt = 0  # damaged files seen (exported as a fault reason / metric)
        self.unreadable: str | None = None  # why the file could not be read, if it could not
        self.writes = 0
        self.write_errors = 0
        self._saved: frozenset[Peer] = frozenset()
        self._pending: frozenset[Peer] | None = None
        self._last_write = -1e18

    def load(self) -> list[Peer]:
        """The remembered peers, or [] if there are none or the file is damaged."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:  # a directory in its place, no permission: a fault to fix
            self.unreadable = e.strerror or str(e)
            log.warning("cannot read remembered peers %s: %s", self.path, e)
            return []
        try:  # bytes that are not UTF-8 are damage too (UnicodeDecodeError is a ValueError)
            peers = _parse(raw.decode())
        except ValueError as e:
            self.corrupt += 1
            log.warning("ignoring damaged remembered-peers file %s: %s", self.path, e)
            return []
        self._saved = frozenset(peers)
        return sorted(peers)

    def update(self, peers: Iterable[Peer], now: float | None = None) -> bool:
        """Record the current alive set; writes if it changed and the interval allows.

        Returns True if the file was written. Call `flush()` later (the joiner loop
        does, every second) to write a change that arrived too soon after the last write.
        """
        current = frozenset(sorted(peers)[:MAX_PEERS])
        if not current:
            # being alone says nothing about where the others are: keep what we knew
            self._pending = None
            return False
        if current == self._saved:
            self._pending = None
            return False
        self._pending = current
        return self.flush(now)

    def flush(self, now: float | None = None) -> bool:
        if self._pending is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_write < self.min_interval:
            return False
        peers, self._pending = self._pending, None
        self._last_write = now
        try:
            write_atomic(self.path, _render(peers))
        except OSError as e:
            self.write_errors += 1
            log.warning("cannot save remembered peers to %s: %s", self.path, e)
            return False
        self._saved = peers
        self.writes += 1
        return True


def _render(peers: Iterable[Peer]) -> str:
    return json.dumps(
        {
            "version": VERSION,
            "peers": [{"name": p.name, "addr": p.addr, "port": p.port} for p in sorted(peers)],
        },
        indent=1,
    )


def _parse(text: str) -> list[Peer]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("peers"), list):
        raise ValueError('expected {"version": 1, "peers": [...]}')
    out = []
    for i, p in enumerate(doc["peers"]):
        if not (
            isinstance(p, dict)
            and isinstance(p.get("name"), str)
            and isinstance(p.get("addr"), str)
            and isinstance(p.get("port"), int)
            and not isinstance(p.get("port"), bool)
            and 0 < p["port"] < 65536
        ):
            raise ValueError(f"peers[{i}] is not {{name, addr, port}}: {str(p)[:80]}")
        out.append(Peer(p["name"], p["addr"], p["port"]))
    return out[:MAX_PEERS]
