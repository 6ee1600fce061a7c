"""The webhook alert policy: which verdict changes are news, and which node tells.

Every node computes the same verdicts from the same replicated observations, so every
node sees every transition; if each fired, a fleet of 50 would page someone 50 times.
Webhooks fire on *settled* changes between ``up`` and ``down``: a brief ``disputed``
while the second owner catches up is not a transition of its own, and the first verdict
after start is a baseline, not news. Every node keeps the baseline (so that a node that
becomes rank-1 owner later knows what was last said); only the rank-1 owner sends.

Pure: it decides, and hands the payload to ``send`` (agent/shell/webhooks.py delivers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agent.shell.coordinator import VerdictChange

Send = Callable[[str, dict[str, Any]], None]  # (idempotency key, payload)


class AlertPolicy:
    """Decides which verdict changes become webhook events; see the module docstring."""

    def __init__(self, node_name: str, send: Send, *, enabled: bool) -> None:
        self.node_name = node_name
        self.send = send
        self.enabled = enabled
        self._last: dict[str, str] = {}  # origin -> last settled verdict (up/down)

    def on_verdict(self, change: VerdictChange, record: dict[str, Any]) -> bool:
        """Record the change; send it if it is news and we rank first. True if sent."""
        if change.new not in ("up", "down"):
            return False
        before = self._last.get(change.origin)
        self._last[change.origin] = change.new
        if before is None or before == change.new or not self.enabled:
            return False
        if (change.owners[0] if change.owners else None) != self.node_name:
            return False
        key = f"{change.origin}/{change.new}/{int(change.at * 1000)}"
        self.send(key, {**record, "from": before, "node": self.node_name})
        return True

    def forget(self, origins: Iterable[str]) -> None:
        """Origins that left the catalogue: a later origin of the same id starts afresh."""
        for origin in origins:
            self._last.pop(origin, None)
