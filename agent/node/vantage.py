"""Impaired vantage points: observers whose checks fail together while other sites see
the same origins up.

When a site loses its path to the origins (its router, its ISP, its DNS), every check
made from there fails at once. Those "down" reports describe the site's network, not the
origins: the node is an *impaired vantage point*, and its observations must not count
towards verdicts until it sees again (docs/placement.md, "Impaired vantage points").

The rule (:func:`impaired`), over an observer's current observations:

- at least ``MIN_DOWN`` of them are down (one failing origin is that origin's problem),
- at least ``DOWN_SHARE`` (80 %) of them are down (a vantage fails across unrelated
  origins), and
- at least ``CONTRADICTED_SHARE`` (half) of those downs are *contradicted*: another site
  reports that origin up (an outage of the origins themselves is seen down from
  everywhere, so it never looks like an impaired vantage).

A report counts as contradicted by any other site's "up" the fleet still holds,
including the last one of a member that has since failed (until it is reaped,
``reap_after``): a site cut off from everything sees the other sites' last word, which
was "up", and knows its own "down" is not news.

Every node computes the same set from the same replicated observations (no node has to
say it is impaired: a node that cannot reach the origins may not reach the fleet
either). Incremental: each origin's contribution to its observers' tallies is kept, and
replaced when its observations change, so a change costs O(observers of that origin).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

MIN_DOWN = 2
DOWN_SHARE = 0.8
CONTRADICTED_SHARE = 0.5

#: per observer of an origin: (observer, down, contradicted), flattened in one tuple
Contribution = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class VantageTally:
    """One observer's current observations, counted."""

    observed: int = 0
    down: int = 0
    contradicted: int = 0  # of the downs, those another site reports up


def impaired(t: VantageTally) -> bool:
    """The rule (see the module docstring). Pure."""
    return _impaired(t.observed, t.down, t.contradicted)


def _impaired(observed: int, down: int, contradicted: int) -> bool:
    return (
        down >= MIN_DOWN
        and down >= DOWN_SHARE * observed
        and contradicted >= CONTRADICTED_SHARE * down
    )


def describe(t: VantageTally) -> str:
    """Why an observer is impaired, for a health reason, a log line and an alert."""
    return (
        f"{t.down} of the {t.observed} origins checked from here fail, and other sites see "
        f"{t.contradicted} of them up: this node's network path to the origins is the "
        "problem, so its checks do not count towards verdicts"
    )


def contribution(statuses: Mapping[str, str], site_of: Callable[[str], str]) -> Contribution:
    """One origin's part in its observers' tallies: ``statuses`` is observer -> "up" or
    "down"; ``site_of`` gives an observer's failure domain."""
    up_sites = {site_of(o) for o, s in statuses.items() if s == "up"}
    out: list[object] = []
    for observer, status in statuses.items():
        down = status == "down"
        contradicted = down and bool(up_sites - {site_of(observer)})
        out += (observer, down, contradicted)
    return tuple(out)


class Vantages:
    """Every observer's tally and which of them are impaired, kept as observations change."""

    def __init__(self, site_of: Callable[[str], str]) -> None:
        self.site_of = site_of
        self._contrib: dict[str, Contribution] = {}
        self._tally: dict[str, list[int]] = {}  # observer -> [observed, down, contradicted]
        self.impaired: frozenset[str] = frozenset()
        self._flipped: set[str] = set()  # observers whose state changed since take_flipped

    def update(self, origin: str, statuses: Mapping[str, str]) -> None:
        """``origin``'s observations are now ``statuses`` (observer -> "up"/"down")."""
        new = contribution(statuses, self.site_of) if statuses else ()
        old = self._contrib.get(origin, ())
        if new == old:
            return
        if new:
            self._contrib[origin] = new
        else:
            self._contrib.pop(origin, None)
        tallies = self._tally
        for sign, c in ((-1, old), (1, new)):
            for i in range(0, len(c), 3):
                t = tallies.get(c[i])  # type: ignore[call-overload]
                if t is None:
                    t = tallies[str(c[i])] = [0, 0, 0]
                t[0] += sign
                if c[i + 1]:
                    t[1] += sign
                    if c[i + 2]:
                        t[2] += sign
        for i in range(0, len(old), 3):
            self._judge(str(old[i]))
        for i in range(0, len(new), 3):
            self._judge(str(new[i]))

    def forget(self, origin: str) -> None:
        """``origin`` left the catalogue."""
        self.update(origin, {})

    def rebuild(self, statuses_of: Callable[[str], Mapping[str, str]]) -> None:
        """Everything again (an observer's site changed): O(origins)."""
        origins = list(self._contrib)
        self._contrib.clear()
        self._tally.clear()
        for origin in origins:
            self.update(origin, statuses_of(origin))
        for observer in self.impaired:
            self._judge(observer)

    def _judge(self, observer: str) -> None:
        t = self._tally.get(observer)
        if t is not None and t[0] <= 0:
            del self._tally[observer]
            t = None
        now = t is not None and _impaired(*t)
        if now != (observer in self.impaired):
            self.impaired = self.impaired | {observer} if now else self.impaired - {observer}
            self._flipped.symmetric_difference_update({observer})

    def tally(self, observer: str) -> VantageTally:
        t = self._tally.get(observer)
        return VantageTally(*t) if t is not None else VantageTally()

    def observes(self, observer: str) -> bool:
        """``observer`` has observations counted here."""
        return observer in self._tally

    def take_flipped(self) -> set[str]:
        """Observers that became impaired or recovered since the last call."""
        flipped, self._flipped = self._flipped, set()
        return flipped

    def observed_by(self, observers: Iterable[str]) -> set[str]:
        """The origins ``observers`` report on (a pass over every origin: only when the
        impaired set changes, which is rare)."""
        wanted = set(observers)
        return {origin for origin, c in self._contrib.items() if not wanted.isdisjoint(c[::3])}
