"""Full garbage collections stay short however large the catalogue grows.

CPython's collector runs a full pass over every tracked object each time the heap has
grown by a quarter since the last one. At 70,000 origins a node holds a few million
such objects (specs, registers, placement caches, check entries) and a full pass
stalls the event loop for a second or more: long enough for gossip to suspect the
node, and for checks whose timers fire late to time out. Start-up already moves what
it built out of future passes (``gc.freeze`` in runtime.py); batches declared later
grew the heap again, unguarded.

The guard watches full passes (``gc.callbacks``) and, right after one that took longer
than ``SLOW_FULL``, freezes the survivors too. Freezing just after a full pass pins no
garbage: the pass has just freed every unreachable cycle. Frozen objects are still
freed by reference counting when they die; only a cycle among them that becomes
garbage later stays: a probe, a stream or a task alive at the freeze and freed later in
a cycle is never freed. So freezes must be few, and they follow the growth of the heap,
not the clock: a slow pass freezes only if it took at least ``SHARE`` of the time the
passes already frozen took (about what one pass over the frozen objects would cost), or
``LONGEST`` whatever that share: each freeze then adds a quarter or more to what is
frozen (a few dozen from nothing to 100,000 origins, none on a steady catalogue), and no
pass stalls the loop for much longer than ``LONGEST``.

Measured while 100,000 origins were declared over 5 nodes on the 2-core test machine.
Freezing after every slow pass: 290 full passes (31.5 s), 167 freezes in 16 minutes,
frozen objects from 1.5 to 3.1 million between 80,000 and 100,000 origins, RSS about
1 GB a node: pinned garbage. The share alone: 15 freezes, but passes of up to 1.0 s
(38 s in 132 passes by 70,000 origins), long enough for nodes to be declared dead.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

SLOW_FULL = 0.05  # seconds: a full pass this long may freeze its survivors
SHARE = 0.25  # ...if it also took this share of the time of the passes frozen before
LONGEST = 0.25  # seconds: ...or this long, whatever the share


class GcGuard:
    """Times full collections and freezes the survivors of slow ones (on the loop)."""

    def __init__(
        self,
        slow: float = SLOW_FULL,
        share: float = SHARE,
        longest: float = LONGEST,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.slow = slow
        self.share = share
        self.longest_allowed = longest
        self.clock = clock
        # the summed duration of the passes whose survivors were frozen: about what one
        # full pass over everything frozen would take
        self.frozen_cost = 0.0
        self.full_passes = 0
        self.full_seconds = 0.0
        self.longest = 0.0
        self.freezes = 0
        self._began = 0.0
        self._freeze_queued = False

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch from now on; freezes run on ``loop``."""
        self.loop = loop
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        """Called by the collector, on whichever thread allocated: record, never raise."""
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._began = self.clock()
            return
        took = self.clock() - self._began
        self.full_passes += 1
        self.full_seconds += took
        self.longest = max(self.longest, took)
        loop = self.loop
        if loop is None or loop.is_closed() or self._freeze_queued:
            return
        if took < max(self.slow, min(self.longest_allowed, self.share * self.frozen_cost)):
            return
        self._freeze_queued = True
        loop.call_soon_threadsafe(self._freeze, took)

    def _freeze(self, took: float) -> None:
        # gc.freeze splices lists (O(1)); gc.get_freeze_count walks them: not here
        self._freeze_queued = False
        gc.freeze()
        self.freezes += 1
        self.frozen_cost += took
        log.info(
            "gc: a full collection took %.0f ms; what survived it is left out of later ones",
            took * 1000,
        )


class GcCollector(Collector):
    """The guard's figures in /metrics."""

    def __init__(self, guard: GcGuard) -> None:
        self.guard = guard

    def collect(self) -> Iterable[Any]:
        g = self.guard
        yield CounterMetricFamily(
            "edge_agent_gc_full_collections",
            "Full garbage collections (each stalls the event loop while it runs)",
            value=g.full_passes,
        )
        yield CounterMetricFamily(
            "edge_agent_gc_full_collection_seconds",
            "Time spent in full garbage collections",
            value=g.full_seconds,
        )
        yield GaugeMetricFamily(
            "edge_agent_gc_longest_full_collection_seconds",
            "The longest full garbage collection since start",
            value=g.longest,
        )
        yield CounterMetricFamily(
            "edge_agent_gc_freezes",
            "Times the survivors of a slow full collection were left out of later ones",
            value=g.freezes,
        )
        yield GaugeMetricFamily(
            "edge_agent_gc_frozen_objects",
            "Objects left out of full garbage collections",
            value=gc.get_freeze_count(),
        )
