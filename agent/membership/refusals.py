"""Peers refused for who they are, not for a damaged packet: kept for the operator.

A wrong gossip key, plaintext against an encrypted cluster (or the reverse), a memberlist
label, or protocol versions outside our range are configuration faults on some node,
not noise: Serf and memberlist log an error naming the peer. The packet layer and the
stream exchanges note each such refusal here with the peer's address; the endpoint turns
them into ``Rejected`` events (``peer`` set), and the shell logs them, rate-limited
(agent/shell/refusal_log.py). They are counted where they happen, as before.
"""

from __future__ import annotations

__all__ = ["PEER_REFUSALS", "Refusals"]

Address = tuple[str, int]

#: Rejection kinds that name a misconfigured or foreign peer (metric label values).
PEER_REFUSALS = frozenset(
    {"decrypt_failed", "not_encrypted", "encrypted_no_key", "label_unsupported", "incompatible"}
)


class Refusals:
    """Refusals noted since the last drain; bounded, as a flood must not grow memory
    (the counters still count every one)."""

    __slots__ = ("_limit", "_pending")

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._pending: list[tuple[str, str, Address]] = []

    def note(self, kind: str, detail: str, peer: Address) -> None:
        """Keep a refusal of ``peer`` if ``kind`` is one of PEER_REFUSALS."""
        if kind in PEER_REFUSALS and len(self._pending) < self._limit:
            self._pending.append((kind, detail, peer))

    def drain(self) -> list[tuple[str, str, Address]]:
        out, self._pending = self._pending, []
        return out
