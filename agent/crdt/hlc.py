"""Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).

Timestamps are (wall_ms, logical, node): close to physical time when clocks are sane,
totally ordered always, and never going backwards on one node. The clock never reads
time itself: the caller passes the physical time in, so tests (and the simulator) drive
it with any sequence they like.

Why the extra guards. A Raspberry Pi has no RTC: it boots with its clock in 1970 (or
wherever the last fake-hwclock save left it) and jumps, possibly by years, when NTP
syncs; a misconfigured one can run years ahead. Two rules keep that from ordering
anything wrongly:

- The clock is monotonic across restarts. ``high_water`` (ms) is the highest wall time
  it has issued or adopted; the caller persists it and passes it back to the
  constructor, and the restored clock issues only timestamps above it. A Pi booting in
  1970 therefore carries on from where it stopped, not from 1970.
- It refuses to adopt a remote time more than ``max_drift_ms`` (default one day) beyond
  both its own physical clock and its own high-water mark. One peer with a clock in
  2040 would otherwise drag every HLC in the fleet to 2040 for good (an HLC can never
  come back down), and every later write from a sane node would lose to it. A refused
  remote time is counted in ``rejected`` and ``update`` returns None: bad input is
  counted, never raised. A node whose own clock is still in 1970 (no high-water yet)
  will refuse a correct peer's time too, and keep issuing 1970 timestamps that sort
  before everyone else's: the safe direction, since a node that does not know the time
  should not win a last-writer-wins race. Its timestamps jump forward when NTP syncs.
"""

from __future__ import annotations

from typing import NamedTuple

DAY_MS = 86_400_000
MAX_LOGICAL = 0xFFFF_FFFF  # beyond this the wall time is nudged forward by 1 ms
MAX_WALL_MS = (1 << 63) - 1


class Timestamp(NamedTuple):
    """Ordered by wall time, then logical counter, then node name: a total order."""

    wall_ms: int
    logical: int
    node: str

    def __repr__(self) -> str:
        return f"{self.wall_ms}.{self.logical}@{self.node}"


class HLC:
    __slots__ = ("_logical", "_wall", "max_drift_ms", "node", "rejected")

    def __init__(
        self, node: str, high_water: int | None = None, *, max_drift_ms: int = DAY_MS
    ) -> None:
        """``high_water``: the value of ``high_water`` persisted by an earlier run (None
        for a node that has never run)."""
        self.node = node
        self.max_drift_ms = max_drift_ms
        self.rejected = 0
        self._wall = 0
        if high_water is not None:
            # everything issued before was at or below high_water ms: start above it
            self._wall = min(max(0, high_water), MAX_WALL_MS - 2) + 1
        self._logical = -1

    @property
    def high_water(self) -> int:
        """The highest wall time (ms) issued or adopted: persist it, pass it back on start."""
        return self._wall

    @property
    def last(self) -> Timestamp:
        return Timestamp(self._wall, max(self._logical, 0), self.node)

    def _advance(self, wall: int, logical: int) -> Timestamp:
        if logical > MAX_LOGICAL:
            wall, logical = wall + 1, 0
        self._wall, self._logical = wall, logical
        return Timestamp(wall, logical, self.node)

    def now(self, physical_ms: int) -> Timestamp:
        """A timestamp for a local event (a write) at physical time ``physical_ms``."""
        pt = min(max(0, physical_ms), MAX_WALL_MS - 1)
        if pt > self._wall:
            return self._advance(pt, 0)
        return self._advance(self._wall, self._logical + 1)

    def update(self, remote: Timestamp, physical_ms: int) -> Timestamp | None:
        """Take a peer's timestamp into account (on receiving its write); returns this
        node's timestamp for the receive event, or None if the remote time was refused."""
        pt = min(max(0, physical_ms), MAX_WALL_MS - 1)
        if remote.wall_ms > max(pt, self._wall) + self.max_drift_ms or remote.wall_ms < 0:
            self.rejected += 1
            return None
        rw = min(remote.wall_ms, MAX_WALL_MS - 1)
        wall = max(self._wall, rw, pt)
        if wall == self._wall and wall == rw:
            logical = max(self._logical, remote.logical) + 1
        elif wall == self._wall:
            logical = self._logical + 1
        elif wall == rw:
            logical = remote.logical + 1
        else:
            logical = 0
        return self._advance(wall, logical)
