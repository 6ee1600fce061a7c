"""The places a person looks: LEDs, systemd's STATUS line, /metrics gauges, and the
dashboard's live events.

Parts report what changed by calling ``refresh_soon`` (membership and Lifeguard's health
score through the cluster, deltas, owners and verdicts through the coordinator, faults
through their owners, an identify blink starting and ending), so an idle node's
surfaces cost next to nothing. The clock is used only while it has something to show:
once a second while a dashboard listens to /v1/events (the health view's uptime and
storage counters); otherwise only a refresh every SAFETY_NET seconds, in case a change
went unreported. Refreshes coalesce, so 10,000
origins reporting at once refresh the surfaces once, not 10,000 times, and come at most
every REFRESH_GAP: a refresh counts the origins this node owns by verdict, and during a
burst of check results (a catalogue of 100,000 whose origins all change at once) one
per loop pass would spend the loop on counting. Each part keeps
its own list of standing faults ({what: (level, reason)}); ``refresh`` mirrors them
into the node's Health, so no part can clear another's problem.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from agent.domain import Health, HealthStatus
from agent.shell.alarm import Alarm
from agent.shell.api.events import EventHub
from agent.shell.leds import Leds
from agent.shell.metrics import Metrics
from agent.shell.systemd import Notifier
from agent.shell.views import NodeViews

Faults = dict[str, tuple[str, str]]

REFRESH_GAP = 0.1  # s: the least time between two refreshes (LEDs need no more)
HEALTH_TICK = 1.0  # s: the SSE health view's cadence while a client listens
SAFETY_NET = 60.0  # s: a refresh nobody asked for, in case a change went unreported


class Surfaces:
    """Pushes the node's views to LEDs, systemd, /metrics and SSE; see the module doc."""

    def __init__(
        self,
        views: NodeViews,
        *,
        health: Health,
        leds: Leds,
        notifier: Notifier,
        metrics: Metrics,
        events: EventHub,
        faults: Callable[[], Faults],
    ) -> None:
        self.views = views
        self.health = health
        self.leds = leds
        self.notifier = notifier
        self.metrics = metrics
        self.events = events
        self.faults = faults
        self.summary = ""  # the last STATUS sent to systemd
        self._pending = False
        self._last = float("-inf")  # when the last refresh ran (monotonic)
        self._synced: set[str] = set()
        self._fault_labels: set[tuple[str, str]] = set()  # (what, level) shown in /metrics
        self._dirty_origins: set[str] = set()
        self._last_health: dict[str, Any] | None = None
        self._listening = Alarm()  # rung when a client connects to /v1/events
        events.on_listen = self._listening.ring

    def refresh_soon(self) -> None:
        """Coalesce: one refresh on the next loop pass, however many callers, and not
        sooner than REFRESH_GAP after the last one."""
        if not self._pending:
            self._pending = True
            loop = asyncio.get_running_loop()
            wait = self._last + REFRESH_GAP - time.monotonic()
            if wait > 0:
                loop.call_later(wait, self._refresh_if_pending)
            else:
                loop.call_soon(self._refresh_if_pending)

    def _refresh_if_pending(self) -> None:
        if self._pending:  # else a direct refresh() ran meanwhile
            self.refresh()

    def origins_changed(self, ids: set[str]) -> None:
        """Origins whose view changed: published to event listeners at the next refresh."""
        if self.events.listeners:
            self._dirty_origins |= ids
        self.refresh_soon()

    def refresh(self) -> None:
        """Push the current state to the LEDs, systemd and /metrics (and SSE origins)."""
        self._pending = False
        self._last = time.monotonic()
        self._sync_faults(self.faults())
        views = self.views
        status = self.health.status
        counts, mine = views.counts(), views.mine_counts()  # each asked once a refresh
        led_faults = self.leds.faults()
        self.leds.set(views.led_state(mine))
        if self.leds.faults() != led_faults:  # driving them failed: say so at once
            self.refresh_soon()
        for s in HealthStatus:
            self.metrics.health.labels(str(s)).set(1 if s == status else 0)
        self._fault_metrics()
        for verdict, n in counts.items():
            self.metrics.origins_by_verdict.labels(verdict).set(n)
        summary = views.summary(counts, mine)
        if status != HealthStatus.OK:
            reasons = "; ".join(self.health.reasons())
            summary = f"{status}: {reasons} | {summary}" if reasons else f"{status} | {summary}"
        if summary != self.summary:
            self.summary = summary
            self.notifier.status(summary)
        if self._dirty_origins:
            dirty, self._dirty_origins = self._dirty_origins, set()
            for origin_id in sorted(dirty):
                d = views.origin(origin_id)
                if d is None:
                    self.events.publish("origin-removed", {"id": origin_id})
                else:
                    self.events.publish("origin", d)

    def publish_health(self) -> None:
        """To SSE listeners, only when something in it other than the uptime changed."""
        if not self.events.listeners:
            return
        view = self.views.health_view()
        same = {k: v for k, v in view.items() if k != "uptime_s"}
        if same != self._last_health:
            self._last_health = same
            self.events.publish("health", view)

    def _fault_metrics(self) -> None:
        """Each standing fault as a gauge in /metrics, and a count of the times it began."""
        now = {
            **{(w, "failing"): 1 for w in self.health.failing},
            **{(w, "degraded"): 1 for w in self.health.degraded},
        }
        for what, level in self._fault_labels - now.keys():
            self.metrics.fault.labels(what, level).set(0)
        for what, level in now.keys() - self._fault_labels:
            self.metrics.fault.labels(what, level).set(1)
            if what not in {w for w, _ in self._fault_labels}:
                self.metrics.fault_starts.labels(what).inc()
        self._fault_labels = set(now)

    def _sync_faults(self, faults: Faults) -> None:
        for what, (level, reason) in faults.items():
            if level == "failing":
                self.health.fail(what, reason)
            else:
                self.health.degrade(what, reason)
        for what in self._synced - faults.keys():
            self.health.clear(what)
        self._synced = set(faults)

    async def run(self) -> None:
        """The surfaces' clock, ticking only while it has something to show: the SSE
        health view once a second while a client listens, and a safety-net refresh when
        none ran for SAFETY_NET seconds (changes refresh through ``refresh_soon``)."""
        while True:
            if time.monotonic() - self._last >= SAFETY_NET:
                self.refresh()
            listening = bool(self.events.listeners)
            if listening:
                self.publish_health()
            self._listening.clear()
            wait = HEALTH_TICK if listening else self._last + SAFETY_NET - time.monotonic()
            loop = asyncio.get_running_loop()
            await self._listening.sleep(loop.time() + max(wait, 0.0))
