"""The check engine's figures in /metrics: per-origin up, check-duration and TLS-expiry
gauges, probe counters and latency histograms.

Kept apart from the scheduling so the engine reads as a scheduler. Label children are
cached: a ``labels()`` lookup per probe would cost more than the probe's bookkeeping at
10,000 origins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from .state import ProbeResult, Status, Transition

# unknown has no series: a number for it (it was -1) would count in sum() and avg()
_UP_VALUE = {Status.UP: 1.0, Status.DOWN: 0.0}


class Series(Protocol):
    def set(self, value: float) -> None: ...


class PerOrigin(Protocol):
    """A gauge with an ``origin`` label (agent.shell.origin_gauge.OriginGauge)."""

    def labels(self, origin: str) -> Series: ...
    def remove(self, origin: str) -> None: ...


class Figures(Protocol):
    """The metric families the engine writes; the shell's registry (agent.shell.metrics.Metrics)
    owns them. A protocol, so the checks package does not depend on the shell."""

    checks: Counter
    check_latency: Histogram
    check_lag: Histogram
    checks_late: Counter
    checks_in_flight: Gauge
    transitions: Counter

    @property
    def origin_up(self) -> PerOrigin: ...
    @property
    def check_duration(self) -> PerOrigin: ...
    @property
    def tls_expiry(self) -> PerOrigin: ...


class OriginGauges:
    """The gauges of one origin (created on first use, removed with the origin)."""

    __slots__ = ("duration", "tls", "up")

    def __init__(self) -> None:
        self.up: Any = None
        self.duration: Any = None
        self.tls: Any = None


class CheckMetrics:
    """Writes the engine's figures into ``metrics`` (or nowhere, when it is None)."""

    def __init__(self, metrics: Figures | None) -> None:
        self.m = metrics
        self._checks: dict[tuple[str, bool], Any] = {}
        self._latency: dict[str, Any] = {}

    def in_flight(self, read: Callable[[], float]) -> None:
        """Read at scrape time: no per-check cost."""
        if self.m is not None:
            self.m.checks_in_flight.set_function(read)

    def lag(self, seconds: float) -> None:
        if self.m is not None:
            self.m.check_lag.observe(seconds)

    def late(self, kind: str) -> None:
        """A probe started more than one interval after it was due: a missed deadline."""
        if self.m is not None:
            self.m.checks_late.labels(kind).inc()

    def stalled(self, kind: str) -> None:
        """A result not recorded: this node's loop was stalled (engine.STALL_GRACE)."""
        if self.m is not None:
            self.m.checks.labels(kind, "stalled").inc()

    def status(self, origin_id: str, gauges: OriginGauges, status: Status) -> None:
        if self.m is None:
            return
        value = _UP_VALUE.get(status)
        if value is None:
            if gauges.up is not None:
                self.m.origin_up.remove(origin_id)
                gauges.up = None
            return
        if gauges.up is None:
            gauges.up = self.m.origin_up.labels(origin_id)
        gauges.up.set(value)

    def drop_tls(self, origin_id: str, gauges: OriginGauges) -> None:
        """The target changed: its certificate and last duration no longer apply."""
        if self.m is not None:
            if gauges.tls is not None:
                self.m.tls_expiry.remove(origin_id)
            if gauges.duration is not None:
                self.m.check_duration.remove(origin_id)
        gauges.tls = None
        gauges.duration = None

    def removed(self, origin_id: str, gauges: OriginGauges) -> None:
        if self.m is None:
            return
        if gauges.up is not None:
            self.m.origin_up.remove(origin_id)
            gauges.up = None
        self.drop_tls(origin_id, gauges)

    def result(
        self,
        origin_id: str,
        kind: str,
        gauges: OriginGauges,
        result: ProbeResult,
        transition: Transition | None,
    ) -> None:
        m = self.m
        if m is None:
            return
        key = (kind, result.ok)
        counter = self._checks.get(key)
        if counter is None:
            counter = self._checks[key] = m.checks.labels(kind, "ok" if result.ok else "fail")
        counter.inc()
        hist = self._latency.get(kind)
        if hist is None:
            hist = self._latency[kind] = m.check_latency.labels(kind)
        hist.observe(result.latency)
        if gauges.duration is None:
            gauges.duration = m.check_duration.labels(origin_id)
        # to the microsecond: shorter lines, and a value that repeats is not re-formatted
        gauges.duration.set(round(result.latency, 6))
        if result.tls_not_after is not None:
            if gauges.tls is None:
                gauges.tls = m.tls_expiry.labels(origin_id)
            gauges.tls.set(result.tls_not_after)
        if transition is not None:
            m.transitions.labels(transition.new.value).inc()
            self.status(origin_id, gauges, transition.new)
