"""The last hour of check latency per origin, in minute buckets: the dashboard's sparklines.

Sans-I/O: fed ``(origin, latency, ok, now)`` for every probe this node runs (the shell
passes the loop's monotonic clock, so a wall-clock jump on a Pi without a real-time clock
neither empties nor scrambles it), read back as one point per bucket. Only this node's
own checks are kept: the fleet replicates a latency *band* per observer, not a series,
so the history of an origin checked elsewhere is on its owners.

Memory is bounded and small, because a node alone may check a whole catalogue of 100,000
origins on a 512 MB Pi Zero 2 W. Nothing per origin is a Python object but its slot
number: the points live in one ``array('H')`` (two bytes per bucket), the bucket being
filled in four flat arrays (sum, count, failed, its bucket number). A point is the
bucket's mean latency in whole ms (capped at MAX_MS) plus a bit saying a check failed in
it. With the defaults (60 buckets of 60 s) that is 135 bytes per origin in the arrays,
about 210 with its dict entry and slot number: 20.8 MB at the cap of 100,000 origins
(26 MB at the peak, while the dict grows), measured with tracemalloc in
tests/checks/test_history.py. At the cap the origin fed least recently is dropped for a
new one; an origin not fed for a whole window is dropped as the clock passes it, and one
that leaves the catalogue is forgotten at once. The arrays keep their high-water size
(free slots are reused), never more than the cap.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: origins kept at most (about 21 MB at 60 buckets; see the module doc)
CAPACITY = 100_000
STEP = 60.0  # seconds per bucket
POINTS = 60  # buckets kept: the last hour

MAX_MS = 0x7FFE  # a bucket's mean latency is capped here (32.8 s: past every timeout)
_FAILED = 0x8000  # bit of a point: a check in that bucket failed
_LOW = 0x7FFF  # a point's low 15 bits: its mean ms + 1 (0: no check in its bucket)
_EMPTY = 0
_SUM_MAX = 0xFFFF_FFFF
_N_MAX = 0xFFFF


@dataclass(frozen=True, slots=True)
class Series:
    """One origin's points, oldest first, the last being the bucket now filling.
    ``ms[i]`` is the mean latency of bucket i in whole ms (None: not checked in it);
    ``failed`` holds the indexes of the buckets in which a check failed."""

    ms: list[int | None]
    failed: list[int]

    def as_dict(self) -> dict[str, list[int | None] | list[int]]:
        return {"ms": self.ms, "failed": self.failed}


class LatencyHistory:
    """Per-origin latency over the last ``points`` buckets of ``step`` seconds; see the
    module doc. ``capacity`` bounds the origins kept (the least recently fed goes)."""

    def __init__(self, capacity: int = CAPACITY, step: float = STEP, points: int = POINTS) -> None:
        if capacity < 1 or points < 1 or step <= 0:
            raise ValueError("capacity and points must be at least 1, step positive")
        self.capacity = capacity
        self.step = step
        self.points = points
        # origin -> slot; ordered by the bucket each was last fed in (oldest first),
        # so the stalest is always at the front
        self._slot: dict[str, int] = {}
        self._free: list[int] = []
        self._empty = array("H", bytes(2 * points))  # one origin's points, all empty
        self._ring = array("H")  # points * slot + (bucket % points): finished buckets
        self._sum = array("L")  # ms summed in the bucket being filled (>= 32 bits)
        self._n = array("H")  # checks in it
        self._bad = bytearray()  # 1: a check in it failed
        self._bucket = array("q")  # which bucket that is
        self._newest = -(2**62)  # the newest bucket fed: the front is swept past it
        self.evicted = 0  # origins dropped for lack of room (not by age or forget)

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, origin: object) -> bool:
        return origin in self._slot

    def bucket_of(self, now: float) -> int:
        return int(now // self.step)

    def add(self, origin: str, latency: float, ok: bool, now: float) -> None:
        """One probe's result: ``latency`` in seconds, ``now`` on a monotonic clock."""
        b = self.bucket_of(now)
        slot = self._slot.get(origin)
        if slot is None:
            slot = self._new_slot(origin, b)
        elif b > self._bucket[slot]:
            self._close(slot, b)
            del self._slot[origin]  # to the back: fed in the newest bucket
            self._slot[origin] = slot
        ms = max(0, round(latency * 1000))
        self._sum[slot] = min(self._sum[slot] + ms, _SUM_MAX)
        self._n[slot] = min(self._n[slot] + 1, _N_MAX)
        if not ok:
            self._bad[slot] = 1
        if b > self._newest:
            self._newest = b
            self._expire(b)

    def forget(self, origins: Iterable[str]) -> None:
        """Drop these origins (gone from the catalogue); unknown ones are ignored."""
        for origin in origins:
            slot = self._slot.pop(origin, None)
            if slot is not None:
                self._free.append(slot)

    def series(self, origin: str, now: float) -> Series | None:
        """The points of ``origin`` for the window ending in the bucket of ``now``, or
        None if it has none in the window. Reads only: nothing is folded or dropped."""
        slot = self._slot.get(origin)
        if slot is None:
            return None
        end = max(self.bucket_of(now), self._newest)
        last = self._bucket[slot]
        if last <= end - self.points:
            return None
        n = self.points
        base = slot * n
        ring = self._ring[base : base + n].tolist()
        first = (end + 1) % n  # the ring's place of the window's oldest bucket
        points = ring[first:] + ring[:first]  # the window's buckets, oldest first
        # the bucket being filled is not in the ring; places of the buckets after it
        # hold what they held a window ago
        filling = last - (end - n + 1)
        points[filling] = self._point(slot)
        points[filling + 1 :] = [_EMPTY] * (n - 1 - filling)
        ms = [(p & _LOW) - 1 if p & _LOW else None for p in points]
        failed = [i for i, p in enumerate(points) if p & _FAILED]
        return Series(ms, failed)

    def window_end(self, now: float) -> float:
        """The end of the window ``series`` reads at ``now``, on the same clock."""
        return (max(self.bucket_of(now), self._newest) + 1) * self.step

    def origins(self) -> Iterator[str]:
        """The origins kept, stalest first."""
        return iter(self._slot)

    # --- inside ---------------------------------------------------------------------------

    def _point(self, slot: int) -> int:
        """The bucket being filled, as a point."""
        n = self._n[slot]
        if n == 0:
            return _EMPTY
        mean = min(self._sum[slot] // n, MAX_MS)
        return (mean + 1) | (_FAILED if self._bad[slot] else 0)

    def _close(self, slot: int, b: int) -> None:
        """Move the bucket being filled into the ring and start bucket ``b``: the buckets
        skipped between them (no check ran) are emptied, as is ``b``'s place."""
        last = self._bucket[slot]
        base = slot * self.points
        self._ring[base + last % self.points] = self._point(slot)
        for skipped in range(last + 1, min(b, last + self.points) + 1):
            self._ring[base + skipped % self.points] = _EMPTY
        self._start(slot, b)

    def _start(self, slot: int, b: int) -> None:
        self._sum[slot] = 0
        self._n[slot] = 0
        self._bad[slot] = 0
        self._bucket[slot] = b

    def _new_slot(self, origin: str, b: int) -> int:
        if len(self._slot) >= self.capacity:
            stalest = next(iter(self._slot))
            self._free.append(self._slot.pop(stalest))
            self.evicted += 1
        if self._free:
            slot = self._free.pop()
            base = slot * self.points
            self._ring[base : base + self.points] = self._empty
            self._start(slot, b)
        else:
            slot = len(self._sum)
            self._ring.extend(self._empty)
            self._sum.append(0)
            self._n.append(0)
            self._bad.append(0)
            self._bucket.append(b)
        self._slot[origin] = slot
        return slot

    def _expire(self, b: int) -> None:
        """Drop, from the front, the origins whose newest bucket left the window."""
        oldest_kept = b - self.points + 1
        while self._slot:
            origin = next(iter(self._slot))
            slot = self._slot[origin]
            if self._bucket[slot] >= oldest_kept:
                return
            del self._slot[origin]
            self._free.append(slot)
