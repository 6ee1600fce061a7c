"""The fleet's verdict on each origin, as this node computes it, and its transitions.

A verdict is :func:`judge` over the origin's current owners' reports (placement); while
no owner has reported yet (just after ownership moved), the live former owners that
still drain it stand in, so a handoff does not blink the fleet's answer to "unknown".
Reports from impaired vantage points (agent/node/vantage.py) do not count, and "down"
needs owners in ``confirm`` distinct sites (docs/placement.md, "Verdicts across
sites"). Pure: the node core tells it which origins to look at again, with the wall time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.node.placement import Placement
from agent.node.state import State
from agent.node.vantage import Vantages

TRANSITIONS_KEPT = 200


@dataclass(frozen=True, slots=True)
class VerdictChange:
    """A fleet verdict transition of one origin, as this node computed it."""

    origin: str
    old: str
    new: str
    at: float  # unix seconds
    reason: str
    owners: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "from": self.old,
            "to": self.new,
            "at": round(self.at, 3),
            "reason": self.reason,
            "owners": list(self.owners),
        }


def judge(
    reports: Sequence[tuple[str, str]],
    site_of: Callable[[str], str],
    impaired: Collection[str],
    confirm: int,
) -> str:
    """The verdict from ``reports`` ((observer, "up" | "down") of the origin's owners that
    have reported). Pure.

    Reports of ``impaired`` observers are left out. Any "up" with any "down" is
    "disputed"; "up" alone is "up"; "down" alone is "down" only when it comes from at least
    ``confirm`` distinct sites, less one for each site whose owners are impaired (an owner
    that cannot see is no reason to wait), and never fewer than one site. A "down" from
    too few sites is "disputed": the evidence is not enough either way. Nothing left:
    "unknown".
    """
    up: set[str] = set()
    down: set[str] = set()
    blind: set[str] = set()
    for observer, status in reports:
        site = site_of(observer)
        if observer in impaired:
            blind.add(site)
        elif status == "up":
            up.add(site)
        else:
            down.add(site)
    if up:
        return "disputed" if down else "up"
    if not down:
        return "unknown"
    needed = max(1, confirm - len(blind - down))
    return "down" if len(down) >= needed else "disputed"


class Verdicts:
    """The last verdict of every placed origin (kept incrementally, for O(1) counts)."""

    def __init__(
        self, state: State, placement: Placement, site_of: Callable[[str], str] = str
    ) -> None:
        """``site_of``: an observer's failure domain (its own name when it has no site)."""
        self.state = state
        self.placement = placement
        self.site_of = site_of
        self.vantages = Vantages(site_of)
        self.confirm = 1  # sites whose owners must agree on "down" (NodeCore sets it)
        self.current: dict[str, str] = {}
        # current's values counted, so the fleet's counts cost O(1), not a pass over
        # 100,000 origins at every LED and STATUS refresh
        self._tally = {"up": 0, "down": 0, "disputed": 0, "unknown": 0}
        self.transitions: deque[VerdictChange] = deque(maxlen=TRANSITIONS_KEPT)

    def verdict(self, origin_id: str, alive: Collection[str]) -> str:
        if origin_id not in self.placement.origins:
            return "unknown"
        return self._judge(origin_id, self.placement.owners(origin_id), alive)

    def _judge(self, origin_id: str, owners: tuple[str, ...], alive: Collection[str]) -> str:
        state, impaired = self.state, self.vantages.impaired
        reports = []
        for owner in owners:
            obs = state.observation(origin_id, owner)
            if obs is not None:
                reports.append((owner, obs.status))
        verdict = judge(reports, self.site_of, impaired, self.confirm)
        if verdict == "unknown":
            others = [
                (o, obs.status)
                for o, obs in state.observations(origin_id).items()
                if o in alive and o not in owners
            ]
            if others:
                verdict = judge(others, self.site_of, impaired, self.confirm)
        return verdict

    def statuses(self, origin_id: str) -> dict[str, str]:
        """observer -> "up"/"down", every observation the fleet holds of ``origin_id``."""
        return {o: obs.status for o, obs in self.state.observations(origin_id).items()}

    def observed(self, ids: Iterable[str]) -> None:
        """The observations of ``ids`` changed: the vantage tallies follow. Verdicts that
        an observer's new impairment changes are judged at the next ``recompute``."""
        vantages, placed = self.vantages, self.placement.origins
        for origin in ids:
            if origin in placed:
                vantages.update(origin, self.statuses(origin))
            else:
                vantages.forget(origin)

    def forget(self, origin_id: str) -> None:
        self.vantages.forget(origin_id)
        old = self.current.pop(origin_id, None)
        if old is not None:
            self._tally[old] -= 1

    def recompute(
        self,
        ids: Iterable[str],
        alive: Collection[str],
        wall: float,
        reason: str = "",
        *,
        observed: bool = True,
    ) -> list[VerdictChange]:
        """Judge ``ids`` again, and every origin whose verdict an observer's changed
        impairment may change; the changes (also kept in ``transitions``). ``observed``:
        the observations of ``ids`` may have changed (False when only owners moved: a
        member change at 40,000 origins need not recount them)."""
        ids = set(ids)
        if observed:
            self.observed(ids)
        flipped = self.vantages.take_flipped()
        if flipped:
            ids |= self.vantages.observed_by(flipped)
            reason = ""  # the transition's reason is not the check's that triggered it
        changes = []
        for origin in sorted(ids) if flipped else ids:
            if origin not in self.placement.origins:
                continue
            owners = self.placement.owners(origin)
            new = self._judge(origin, owners, alive)
            old = self.current.get(origin, "unknown")
            if new == old:
                continue
            if origin in self.current:
                self._tally[old] -= 1
            self._tally[new] += 1
            self.current[origin] = new
            why = reason or self._why(origin, owners, new)
            change = VerdictChange(origin, old, new, wall, why, owners)
            self.transitions.append(change)
            changes.append(change)
        return changes

    def reason(self, origin_id: str, verdict: str, alive: Collection[str]) -> str:
        """Why ``origin_id`` has ``verdict`` now, for a load balancer: the owners' reasons
        ("pi-a: HTTP 503"; for "disputed", each owner's status too), else (the verdict
        came from the former owners still draining it) theirs."""
        if origin_id not in self.placement.origins:
            return ""
        owners = self.placement.owners(origin_id)
        others = tuple(o for o in sorted(self.state.observations(origin_id)) if o in alive)
        for observers in (owners, others):
            why = self._why(origin_id, observers, verdict, short=True)
            if why:
                return why
        return ""

    def _why(
        self, origin: str, observers: Iterable[str], verdict: str, *, short: bool = False
    ) -> str:
        """The observers' reports behind ``verdict``; an impaired observer's is marked as
        not counted, and a "disputed" that is a "down" from too few sites says so."""
        reasons, impaired, sites = [], self.vantages.impaired, set()
        ups = False
        for observer in observers:
            obs = self.state.observation(origin, observer)
            if obs is None:
                continue
            if observer in impaired:
                if verdict != "up":
                    reasons.append(f"{observer}: {obs.status} (impaired vantage, not counted)")
                continue
            ups |= obs.status == "up"
            sites.add(self.site_of(observer))
            if verdict == "disputed" or (obs.status == verdict and not short):
                reasons.append(f"{observer}: {obs.status} ({obs.reason})")
            elif obs.status == verdict:
                reasons.append(f"{observer}: {obs.reason or obs.status}")
        if verdict == "disputed" and not ups and reasons:
            reasons.insert(
                0,
                f"down from {len(sites)} site(s), not confirmed "
                f"({self.confirm} sites must agree: confirm_sites)",
            )
        return "; ".join(reasons)

    def fleet_counts(self, placed: int) -> dict[str, int]:
        """Every placed origin by verdict, given how many are placed: those never judged
        are unknown. Holds because ``current`` only has placed origins (``forget``)."""
        c = dict(self._tally)
        c["unknown"] += placed - len(self.current)
        return c

    def counts(self, origins: Iterable[str]) -> dict[str, int]:
        """``origins`` by verdict."""
        c = {"up": 0, "down": 0, "disputed": 0, "unknown": 0}
        for origin in origins:
            c[self.current.get(origin, "unknown")] += 1
        return c
