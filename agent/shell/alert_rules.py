"""What this node tells Alertmanager: which alerts fire, their labels, when to re-send.

Alertmanager identifies an alert by its label set and merges the copies several
clients send, the way it merges an HA pair of Prometheus servers. So the labels here
are the same on every node (``alertname``, ``origin`` or ``site``, ``severity``; never
the sending node, which goes in an annotation), and every owner of an origin sends, not
only the rank-1 one: across a partition each side sends the same alert and Alertmanager
notifies once; after the heal both sides resolve it and it notifies "resolved" once.

An origin's alert fires while the fleet verdict is ``down``. ``disputed`` or
``unknown`` (a partition side that cannot judge, a second owner catching up) neither
fires nor resolves: the alert is no longer re-sent and, if the verdict stays that way,
expires at the ``endsAt`` every firing copy carries (:data:`VALIDITY`, as Prometheus
does); ``down`` again re-sends it, with its first ``startsAt``. ``up`` resolves it at
once (``endsAt`` = now). A site that cannot reach the origins (agent/shell/vantage_watch.py)
is one alert, ``EdgeAgentSiteImpaired``, sent by every node that sees it.

Pure: the runtime feeds it verdict changes, site changes and the clock, and posts what
it returns (agent/shell/alertmanager.py).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.node import VerdictChange

__all__ = [
    "ORIGIN_DOWN",
    "RESEND_INTERVAL",
    "SITE_IMPAIRED",
    "VALIDITY",
    "Alert",
    "AlertQueue",
    "AlertRules",
    "rfc3339",
]

ORIGIN_DOWN = "EdgeAgentOriginDown"
SITE_IMPAIRED = "EdgeAgentSiteImpaired"
#: s between re-sends of a firing alert (Prometheus re-sends about every minute)
RESEND_INTERVAL = 60.0
#: a firing alert's ``endsAt`` is this far ahead: one that stops being re-sent (its
#: verdict became disputed or unknown, or the node died) resolves by itself after it,
#: before Alertmanager's own resolve_timeout (5 min); Prometheus uses 4 re-sends too
VALIDITY = 4 * RESEND_INTERVAL

Labels = tuple[tuple[str, str], ...]


def rfc3339(t: float) -> str:
    """Unix seconds as RFC 3339 in UTC, with milliseconds (what Alertmanager parses)."""
    whole = int(t)
    ms = round((t - whole) * 1000)
    if ms == 1000:
        whole, ms = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as POSTed to ``/api/v2/alerts``; ``labels`` is its identity."""

    labels: Labels
    annotations: Labels
    starts_at: float
    ends_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
        }


@dataclass(slots=True)
class _Firing:
    """An alert this node believes fires (or fired and is held while disputed)."""

    labels: Labels
    starts_at: float
    annotations: dict[str, str] = field(default_factory=dict)
    last_sent: float | None = None  # wall time of our last firing copy; None: never


