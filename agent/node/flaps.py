"""Flap damping: a member that keeps dying and coming back owns nothing for a while.

Every time a member becomes eligible or stops being eligible, placement moves the
origins it co-owns (with ``replicas = 2`` over 5 nodes, 40 % of the catalogue), and every
node recomputes those origins' owners and verdicts on its event loop: at 100,000 origins
about a second per change on the 2-core test machine. A node whose loop is that busy
misses its gossip, is suspected, declared dead and comes back: each round costs every
node two such passes, which make the next round likelier. The same holds for a Pi on
bad Wi-Fi.

So, as BGP damps a flapping route: a member declared dead ``FLAPS`` or more times within
``WINDOW`` seconds is *held* when it comes back: it stays out of placement (its origins
stay with the owners that took them over, which check them) for ``HOLD`` seconds,
doubling with each further death in the window, at most ``HOLD_MAX``. While it is held,
more deaths and returns change nothing for placement: they cost nothing. The first
death is never held, so a crash and restart, or a partition and its heal, rebalance at
once as before; a graceful leave is not a death.

Every node sees the same deaths (memberlist gossips them), so every node holds the same
member for about the same time: the owners they compute agree again within a gossip
round. The held node itself does not see itself die; it checks what it believes it
owns, and the others do not count those observations until the hold ends: over-checking
for the hold's length, never an origin without owners. Sans-I/O: the caller passes
``now``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["FLAPS", "HOLD", "HOLD_MAX", "WINDOW", "FlapDamping"]

WINDOW = 300.0
"""Seconds over which deaths are counted."""

FLAPS = 2
"""Deaths within WINDOW that make the member's next return held."""

HOLD = 30.0
"""Seconds the first held return waits; each further death in WINDOW doubles it."""

HOLD_MAX = 600.0
"""The longest hold."""


@dataclass(slots=True)
class _Member:
    up: bool  # eligible the last time we were told
    deaths: deque[float] = field(default_factory=deque)
    held_until: float = 0.0


class FlapDamping:
    """Which members are held out of placement; see the module docstring."""

    __slots__ = ("_members", "flaps", "hold", "hold_max", "holds", "window")

    def __init__(
        self,
        window: float = WINDOW,
        flaps: int = FLAPS,
        hold: float = HOLD,
        hold_max: float = HOLD_MAX,
    ) -> None:
        self.window = window
        self.flaps = flaps
        self.hold = hold
        self.hold_max = hold_max
        self.holds = 0  # returns held so far (a metric)
        self._members: dict[str, _Member] = {}

    def update(self, name: str, up: bool, dead: bool, now: float) -> float | None:
        """The member's eligibility as placement would see it now (``dead``: it is down
        because it was declared dead). Returns the end of a hold that starts now, else
        None."""
        m = self._members.get(name)
        if m is None:
            self._members[name] = _Member(up)
            return None
        was, m.up = m.up, up
        deaths = m.deaths
        while deaths and now - deaths[0] > self.window:
            deaths.popleft()
        if was and not up and dead:
            deaths.append(now)
        elif not was and up and len(deaths) >= self.flaps and not m.held_until:
            m.held_until = now + min(self.hold_max, self.hold * 2 ** (len(deaths) - self.flaps))
            self.holds += 1
            return m.held_until
        return None

    def held(self, name: str, now: float) -> bool:
        m = self._members.get(name)
        return m is not None and m.held_until > now

    def held_members(self) -> dict[str, float]:
        """Every member held (until ``expire`` ends its hold) -> when its hold ends."""
        return {n: m.held_until for n, m in self._members.items() if m.held_until}

    def next_expiry(self) -> float | None:
        """When the earliest hold ends (call ``expire`` then)."""
        return min((m.held_until for m in self._members.values() if m.held_until), default=None)

    def expire(self, now: float) -> bool:
        """End the holds due by ``now``; True if any did (placement must take them back)."""
        ended = False
        for m in self._members.values():
            if m.held_until and m.held_until <= now:
                m.held_until = 0.0
                ended = True
        return ended

    def forget(self, names: set[str]) -> None:
        """Members gone from the member list altogether."""
        for name in [n for n in self._members if n not in names]:
            del self._members[name]
