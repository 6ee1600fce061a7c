"""Proof that a member is an edge-agent: heard speaking our replication protocol.

A ``role=edge-agent`` tag proves nothing: a stock Serf agent started with ``-tag
role=edge-agent``, or a memberlist node whose meta is the bare string ``edge-agent``,
claims it, and placement would hand it origins it never checks. So a member owns origins
only once it has *spoken* to us in the agent's own protocol (docs/placement.md,
"Eligibility"): a replication message or a push/pull digest sent under its name.

To make that quick, we ask: a member that claims to be an edge-agent (role and version
tags) and has not yet proven it gets a hello that asks for an answer; an edge-agent
answers at once, a foreign node cannot. Asks are repeated with a backoff while it stays
unproven (a lost datagram, an agent still starting), so a foreign node that claims the
role is asked rarely. Proof lasts while the member lives: it is forgotten only when the
member is dead or has left, so ownership does not flap; a restarted agent re-proves in
one round trip. Sans-I/O: the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["FIRST_ASK_RETRY", "MAX_ASK_RETRY", "Proof"]

FIRST_ASK_RETRY = 2.0
"""Seconds before a member that did not answer our first hello is asked again."""

MAX_ASK_RETRY = 300.0
"""The backoff's ceiling: a foreign node that claims the role is asked this rarely."""


class Proof:
    """Who has proven to be an edge-agent, and whom to ask next."""

    __slots__ = ("_asks", "_first", "_max", "proven")

    def __init__(self, first_retry: float = FIRST_ASK_RETRY, max_retry: float = MAX_ASK_RETRY):
        self._first = first_retry
        self._max = max_retry
        self.proven: set[str] = set()
        self._asks: dict[str, tuple[float, float]] = {}  # name -> (next ask at, backoff)

    def heard(self, name: str) -> bool:
        """``name`` spoke our protocol; True when that is news (placement must change)."""
        self._asks.pop(name, None)
        if name in self.proven:
            return False
        self.proven.add(name)
        return True

    def forget(self, name: str) -> None:
        """The member is dead or left: when it comes back, it proves itself again."""
        self.proven.discard(name)
        self._asks.pop(name, None)

    def next_ask(self) -> float | None:
        """When the earliest repeated ask falls due (None: nobody waits for one)."""
        return min((at for at, _ in self._asks.values()), default=None)

    def asks_due(self, candidates: Iterable[str], now: float) -> list[str]:
        """The unproven candidates to send a hello asking for an answer now (each one
        then waits a doubling interval); candidates no longer listed are dropped."""
        want = set(candidates) - self.proven
        for name in [n for n in self._asks if n not in want]:
            del self._asks[name]
        due = []
        for name in sorted(want):
            at, backoff = self._asks.get(name, (now, 0.0))
            if now >= at:
                backoff = min(self._max, backoff * 2) if backoff else self._first
                self._asks[name] = (now + backoff, backoff)
                due.append(name)
        return due
