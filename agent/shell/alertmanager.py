"""Posting alerts to Alertmanager (``POST <url>/api/v2/alerts``): the thin I/O part.

What to send and when is agent/shell/alert_rules.py's; this delivers it to every
configured ``[[alertmanager]]``: one bounded queue per Alertmanager (agent/shell/alert_rules.py
``AlertQueue``: the latest copy of each alert), posted in batches by one task each,
retried with backoff, never blocking the event loop and never raising into it.

Giving up is safe: a firing alert is re-sent every minute anyway, and every copy carries
an ``endsAt`` by which it resolves by itself, so an alert lost to a long outage of
Alertmanager neither fires forever nor stays missing for long.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.shell.alert_rules import Alert, AlertQueue
from agent.shell.config import AlertmanagerConfig
from agent.shell.http_post import post

log = logging.getLogger(__name__)

API_PATH = "/api/v2/alerts"
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)  # then the batch is given up (logged, counted)
QUEUE_LIMIT = 1000  # alerts waiting per Alertmanager; the oldest are dropped past it
BATCH = 100  # alerts per POST


class AlertmanagerSender:
    """Deliver alerts to the configured Alertmanagers; ``send`` never blocks or raises."""

    def __init__(
        self, targets: tuple[AlertmanagerConfig, ...], user_agent: str = "edge-agent"
    ) -> None:
        self.targets = targets
        self.user_agent = user_agent
        self.counts = {"delivered": 0, "retried": 0, "failed": 0, "queue-full": 0, "shutdown": 0}
        self._queues = [AlertQueue(QUEUE_LIMIT) for _ in targets]
        self._wake: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.targets)

    @property
    def pending(self) -> int:
        """Alerts queued, not counting a batch being posted."""
        return sum(len(q) for q in self._queues)

    def start(self) -> None:
        if not self.targets:
            return
        self._session = aiohttp.ClientSession(headers={"User-Agent": self.user_agent})
        self._wake = [asyncio.Event() for _ in self.targets]
        self._tasks = [
            asyncio.create_task(self._deliver(i), name=f"alertmanager-{i}")
            for i in range(len(self.targets))
        ]

    async def stop(self) -> None:
        """Cancel the deliveries; alerts not yet posted are dropped, counted and logged
        (the others' copies, or their endsAt, take care of them)."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        dropped = sum(q.clear() for q in self._queues)
        if dropped:
            self.counts["shutdown"] += dropped
            log.warning("alertmanager: %d alerts dropped at shutdown (unsent)", dropped)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, alerts: Iterable[Alert]) -> None:
        alerts = list(alerts)
        if not alerts:
            return
        for i, q in enumerate(self._queues):
            for alert in alerts:
                self.counts["queue-full"] += q.put(alert)
            if self._wake:
                self._wake[i].set()

    async def _deliver(self, i: int) -> None:
        target, q, wake = self.targets[i], self._queues[i], self._wake[i]
        url = target.url + API_PATH
        attempt = 0
        while True:
            while not len(q):
                wake.clear()
                await wake.wait()
            batch = q.take(BATCH)
            problem = await self._post(url, target.timeout, batch)
            if problem is None:
                self.counts["delivered"] += 1
                attempt = 0
                continue
            if attempt >= len(RETRY_DELAYS):
                self.counts["failed"] += 1
                log.error(
                    "alertmanager %s: gave up on %d alerts after %d attempts: %s",
                    url,
                    len(batch),
                    attempt + 1,
                    problem,
                )
                attempt = 0
                continue
            self.counts["retried"] += 1
            # newer copies queued meanwhile win over the failed ones (AlertQueue.put_back)
            self.counts["queue-full"] += q.put_back(batch)
            delay = RETRY_DELAYS[attempt]
            attempt += 1
            log.warning(
                "alertmanager %s: %s (attempt %d); retrying in %.0fs", url, problem, attempt, delay
            )
            await asyncio.sleep(delay)

    async def _post(self, url: str, timeout: float, batch: list[Alert]) -> str | None:
        assert self._session is not None
        body = json.dumps([a.as_json() for a in batch], separators=(",", ":"))
        headers = {"Content-Type": "application/json"}
        return await post(self._session, url, body, headers, timeout, detail=True)


class AlertmanagerCollector(Collector):
    """Alertmanager delivery figures for /metrics, read at scrape time."""

    def __init__(self, sender: AlertmanagerSender) -> None:
        self.sender = sender

    def collect(self) -> Iterable[Any]:
        c = self.sender.counts
        posts = CounterMetricFamily(
            "edge_agent_alertmanager_posts",
            "POSTs of alerts to Alertmanager by result: delivered, retried (a failed "
            "attempt that is tried again) or failed (given up after every retry).",
            labels=["result"],
        )
        for result in ("delivered", "retried", "failed"):
            posts.add_metric([result], c[result])
        yield posts
        dropped = CounterMetricFamily(
            "edge_agent_alertmanager_dropped_alerts",
            "Alerts dropped unsent, by reason: queue-full (the oldest, past the queue "
            "limit) or shutdown (still queued at stop).",
            labels=["reason"],
        )
        dropped.add_metric(["queue-full"], c["queue-full"])
        dropped.add_metric(["shutdown"], c["shutdown"])
        yield dropped
        yield GaugeMetricFamily(
            "edge_agent_alertmanager_queued_alerts",
            "Alerts waiting to be posted to Alertmanager (all of them, summed).",
            value=self.sender.pending,
        )
