"""Remembered peers: the last members we saw alive, kept under data_dir.

After a whole-site power cut nobody may answer mDNS (AP isolation) and the seeds may
be gone, but the members we last saw usually come back at the same addresses. So
the set of alive members (name, addr, port) is persisted and tried like seeds at
start, while the node sees no peer.

SD cards wear out: the file is written only when the set changes, and at most once
every MIN_INTERVAL seconds (the latest set wins). Writes are atomic (tmp + fsync +
rename + fsync of the directory), so a power cut leaves the old file or the new one.
A damaged file is logged, counted and ignored: we start as if we remembered nothing.
A problem is logged once, however often the file is read or the write retried (every
MIN_INTERVAL while it fails); a write that works again after failing is logged once too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
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
        self._told: str | None = None  # the read problem last logged (said once)
        self.write_fault: str | None = None  # why the last write failed; None once it works
        self.on_fault: Callable[[str | None], None] | None = None  # write_fault changed

    def _problem(self, text: str) -> bool:
        """Log a read problem unless it is the one already told; True if it is new."""
        if text == self._told:
            return False
        self._told = text
        log.warning("%s", text)
        return True

    def load(self) -> list[Peer]:
        """The remembered peers, or [] if there are none or the file is damaged."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:  # a directory in its place, no permission: a fault to fix
            self.unreadable = e.strerror or str(e)
            self._problem(f"cannot read remembered peers {self.path}: {e}")
            return []
        try:  # bytes that are not UTF-8 are damage too (UnicodeDecodeError is a ValueError)
            peers = _parse(raw.decode())
        except ValueError as e:
            if self._problem(f"ignoring damaged remembered-peers file {self.path}: {e}"):
                self.corrupt += 1
            return []
        self._told = None
        self._saved = frozenset(peers)
        return sorted(peers)

    def update(self, peers: Iterable[Peer], now: float | None = None) -> bool:
        """Record the current alive set and write it if the interval allows (on the
        caller's thread); True if the file was written. The agent calls ``note`` instead
        and writes off its loop (``flush_off_loop``): an SD card's fsync can take longer
        than a probe's timeout."""
        self.note(peers)
        return self.flush(now)

    def note(self, peers: Iterable[Peer]) -> bool:
        """Record the current alive set; True if it differs from what is saved (a write
        is then pending, done by ``flush`` or ``flush_off_loop`` at ``flush_at``)."""
        current = frozenset(sorted(peers)[:MAX_PEERS])
        if not current or current == self._saved:
            # being alone says nothing about where the others are: keep what we knew
            self._pending = None
            return False
        self._pending = current
        return True

    @property
    def pending(self) -> bool:
        """A set waits to be written (by ``flush``, once MIN_INTERVAL allows)."""
        return self._pending is not None

    def flush_at(self) -> float | None:
        """When ``flush`` may write the pending set (monotonic time; None: nothing waits)."""
        if self._pending is None:
            return None
        return self._last_write + self.min_interval

    def flush(self, now: float | None = None) -> bool:
        """Write the pending set if the interval allows, here and now; True if written."""
        peers = self._take(now)
        if peers is None:
            return False
        return self._done(peers, _write(self.path, peers))

    async def flush_off_loop(self, now: float | None = None) -> bool:
        """``flush`` with the file written on a worker thread, so the event loop that
        answers probes never waits for the card; True if written."""
        peers = self._take(now)
        if peers is None:
            return False
        return self._done(peers, await asyncio.to_thread(_write, self.path, peers))

    def _take(self, now: float | None) -> frozenset[Peer] | None:
        """The set to write now, if one waits and the interval allows (the write's slot
        is taken: a failed write is retried after MIN_INTERVAL too)."""
        if self._pending is None:
            return None
        now = time.monotonic() if now is None else now
        if now - self._last_write < self.min_interval:
            return None
        self._last_write = now
        return self._pending

    def _done(self, peers: frozenset[Peer], error: OSError | None) -> bool:
        if error is not None:  # kept pending: retried at the next flush after MIN_INTERVAL
            self.write_errors += 1
            self._write_fault(f"cannot save remembered peers to {self.path}: {error}")
            return False
        if self._pending == peers:  # a newer set noted meanwhile stays pending
            self._pending = None
        self._saved = peers
        self.writes += 1
        self._write_fault(None)
        return True

    def _write_fault(self, fault: str | None) -> None:
        before, self.write_fault = self.write_fault, fault
        if (before is None) == (fault is None):
            return  # still working, or still failing: said already
        if fault is not None:
            log.warning("%s; retrying every %.0fs", fault, self.min_interval)
        else:
            log.info("remembered peers saved to %s again", self.path)
        if self.on_fault is not None:
            self.on_fault(fault)


def _write(path: Path, peers: frozenset[Peer]) -> OSError | None:
    """Write the file atomically; the error instead of raising it (for a worker thread)."""
    try:
        write_atomic(path, _render(peers))
    except OSError as e:
        return e
    return None


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
