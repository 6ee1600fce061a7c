"""The fleet catalogue's origin ids, kept sorted, so a listing page is a bisection.

Sorting 100,000 ids costs tens of milliseconds; doing it for every page of a paged
listing would make reading the catalogue page by page quadratic. The list is kept
instead, and corrected from the ids the coordinator reports as changed
(Coordinator.on_origins, the same report the events stream uses): a few changes are
inserted or removed by bisection, a large batch (an apply of 10,000) is merged in one
pass. Whether an id belongs is always read from the live set (the placement's
origins), never from the report, so a report only says where to look. Should the
list still disagree in size with the live set (a change reported nowhere), it is
rebuilt from the live set before it is used.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable

log = logging.getLogger(__name__)

#: at most this many reported ids are applied one by one (each an O(n) memmove of
#: pointers); more are merged in one O(n) pass
ONE_BY_ONE = 64


class SortedIds:
    """The ids of ``live()`` in sorted order; see the module docstring."""

    def __init__(self, live: Callable[[], Collection[str]]) -> None:
        self._live = live
        self._ids: list[str] = []
        self._reported: set[str] = set()
        self._built = False
        self.rebuilds = 0  # full sorts: at the first read, then only if a change went unseen

    def changed(self, ids: Iterable[str]) -> None:
        """Origins that may have joined or left the live set (cheap: applied on read).
        Most reports are verdict changes of known ids; while nobody reads, they pile up
        to at most a quarter of the list, then the next read sorts afresh instead."""
        if self._built:
            self._reported.update(ids)
            if len(self._reported) > max(len(self._ids) // 4, ONE_BY_ONE):
                self._built = False
                self._reported.clear()

    def ids(self) -> list[str]:
        """The live ids, sorted. Do not mutate; copy a slice to keep it past a loop pass."""
        live = self._live()
        if not self._built:
            self._rebuild(live)
        elif self._reported:
            self._apply(live)
        if len(self._ids) != len(live):
            log.debug("origin index: %d ids, %d live: rebuilt", len(self._ids), len(live))
            self._rebuild(live)
        return self._ids

    def _rebuild(self, live: Collection[str]) -> None:
        self._ids = sorted(live)
        self._reported.clear()
        self._built = True
        self.rebuilds += 1

    def _apply(self, live: Collection[str]) -> None:
        reported, self._reported = self._reported, set()
        ids = self._ids
        gone: set[str] = set()
        new: list[str] = []
        for oid in reported:
            i = bisect_left(ids, oid)
            held = i < len(ids) and ids[i] == oid
            if oid in live and not held:
                new.append(oid)
            elif held and oid not in live:
                gone.add(oid)
        if len(new) + len(gone) <= ONE_BY_ONE:
            for oid in gone:
                del ids[bisect_left(ids, oid)]
            for oid in new:
                insort(ids, oid)
            return
        kept = [oid for oid in ids if oid not in gone] if gone else ids
        # two sorted runs: Timsort merges them in one linear pass
        self._ids = sorted(kept + sorted(new)) if new else kept
