"""A gauge with one series per origin, kept as ready-made exposition lines.

prometheus_client formats every sample of every scrape anew: about 18 µs a sample, so
edge_agent_origin_up alone took 1.8 s of the event loop per scrape at 100,000 origins
(bench/reads.py). A per-origin value changes rarely (a transition, a new certificate)
and is scraped every 15 s, so each series' line is formatted when its value changes and
a scrape joins the lines: about 10 ms at 100,000. The joined family is kept too, until a
value changes: a family that changes rarely (up/down) costs a scrape nothing, so a family
that changes at every check (the last check's duration) can sit beside it.
"""

from __future__ import annotations

from prometheus_client.utils import floatToGoString


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class OriginGauge:
    """``name{origin="ID"} value`` for each origin that has a value. The calls the check
    engine makes on a prometheus_client Gauge (``labels(id).set(v)``, ``remove(id)``)
    work the same, so agent/checks/check_metrics.py writes either."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self._header = f"# HELP {name} {_escape_help(documentation)}\n# TYPE {name} gauge\n"
        self._values: dict[str, float] = {}
        self._lines: dict[str, str] = {}
        self._rendered: bytes | None = None  # the family as last written, until a change

    def labels(self, origin: str) -> OriginSeries:
        return OriginSeries(self, origin)

    def set(self, origin: str, value: float) -> None:
        value = float(value)
        if self._values.get(origin) == value and origin in self._lines:
            return
        self._values[origin] = value
        self._rendered = None
        label = _escape_label(origin)
        self._lines[origin] = f'{self.name}{{origin="{label}"}} {floatToGoString(value)}\n'

    def remove(self, origin: str) -> None:
        if self._values.pop(origin, None) is not None:
            self._rendered = None
        self._lines.pop(origin, None)

    def get(self, origin: str) -> float | None:
        """The origin's value, or None when it has no series."""
        return self._values.get(origin)

    def __len__(self) -> int:
        return len(self._values)

    def render(self) -> str:
        """The family in the Prometheus text format (0.0.4), as generate_latest writes it."""
        return self._header + "".join(self._lines.values())

    def render_bytes(self) -> bytes:
        """``render()`` encoded, kept until a value changes."""
        if self._rendered is None:
            self._rendered = self.render().encode()
        return self._rendered


class OriginSeries:
    """One origin's series of an OriginGauge (what ``Gauge.labels(id)`` returns)."""

    __slots__ = ("gauge", "origin")

    def __init__(self, gauge: OriginGauge, origin: str) -> None:
        self.gauge = gauge
        self.origin = origin

    def set(self, value: float) -> None:
        self.gauge.set(self.origin, value)
