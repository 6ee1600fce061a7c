"""The fleet's verdict on each origin, as this node computes it, and its transitions.

A verdict is ``State.verdict`` over the origin's current owners (placement); while no
owner has reported yet (just after ownership moved), the live former owners that still
drain it stand in, so a handoff does not blink the fleet's answer to "unknown". Pure:
the node core tells it which origins to look at again, with the wall time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from agent.node.placement import Placement
from agent.node.state import State

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


class Verdicts:
    """The last verdict of every placed origin (kept incrementally, for O(1) counts)."""

    def __init__(self, state: State, placement: Placement) -> None:
        self.state = state
        self.placement = placement
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
        verdict = self.state.verdict(origin_id, owners)
        if verdict == "unknown":
            others = [
                o for o in self.state.observations(origin_id) if o in alive and o not in owners
            ]
            if others:
                verdict = self.state.verdict(origin_id, others)
        return verdict

    def forget(self, origin_id: str) -> None:
        old = self.current.pop(origin_id, None)
        if old is not None:
            self._tally[old] -= 1

    def recompute(
        self, ids: Iterable[str], alive: Collection[str], wall: float, reason: str = ""
    ) -> list[VerdictChange]:
        """Judge ``ids`` again; the changes (also kept in ``transitions``)."""
        changes = []
        for origin in ids:
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
        for observers in (
            owners,
            tuple(o for o in sorted(self.state.observations(origin_id)) if o in alive),
        ):
            reasons = []
            for observer in observers:
                obs = self.state.observation(origin_id, observer)
                if obs is None:
                    continue
                if verdict == "disputed":
                    reasons.append(f"{observer}: {obs.status} ({obs.reason})")
                elif obs.status == verdict:
                    reasons.append(f"{observer}: {obs.reason or obs.status}")
            if reasons:
                return "; ".join(reasons)
        return ""

    def _why(self, origin: str, owners: tuple[str, ...], verdict: str) -> str:
        reasons = []
        for owner in owners:
            obs = self.state.observation(origin, owner)
            if obs is not None and (verdict == "disputed" or obs.status == verdict):
                reasons.append(f"{owner}: {obs.status} ({obs.reason})")
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
