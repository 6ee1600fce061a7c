"""What to tell the operator about a refused peer, and how often.

A node with the wrong gossip key retries for ever, and every retry is refused: one line
per refusal would flood the journal, none (as before issue 16) hides the fault behind a
counter. So a refusal is logged the first time for its (peer host, cause), then at most
once per ``interval`` with the count of refusals not logged in between. The key is the
host, not host:port: a peer's TCP connections come from a new port each time. Pure: the
caller passes ``now`` (monotonic seconds) and logs the line it gets back.
"""

from __future__ import annotations

__all__ = ["ADVICE", "INTERVAL", "RefusalLog"]

Address = tuple[str, int]

INTERVAL = 600.0
"""Seconds between two lines for the same peer and cause (10 minutes)."""

#: cause -> (what happened, what to do), by membership/refusals.py PEER_REFUSALS kind
ADVICE: dict[str, tuple[str, str]] = {
    "decrypt_failed": (
        "no key in our keyring decrypts it",
        "wrong gossip key (or none)? check [cluster] keyring_file here and the key that node uses",
    ),
    "not_encrypted": (
        "it is not encrypted and this cluster is",
        "give that node the cluster's gossip key (serf: -encrypt / keyring_file)",
    ),
    "encrypted_no_key": (
        "it is encrypted and this node has no gossip key",
        "set [cluster] keyring_file to the cluster's keyring here",
    ),
    "label_unsupported": (
        "it carries a memberlist label, which memberlist 0.2.2 does not know",
        "remove the label setting on that node",
    ),
    "incompatible": (
        "its protocol versions do not fit ours",
        "upgrade or downgrade that node to a compatible memberlist/serf version",
    ),
}


class RefusalLog:
    """Rate limit per (host, cause); ``line`` says what to log now, or None."""

    __slots__ = ("_interval", "_limit", "_seen")

    def __init__(self, interval: float = INTERVAL, limit: int = 1024) -> None:
        self._interval = interval
        self._limit = limit  # keys kept at most (hosts x causes): a flood cannot grow it
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (logged at, suppressed)

    def line(self, kind: str, detail: str, peer: Address, now: float) -> str | None:
        """The WARNING line for this refusal, or None when one was logged too recently."""
        key = (peer[0], kind)
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._interval:
            self._seen[key] = (seen[0], seen[1] + 1)
            return None
        if seen is None and len(self._seen) >= self._limit:
            self._prune(now)
            if len(self._seen) >= self._limit:
                return None  # still full of recent keys: counted in /metrics all the same
        self._seen[key] = (now, 0)
        what, todo = ADVICE.get(kind, ("refused", "see docs/troubleshooting.md"))
        text = f"refused gossip from {peer[0]}:{peer[1]} ({kind}): {what}"
        if detail:
            text += f" [{detail}]"
        text += f"; {todo}"
        if seen is not None and seen[1]:
            text += f" ({seen[1]} more from {peer[0]} since the last such line)"
        return text

    def _prune(self, now: float) -> None:
        self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._interval}