class AlertRules:
    """See the module docstring. Times are unix seconds (Alertmanager speaks wall time)."""

    def __init__(
        self,
        node_name: str,
        *,
        cluster: str = "",
        resend: float = RESEND_INTERVAL,
        validity: float = VALIDITY,
    ) -> None:
        self.node_name = node_name
        self.cluster = cluster  # a label: two fleets sharing an Alertmanager stay apart
        self.resend = resend
        self.validity = validity
        self._origins: dict[str, _Firing] = {}  # origin -> its alert, while last seen down
        self._sites: dict[str, _Firing] = {}  # impaired site -> its alert

    # --- origins ---------------------------------------------------------------------------

    def on_verdict(self, change: VerdictChange, now: float) -> list[Alert]:
        """The fleet verdict on an origin changed: what to post now (maybe nothing)."""
        f = self._origins.get(change.origin)
        if change.new == "down":
            if f is None:
                labels = origin_labels(change.origin, self.cluster)
                f = self._origins[change.origin] = _Firing(labels, change.at)
            f.annotations = {
                "summary": f"origin {change.origin} is down",
                "description": change.reason,
                "owners": ", ".join(change.owners),
                "node": self.node_name,
            }
            if self.node_name in change.owners:
                return [self._firing(f, now)]
            return []
        if change.new == "up" and f is not None:
            del self._origins[change.origin]
            if self.node_name in change.owners or f.last_sent is not None:
                return [self._resolved(f, now, f"origin {change.origin} is up again")]
        return []  # disputed/unknown: held, not re-sent (it expires unless down again)

    def forget(self, origins: Iterable[str], now: float) -> list[Alert]:
        """Origins that left the catalogue: their alerts that we sent resolve now."""
        out = []
        for origin in origins:
            f = self._origins.pop(origin, None)
            if f is not None and f.last_sent is not None:
                out.append(self._resolved(f, now, f"origin {origin} was removed"))
        return out

    # --- sites -----------------------------------------------------------------------------

    def on_sites(self, sites: Mapping[str, list[str]], now: float) -> list[Alert]:
        """The impaired sites (site -> its impaired members) changed: fire the new ones,
        resolve the ones that see again."""
        out = []
        for site in sorted(sites.keys() - self._sites.keys()):
            f = self._sites[site] = _Firing(site_labels(site, self.cluster), now)
            f.annotations = {
                "summary": f"site {site} cannot reach origins",
                "description": "impaired members: " + ", ".join(sites[site]),
                "node": self.node_name,
            }
            out.append(self._firing(f, now))
        for site in sorted(self._sites.keys() - sites.keys()):
            f = self._sites.pop(site)
            out.append(self._resolved(f, now, f"site {site} reaches origins again"))
        return out

    # --- the clock -------------------------------------------------------------------------

    def due(
        self,
        now: float,
        verdict: Callable[[str], str],
        owners: Callable[[str], tuple[str, ...]],
    ) -> list[Alert]:
        """Firing alerts to re-send now: an origin still ``down`` that we own (also one
        we came to own since it went down: a new owner sends at once), and every
        impaired site, each once per ``resend``."""
        out = []
        for origin, f in self._origins.items():
            if f.last_sent is not None and now - f.last_sent < self.resend:
                continue
            if verdict(origin) == "down" and self.node_name in owners(origin):
                out.append(self._firing(f, now))
        for f in self._sites.values():
            if f.last_sent is None or now - f.last_sent >= self.resend:
                out.append(self._firing(f, now))
        return out

    def firing(self) -> int:
        """Alerts this node holds as firing (origins last seen down, impaired sites)."""
        return len(self._origins) + len(self._sites)

    def _firing(self, f: _Firing, now: float) -> Alert:
        f.last_sent = now
        return Alert(
            f.labels, tuple(sorted(f.annotations.items())), f.starts_at, now + self.validity
        )

    def _resolved(self, f: _Firing, now: float, summary: str) -> Alert:
        notes = {**f.annotations, "summary": summary, "node": self.node_name}
        notes.pop("description", None)
        # endsAt = now resolves it at once; never before its start (a clock step back)
        return Alert(f.labels, tuple(sorted(notes.items())), f.starts_at, max(now, f.starts_at))


def origin_labels(origin: str, cluster: str = "") -> Labels:
    """The labels of an origin's alert: the same on every node (no node label); the
    cluster's name too, when it has one, so two fleets' alerts for one origin id differ."""
    labels = [("alertname", ORIGIN_DOWN), ("origin", origin), ("severity", "critical")]
    return tuple(sorted([*labels, ("cluster", cluster)] if cluster else labels))


def site_labels(site: str, cluster: str = "") -> Labels:
    labels = [("alertname", SITE_IMPAIRED), ("severity", "warning"), ("site", site)]
    return tuple(sorted([*labels, ("cluster", cluster)] if cluster else labels))


class AlertQueue:
    """Alerts waiting to be posted to one Alertmanager, at most ``limit``: a newer copy
    of an alert (same labels) replaces the queued one, so a slow Alertmanager gets the
    latest state of each alert, not its history; past the limit the oldest is dropped."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._q: OrderedDict[Labels, Alert] = OrderedDict()

    def __len__(self) -> int:
        return len(self._q)

    def put(self, alert: Alert) -> int:
        """Queue ``alert``; returns how many were dropped to make room (0 or 1)."""
        self._q.pop(alert.labels, None)
        self._q[alert.labels] = alert
        dropped = 0
        while len(self._q) > self.limit:
            self._q.popitem(last=False)
            dropped += 1
        return dropped

    def take(self, n: int) -> list[Alert]:
        """The ``n`` oldest, removed from the queue."""
        out: list[Alert] = []
        while self._q and len(out) < n:
            out.append(self._q.popitem(last=False)[1])
        return out

    def put_back(self, alerts: Iterable[Alert]) -> int:
        """Alerts whose post failed, ahead of the rest, unless a newer copy was queued
        meanwhile; returns how many were dropped to make room."""
        dropped = 0
        for alert in reversed(list(alerts)):
            if alert.labels in self._q:
                continue
            if len(self._q) >= self.limit:
                dropped += 1
                continue
            self._q[alert.labels] = alert
            self._q.move_to_end(alert.labels, last=False)
        return dropped

    def clear(self) -> int:
        n = len(self._q)
        self._q.clear()
        return n
