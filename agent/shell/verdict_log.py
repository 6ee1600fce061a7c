"""Which fleet verdicts get a journal line of their own, and which are told as a count.

An origin's *first* verdict on this node (recovered from the store, replicated from a
peer, or from the first check round) is not a change: logging each one was a line per
origin at every restart (522 lines in 20 s at 1,003 origins), burying the transitions
that matter. First verdicts are counted instead and told in one summary line, once
every known origin has one or BATCH_WINDOW after the first of them, whichever comes
first. Every later change of an origin (up -> down, down -> up, -> disputed, -> unknown)
is logged on its own line, with the journal fields ORIGIN, VERDICT and WAS; so is the
first verdict of one of a few origins added after the start (an API PUT), as the
operator who added it wants to see it (docs/logging.md).

Pure: the runtime passes the time and the catalogue size, and logs what this returns.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.node import VerdictChange

BATCH_WINDOW = 10.0  # s: the longest a first verdict waits to be told in a summary
NAMES_SHOWN = 5  # origins named per verdict other than up, in a summary
SMALL_BATCH = 5  # after the start, this few first verdicts get a line each


class VerdictLog:
    """Decides, per verdict change, between a line of its own and the next summary."""

    def __init__(self, window: float = BATCH_WINDOW) -> None:
        self.window = window
        self.summaries = 0  # summary lines told so far (the first is the start-up one)
        self._known: set[str] = set()  # origins with a verdict told (alone or in a summary)
        self._batch: list[str] = []  # first verdicts not yet told, in arrival order
        self._since: float | None = None  # when the oldest of them arrived

    def on_change(self, change: VerdictChange, now: float) -> bool:
        """True: log ``change`` on its own line. False: a first verdict, kept for a summary."""
        if change.origin in self._known:
            return True
        self._known.add(change.origin)
        self._batch.append(change.origin)
        if self._since is None:
            self._since = now
        return False

    def forget(self, origin: str) -> None:
        """The origin left the catalogue: if it comes back, its verdict is a first again."""
        if origin in self._known:
            self._known.discard(origin)
            if origin in self._batch:
                self._batch.remove(origin)
                if not self._batch:
                    self._since = None

    def flush_at(self, catalogue: int) -> float | None:
        """When the pending summary is due: at once (its start time) when every one of
        the ``catalogue`` origins has had a verdict, else ``window`` after the oldest;
        None when nothing waits."""
        if self._since is None:
            return None
        if len(self._known) >= catalogue:
            return self._since
        return self._since + self.window

    def take(self, verdict: Callable[[str], str]) -> list[tuple[str, dict[str, str]]]:
        """The lines that tell the first verdicts waiting, with their journal fields, each
        counted by its verdict now (``verdict(origin)``); clears the batch. The first
        batch, and any later one of more than SMALL_BATCH origins (a peer's catalogue
        replicated), is one summary line; a few origins added later (an API PUT, a
        reload) get a line each, as a change would."""
        batch, self._batch, self._since = self._batch, [], None
        if not batch:
            return []
        first = self.summaries == 0
        if not first and len(batch) <= SMALL_BATCH:
            lines = []
            for origin in batch:
                v = verdict(origin)
                fields = {"ORIGIN": origin, "VERDICT": v, "WAS": "unknown"}
                lines.append((f"verdict: origin {origin} is {v} (first verdict)", fields))
            return lines
        self.summaries += 1
        by: dict[str, list[str]] = {"up": [], "down": []}
        for origin in batch:
            by.setdefault(verdict(origin), []).append(origin)
        parts = []
        for name, ids in by.items():
            text = f"{len(ids):,} {name}"
            if name != "up" and ids:
                ids.sort()
                shown = ", ".join(ids[:NAMES_SHOWN])
                text += f" ({shown}{', …' if len(ids) > NAMES_SHOWN else ''})"
            parts.append(text)
        counts = ", ".join(parts)
        if first:
            return [(f"verdicts at start: {counts}; from here each change is logged", {})]
        return [(f"verdicts first known for {len(batch):,} more origins: {counts}", {})]
