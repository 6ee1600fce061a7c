"""A sleep that a change can cut short, at one event-loop pass per wake.

The loops that sleep until their next deadline or until something changes (the
coordinator, the token watcher) used ``asyncio.wait_for(event.wait(), timeout)``: each
sleep made a task for the wait, a timeout handle and a cancellation, about five loop
passes per deadline on an idle node that otherwise wakes only for memberlist's probes.
An Alarm is one future and one timer handle: ringing it, or its deadline, resumes the
sleeper in the next pass.

A ring that comes while the sleeper is awake (during its work) is kept: its next
``sleep`` returns at once, as an ``asyncio.Event`` set before ``wait`` would.
"""

from __future__ import annotations

import asyncio
import math


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Alarm:
    """``await alarm.sleep(at)`` returns at loop time ``at`` or at the first ``ring()``."""

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None
        self._rung = False

    def ring(self) -> None:
        """Wake the sleeper now (or make its next sleep return at once)."""
        self._rung = True
        if self._fut is not None:
            _wake(self._fut)

    def clear(self) -> None:
        """Forget rings so far: the work they asked for is about to be done."""
        self._rung = False

    async def sleep(self, at: float) -> None:
        """Until loop time ``at`` (``math.inf``: until rung); after one loop pass if
        rung since the last ``clear`` or ``sleep`` (a sleeper rung over and over still
        lets the loop run everything else that is ready)."""
        if self._rung:
            self._rung = False
            await asyncio.sleep(0)  # whatever else is ready (a probe's ack) runs first
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._fut = fut
        timer = None if math.isinf(at) else loop.call_at(at, _wake, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            self._fut = None
            self._rung = False
