"""Webhooks: one POST per verdict transition, from the origin's rank-1 owner only.

Every node computes the same verdicts from the same replicated observations, so every
node sees every transition; if each fired, a fleet of 50 would page someone 50 times.
Only the node that placement ranks first among the origin's owners fires
(``Coordinator`` decides); this module only delivers: a bounded queue, one delivery
at a time per hook, retried with exponential backoff, never blocking the event loop and
never raising into it.

Each delivery carries ``X-Edge-Agent-Event``, a key made of the origin, the new
verdict and the HLC time of the change. Across a partition both sides have a rank-1
owner and both may fire for the same transition; after the heal a receiver that
wants exactly-once can drop repeats of the same key (docs/placement.md).

Deliveries still queued or waiting to retry when the agent stops are dropped (the queue
lives in memory): :meth:`Webhooks.stop` says how many in one log line and counts them
in ``edge_agent_webhook_dropped_total{reason="shutdown"}``, so none goes silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.shell.config import WebhookConfig
from agent.shell.http_post import post

log = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # then the event is given up (logged, counted)
QUEUE_LIMIT = 1000  # events waiting per hook; the oldest are dropped past it (counted)


class Webhooks:
    """Deliver events to the configured hooks; ``send`` never blocks and never raises."""

    def __init__(self, hooks: tuple[WebhookConfig, ...], user_agent: str = "edge-agent") -> None:
        self.hooks = hooks
        self.user_agent = user_agent
        self.counts = {"delivered": 0, "retried": 0, "failed": 0, "dropped": 0, "shutdown": 0}
        self._queues: list[deque[tuple[str, dict[str, Any]]]] = [deque() for _ in hooks]
        self._wake: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if not self.hooks:
            return
        self._session = aiohttp.ClientSession(headers={"User-Agent": self.user_agent})
        self._wake = [asyncio.Event() for _ in self.hooks]
        self._tasks = [
            asyncio.create_task(self._deliver(i), name=f"webhook-{i}")
            for i in range(len(self.hooks))
        ]

    @property
    def pending(self) -> int:
        """Deliveries not yet made: queued, being sent, or waiting to retry."""
        return sum(len(q) for q in self._queues)

    async def stop(self) -> None:
        """Cancel the deliveries; those not yet made are dropped, counted and logged."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        dropped = self.pending
        if dropped:
            self.counts["shutdown"] += dropped
            for q in self._queues:
                q.clear()
            log.warning(
                "webhooks: %d %s dropped at shutdown (pending retry or queued)",
                dropped,
                "delivery" if dropped == 1 else "deliveries",
                extra={"DROPPED": dropped},
            )
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, key: str, event: dict[str, Any]) -> None:
        for i, q in enumerate(self._queues):
            if len(q) >= QUEUE_LIMIT:
                q.popleft()
                self.counts["dropped"] += 1
            q.append((key, event))
            if self._wake:
                self._wake[i].set()

    async def _deliver(self, i: int) -> None:
        hook, q, wake = self.hooks[i], self._queues[i], self._wake[i]
        while True:
            while not q:
                wake.clear()
                await wake.wait()
            key, event = q[0]
            if await self._post_with_retries(hook, key, event):
                self.counts["delivered"] += 1
            else:
                self.counts["failed"] += 1
                log.error(
                    "webhook %s: gave up on %s after %d attempts",
                    hook.url,
                    key,
                    len(RETRY_DELAYS) + 1,
                )
            if q and q[0][0] == key:
                q.popleft()

    async def _post_with_retries(
        self, hook: WebhookConfig, key: str, event: dict[str, Any]
    ) -> bool:
        body = json.dumps(event, separators=(",", ":"))
        headers = {"Content-Type": "application/json", "X-Edge-Agent-Event": key}
        headers.update(dict(hook.headers))
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            problem = await self._post(hook, body, headers)
            if problem is None:
                return True
            if delay is None:
                break
            self.counts["retried"] += 1
            log.warning(
                "webhook %s: %s (attempt %d); retrying in %.0fs",
                hook.url,
                problem,
                attempt + 1,
                delay,
            )
            await asyncio.sleep(delay)
        return False

    async def _post(self, hook: WebhookConfig, body: str, headers: dict[str, str]) -> str | None:
        assert self._session is not None
        return await post(self._session, hook.url, body, headers, hook.timeout)


class WebhookCollector(Collector):
    """Webhook delivery figures for /metrics, read at scrape time."""

    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks

    def collect(self) -> Iterable[Any]:
        c = self.webhooks.counts
        results = CounterMetricFamily(
            "edge_agent_webhook_deliveries",
            "Webhook deliveries by result: delivered, retried (a failed attempt that is "
            "tried again) or failed (given up after every retry).",
            labels=["result"],
        )
        for result in ("delivered", "retried", "failed"):
            results.add_metric([result], c[result])
        yield results
        dropped = CounterMetricFamily(
            "edge_agent_webhook_dropped",
            "Webhook deliveries dropped unsent, by reason: queue-full (the oldest, past "
            "the queue limit) or shutdown (still queued or waiting to retry at stop).",
            labels=["reason"],
        )
        dropped.add_metric(["queue-full"], c["dropped"])
        dropped.add_metric(["shutdown"], c["shutdown"])
        yield dropped
        yield GaugeMetricFamily(
            "edge_agent_webhook_pending",
            "Webhook deliveries not yet made: queued, being sent or waiting to retry.",
            value=self.webhooks.pending,
        )
