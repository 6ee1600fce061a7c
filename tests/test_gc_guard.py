"""The collector guard (agent/shell/gc_guard.py): the survivors of a slow full
collection are frozen on the loop, fast passes and young passes freeze nothing, and
the figures reach /metrics."""

from __future__ import annotations

import asyncio
import gc
import weakref

from prometheus_client import CollectorRegistry, generate_latest

from agent.shell.gc_guard import GcCollector, GcGuard


async def settle(loop: asyncio.AbstractEventLoop, guard: GcGuard, freezes: int) -> None:
    deadline = loop.time() + 5
    while guard.freezes < freezes and loop.time() < deadline:
        await asyncio.sleep(0.001)


async def test_a_slow_full_collection_freezes_its_survivors_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    guard = GcGuard(slow=0.0)  # every full pass counts as slow here
    frozen_before = gc.get_freeze_count()
    guard.install(loop)
    gc.disable()  # no automatic pass moves the garbage between generations mid-test
    try:
        keep = [[i] for i in range(10_000)]  # live: survives, then frozen
        gc.collect(1)  # a young pass: not watched
        assert guard.full_passes == 0 and guard.freezes == 0
        garbage = [weakref.ref(Cycle()) for _ in range(100)]  # freed by the pass only
        assert all(ref() is not None for ref in garbage)
        gc.collect()  # a full pass (generation 2)
        assert all(ref() is None for ref in garbage)  # freed, so never frozen
        assert guard.full_passes == 1 and guard.freezes == 0  # queued, not done inside gc
        await settle(loop, guard, 1)
        assert guard.freezes == 1
        assert gc.get_freeze_count() >= frozen_before + len(keep)
        text = generate_latest(registry(guard)).decode()
        assert "edge_agent_gc_full_collections_total 1.0" in text
        assert "edge_agent_gc_freezes_total 1.0" in text
        assert f"edge_agent_gc_frozen_objects {float(gc.get_freeze_count())}" in text
    finally:
        gc.enable()
        guard.remove()
        gc.unfreeze()
    assert guard._callback not in gc.callbacks


async def test_a_fast_full_collection_freezes_nothing() -> None:
    loop = asyncio.get_running_loop()
    guard = GcGuard(slow=60.0)
    guard.install(loop)
    try:
        gc.collect()
        gc.collect()
        await asyncio.sleep(0)
        assert guard.full_passes == 2 and guard.freezes == 0
        assert guard.full_seconds > 0.0 and guard.longest <= guard.full_seconds
    finally:
        guard.remove()


class Cycle:
    """An object that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def registry(guard: GcGuard) -> CollectorRegistry:
    r = CollectorRegistry()
    r.register(GcCollector(guard))
    return r


async def test_freezes_are_bounded_by_the_growth_of_what_is_frozen() -> None:
    """A slow pass freezes only if it took a quarter of the time of the passes frozen
    before, or ``longest``: freezes pin whatever dies later in a cycle, so they follow
    the heap's growth, not the clock, and no pass runs much longer than ``longest``
    (each pass's duration comes from a fake clock here)."""
    loop = asyncio.get_running_loop()
    durations = iter([0.2, 0.04, 0.06, 0.049, 0.051, 0.06, 0.09, 0.11, 0.1, 0.12])
    ticks: list[float] = []

    def clock() -> float:  # start: 0; stop: the pass's duration
        ticks.append(0.0 if len(ticks) % 2 == 0 else next(durations))
        return ticks[-1]

    guard = GcGuard(slow=0.05, share=0.25, longest=0.1, clock=clock)
    guard.install(loop)
    gc.disable()  # only the passes below, each with its duration
    frozen = []
    try:
        for _ in range(10):
            gc.collect()
            if guard._freeze_queued:  # decided in the pass; done on the loop
                await settle(loop, guard, guard.freezes + 1)
            frozen.append(guard.freezes)
    finally:
        gc.enable()
        guard.remove()
        gc.unfreeze()
    # 0.2 freezes (cost 0.2); 0.04 < slow; 0.06 >= 0.05 (cost 0.26); 0.049 < slow;
    # 0.051 < 0.26/4; 0.06 < 0.065; 0.09 >= 0.065 (cost 0.35); then the bar is the
    # lesser of a quarter of the cost (0.0875, 0.115, 0.14) and longest = 0.1, so 0.11
    # (cost 0.46), 0.1 (0.56) and 0.12 (0.68) all freeze
    assert frozen == [1, 1, 2, 2, 2, 2, 3, 4, 5, 6]
    assert guard.full_passes == 10 and abs(guard.frozen_cost - 0.68) < 1e-9
