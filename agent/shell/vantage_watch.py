"""This node's own vantage state, and the fleet's impaired sites, told where people look.

The node core decides who is an impaired vantage point (agent/node/vantage.py). This
turns it into what an operator sees: a degraded health reason ``vantage`` (the LEDs'
``impaired`` state reads it), one log line when this node becomes impaired and one when
it recovers, the metrics, and the site alert: one webhook "site X cannot reach origins"
(``site-impaired``, then ``site-recovered``) instead of an alert per origin, sent by one
member that every node agrees on (NodeCore.alert_sender).

``poll`` is called at every surfaces refresh (whenever a delta, a verdict, an owner or a
member changes, and at least every minute); it only acts on changes, so calling it often
costs two dictionary comparisons.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.shell.metrics import Metrics

if TYPE_CHECKING:
    from agent.node import NodeCore

log = logging.getLogger(__name__)

Faults = dict[str, tuple[str, str]]
Send = Callable[[str, dict[str, Any]], None]  # (idempotency key, payload): webhooks.send


class VantageWatch:
    """See the module docstring."""

    def __init__(
        self,
        core: Callable[[], NodeCore],
        metrics: Metrics,
        *,
        send: Send,
        alerts: bool,
        wall: Callable[[], float],
        on_sites: Callable[[dict[str, list[str]]], None] | None = None,
    ) -> None:
        """``on_sites``: told the impaired sites whenever they change (Alertmanager's
        ``EdgeAgentSiteImpaired``, agent/shell/alert_rules.py)."""
        self.core = core
        self.on_sites = on_sites
        self.metrics = metrics
        self.send = send
        self.alerts = alerts
        self.wall = wall
        self.impaired = False
        self.sites: dict[str, list[str]] = {}  # impaired site -> its impaired members

    def poll(self) -> Faults:
        """Act on what changed since the last call; this node's vantage fault, if any."""
        core = self.core()
        impaired, tally = core.vantage()
        reason = core.vantage_reason()
        if impaired != self.impaired:
            self.impaired = impaired
            if impaired:
                self.metrics.vantage_impairments.inc()
                log.warning(
                    "this node cannot reach the origins: %s",
                    reason,
                    extra={"VANTAGE": "impaired", "SITE": core.site_name(core.name)},
                )
            else:
                log.info(
                    "this node reaches the origins again (%d of %d checked origins fail); "
                    "its checks count towards verdicts again",
                    tally.down,
                    tally.observed,
                    extra={"VANTAGE": "ok", "SITE": core.site_name(core.name)},
                )
        self.metrics.vantage_impaired.set(1 if impaired else 0)
        self.metrics.impaired_observers.set(len(core.verdicts.vantages.impaired))
        self.metrics.confirm_sites.set(core.verdicts.confirm)
        sites = core.impaired_sites()
        if sites != self.sites:
            self._sites_changed(core, sites)
            if self.on_sites is not None:
                self.on_sites(sites)
        self.metrics.impaired_sites.set(len(sites))
        return {"vantage": ("degraded", reason)} if impaired else {}

    def _sites_changed(self, core: NodeCore, sites: dict[str, list[str]]) -> None:
        before, self.sites = self.sites, sites
        at = self.wall()
        for site in sorted(sites.keys() - before.keys()):
            log.warning(
                "site %s cannot reach the origins (impaired: %s); its checks do not count "
                "towards verdicts until it sees again",
                site,
                ", ".join(sites[site]),
                extra={"SITE": site, "VANTAGE": "site-impaired"},
            )
            if self.alerts and core.alert_sender(site) == core.name:
                self._send("site-impaired", site, sites[site], at, core)
        for site in sorted(before.keys() - sites.keys()):
            log.info(
                "site %s reaches the origins again",
                site,
                extra={"SITE": site, "VANTAGE": "site-recovered"},
            )
            if self.alerts and core.alert_sender(site) == core.name:
                self._send("site-recovered", site, before[site], at, core)

    def _send(self, event: str, site: str, nodes: list[str], at: float, core: NodeCore) -> None:
        if event == "site-impaired":
            summary = f"site {site} cannot reach origins"
            reasons = {n: _tally_text(core, n) for n in nodes}
        else:
            summary = f"site {site} reaches origins again"
            reasons = {}
        payload: dict[str, Any] = {
            "event": event,
            "site": site,
            "nodes": nodes,
            "summary": summary,
            "reasons": reasons,
            "at": round(at, 3),
            "node": core.name,
        }
        self.send(f"site/{site}/{event}/{int(at * 1000)}", payload)


def _tally_text(core: NodeCore, name: str) -> str:
    _, t = core.vantage(name)
    return f"{t.down} of {t.observed} origins fail, {t.contradicted} of them seen up elsewhere"
