"""Task supervision: a background task that crashes is logged, counted and restarted.

One bug in a loop (the surfaces, the coordinator's timers, the joiner) must never
leave a silently half-dead agent behind: the task comes back with capped backoff and
``edge_agent_task_restarts_total`` says it happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from agent.shell.metrics import Metrics

log = logging.getLogger(__name__)

BACKOFF_MIN, BACKOFF_MAX = 0.1, 30.0
HEALTHY_RUN = 60.0  # a task that ran this long before crashing starts its backoff afresh


class Supervisor:
    """Runs named background tasks and restarts any that crash, with capped backoff."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.tasks[name] = asyncio.create_task(self._run(name, factory), name=name)

    async def _run(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        backoff = BACKOFF_MIN
        while True:
            started = time.monotonic()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s crashed; restarting in %.1fs", name, backoff)
                self.metrics.task_restarts.labels(name).inc()
            if time.monotonic() - started > HEALTHY_RUN:
                backoff = BACKOFF_MIN
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def stop(self) -> None:
        for t in self.tasks.values():
            t.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
