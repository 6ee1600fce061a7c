"""Lifeguard's local health awareness.

A node that is itself slow (SD-card stall, busy loop) misses acks and would
accuse healthy peers. Its health score rises with every sign of its own trouble
(missed nacks, having to refute a suspicion) and falls with every successful
probe; probe timeouts and intervals are multiplied by (score + 1), so a sick
node slows down instead of spreading false suspicion.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        self.max = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> bool:
        """Add delta, clamped to [0, max-1]; True when the score changed."""
        before = self.score
        self.score = min(max(self.score + delta, 0), self.max - 1)
        return self.score != before

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
