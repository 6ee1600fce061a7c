"""A sleep a change can cut short (agent/shell/alarm.py), at one loop pass per wake."""

from __future__ import annotations

import asyncio
import math

import pytest


def test_a_deadline_ends_the_sleep() -> None:
    from agent.shell.alarm import Alarm

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await Alarm().sleep(start + 0.05)
        return loop.time() - start

    assert asyncio.run(main()) >= 0.05


def test_a_ring_wakes_the_sleeper_and_one_before_the_sleep_is_kept() -> None:
    from agent.shell.alarm import Alarm

    async def main() -> None:
        loop = asyncio.get_running_loop()
        alarm = Alarm()
        sleeper = asyncio.ensure_future(alarm.sleep(math.inf))
        await asyncio.sleep(0)
        assert not sleeper.done()
        alarm.ring()
        await asyncio.wait_for(sleeper, 2)
        # rung while awake: the next sleep returns at once, the one after does not
        alarm.ring()
        await asyncio.wait_for(alarm.sleep(math.inf), 0.5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(alarm.sleep(math.inf), 0.05)
        # cleared: the work the ring asked for is done, so the sleep is a full one
        alarm.ring()
        alarm.clear()
        start = loop.time()
        await alarm.sleep(start + 0.05)
        assert loop.time() - start >= 0.05

    asyncio.run(main())


def test_a_woken_sleep_costs_one_loop_pass_and_leaves_no_timer() -> None:
    """What an idle node pays per deadline: asyncio.wait_for on an Event took ~5 passes."""
    from agent.shell.alarm import Alarm

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        alarm = Alarm()
        passes = 0
        original = loop._run_once  # type: ignore[attr-defined]

        def counting() -> None:
            nonlocal passes
            passes += 1
            original()

        loop._run_once = counting  # type: ignore[attr-defined]
        task = asyncio.ensure_future(alarm.sleep(loop.time() + 3600))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        passes = 0
        alarm.ring()
        await task
        loop._run_once = original  # type: ignore[attr-defined]
        live = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        return passes, len(live)

    passes, timers = asyncio.run(main())
    assert passes <= 2, passes  # the sleeper's step, then ours awaiting it
    assert timers == 0  # its deadline's handle is cancelled, not left to fire
