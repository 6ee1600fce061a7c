"""The collector guard (agent/shell/gc_guard.py): the survivors of a slow full
collection are frozen on the loop, fast passes and young passes freeze nothing, and
the figures reach /metrics."""

from __future__ import annotations

import asyncio
import gc

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
    try:
        keep = [[i] for i in range(10_000)]  # live: survives, then frozen
        for _ in range(100):  # cyclic garbage: freed by the pass, never frozen
            a: list[object] = []
            a.append(a)
        del a
        gc.collect(1)  # a young pass: not watched
        assert guard.full_passes == 0 and guard.freezes == 0
        assert gc.collect() >= 100  # a full pass (generation 2)
        assert guard.full_passes == 1 and guard.freezes == 0  # queued, not done inside gc
        await settle(loop, guard, 1)
        assert guard.freezes == 1
        assert gc.get_freeze_count() >= frozen_before + len(keep)
        text = generate_latest(registry(guard)).decode()
        assert "edge_agent_gc_full_collections_total 1.0" in text
        assert "edge_agent_gc_freezes_total 1.0" in text
        assert f"edge_agent_gc_frozen_objects {float(gc.get_freeze_count())}" in text
    finally:
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


def registry(guard: GcGuard) -> CollectorRegistry:
    r = CollectorRegistry()
    r.register(GcCollector(guard))
    return r
