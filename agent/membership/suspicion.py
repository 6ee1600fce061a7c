"""Lifeguard's dynamic suspicion timeout.

A suspected node is declared dead after a timeout that starts at `max` and
shrinks towards `min` as independent peers confirm the suspicion, on a log
scale: frac = log(n+1)/log(k+1). Few confirmations mean we might be the
problem, so we wait longer; many mean the node is really gone.
Sans-I/O: the caller passes `now` and re-arms its timer at `deadline`.
"""

from __future__ import annotations

import math


def remaining_suspicion_time(
    n: int, k: int, elapsed: float, min_timeout: float, max_timeout: float
) -> float:
    """Seconds left before the timeout, given n of k wanted confirmations (may be < 0)."""
    frac = math.log(n + 1.0) / math.log(k + 1.0) if k > 0 else 1.0
    raw = max_timeout - frac * (max_timeout - min_timeout)
    timeout = max(math.floor(1000.0 * raw) / 1000.0, min_timeout)
    return timeout - elapsed


class Suspicion:
    def __init__(
        self, from_node: str, k: int, min_timeout: float, max_timeout: float, now: float
    ) -> None:
        self.k = k
        self.n = 0
        self.min = min_timeout
        self.max = max_timeout
        self.start = now
        # the accuser cannot confirm its own accusation when it is gossiped back to it
        self.confirmations = {from_node}
        self.deadline = now + (max_timeout if k >= 1 else min_timeout)

    def confirm(self, from_node: str, now: float) -> bool:
        """Count an independent confirmation; True if it was new (then re-gossip it)."""
        if self.n >= self.k or from_node in self.confirmations:
            return False
        self.confirmations.add(from_node)
        self.n += 1
        remaining = remaining_suspicion_time(self.n, self.k, now - self.start, self.min, self.max)
        self.deadline = now + max(remaining, 0.0)
        return True
