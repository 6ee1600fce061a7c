"""The fleet write token: one bearer token that every node checks the same way.

A write that changes fleet-wide state (an origin declared or removed) is accepted by one
node and then spreads to all of them, so its authority is the node that took it. If one
node asked for no token, or for a different one, it would unprotect the whole fleet. So:

- a node without ``[api] token_file`` refuses fleet-wide writes (agent/shell/api/app.py);
- each node advertises a *fingerprint* of its token in its gossip tags (``wt``), and a
  node takes fleet-wide writes only while its token is the one most of the fleet holds:
  a node set up with another token (a typo, a half-finished rotation) refuses them and
  says which peers disagree, instead of being the fleet's weak door.

The fingerprint is an HMAC of a fixed label keyed by the token: it tells tokens apart
without revealing them, but, like any hash, it lets someone who can read gossip test
guesses offline. Gossip is encrypted when a keyring is set, and tokens should be long
random strings (``openssl rand -hex 32``); docs/api.md says so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

#: the gossip tag that carries a node's token fingerprint
TAG = "wt"

_LABEL = b"edge-agent fleet write token v1"


def fingerprint(token: str) -> str:
    """Eight characters that are equal for equal tokens and tell different ones apart."""
    digest = hmac.new(token.encode(), _LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:6]).decode()


@dataclass(frozen=True)
class Agreement:
    """How this node's token compares with its live peers' (those that advertise one)."""

    mine: str
    differing: tuple[str, ...]  # peers whose token differs from ours, by name
    same: int  # nodes holding our token, ourselves included
    holders: int  # nodes with a token, ourselves included

    @property
    def may_write(self) -> bool:
        """Ours is the token a strict majority of token-holding nodes share."""
        return 2 * self.same > self.holders

    def reason(self) -> str | None:
        """A sentence for /v1/health and the journal, or None when all agree."""
        if not self.differing:
            return None
        names = ", ".join(self.differing[:5]) + (" …" if len(self.differing) > 5 else "")
        verdict = (
            "this node still takes fleet-wide writes (most nodes share its token)"
            if self.may_write
            else "fleet-wide writes are refused on this node until it matches"
        )
        return (
            f"the fleet write token ([api] token_file) differs on {len(self.differing)} of "
            f"{self.holders - 1} peers ({names}); {verdict}"
        )


def agreement(mine: str, peers: Mapping[str, str]) -> Agreement:
    """Compare our fingerprint with ``peers`` ({name: fingerprint}, live peers that
    advertise one; a peer without a token or of an older version advertises none)."""
    counts = Counter(peers.values())
    differing = tuple(sorted(name for name, fp in peers.items() if fp != mine))
    return Agreement(mine, differing, counts[mine] + 1, len(peers) + 1)
