"""memberlist's TransmitLimitedQueue: what to piggyback on the next packets.

Each broadcast is sent retransmit_limit(n) times in total. Fresh messages go
first (fewest transmits), bigger ones first among equals so packets fill well,
and a new message about a node invalidates any older one about it (an `alive`
with a higher incarnation makes a queued `suspect` pointless).

Two limits memberlist leaves to its user, kept here so no caller can forget them:
a message longer than ``max_message()`` (what one otherwise empty packet carries) is
dropped when queued, since it would wait forever; and past ``max_depth`` the most-sent
messages are pruned, as Serf's checkQueueDepth does with Prune(MaxQueueDepth). Both
are counted; push/pull repairs what was dropped.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.membership.settings import retransmit_limit

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Broadcast:
    """One queued message. `name` (a node name, or a topic) makes it invalidate older ones."""

    message: bytes
    name: str | None = None
    on_finished: Callable[[], None] | None = None
    # never piggyback this on a packet to that node (a delta is not sent back to its source)
    exclude: str | None = None
    transmits: int = 0
    sends: int = 0  # times it went out in a packet (transmits resets when re-queued)
    id: int = 0
    key: tuple[int, int, int] = field(default=(0, 0, 0))

    def finished(self) -> None:
        if self.on_finished is not None:
            cb, self.on_finished = self.on_finished, None
            cb()


class BroadcastQueue:
    def __init__(
        self,
        retransmit_mult: int,
        num_nodes: Callable[[], int],
        *,
        max_message: Callable[[], int] | None = None,
        max_depth: int | None = None,
        label: str = "broadcast",
    ) -> None:
        self.retransmit_mult = retransmit_mult
        self.num_nodes = num_nodes
        self.max_message = max_message
        self.max_depth = max_depth
        self.label = label  # what the log calls these messages
        self.oversized = 0  # dropped when queued: no packet can carry them
        self.pruned = 0  # dropped beyond max_depth
        self._overflowing = False  # warned about pruning since the queue was last short
        self._items: list[tuple[tuple[int, int, int], Broadcast]] = []  # sorted by key
        self._by_name: dict[str, Broadcast] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _key(b: Broadcast) -> tuple[int, int, int]:
        # fewest transmits first, then longest message, then newest
        return (b.transmits, -len(b.message), -b.id)

    def _insert(self, b: Broadcast) -> None:
        b.key = self._key(b)
        bisect.insort(self._items, (b.key, b), key=lambda item: item[0])
        if b.name is not None:
            self._by_name[b.name] = b

    def _remove(self, b: Broadcast) -> None:
        i = bisect.bisect_left(self._items, b.key, key=lambda item: item[0])
        while i < len(self._items) and self._items[i][1] is not b:
            i += 1
        if i < len(self._items):
            del self._items[i]
        if b.name is not None and self._by_name.get(b.name) is b:
            del self._by_name[b.name]

    def queue(self, b: Broadcast) -> bool:
        """Add a broadcast; an older one with the same name is dropped (and finished).

        False (and ``b`` finished) when no packet can carry it: the caller must send it
        another way or rely on push/pull. The older one is dropped all the same, as it
        would be had the new one been sent: it is stale news.
        """
        if b.name is not None:
            old = self._by_name.get(b.name)
            if old is not None:
                old.finished()
                self._remove(old)
        if self.max_message is not None and len(b.message) > (limit := self.max_message()):
            self.oversized += 1
            log.warning(
                "%s of %d bytes dropped: a gossip packet carries at most %d "
                "(udp_buffer_size too small?); push/pull will carry it",
                self.label,
                len(b.message),
                limit,
            )
            b.finished()
            return False
        b.id = next(self._ids)
        b.transmits = 0
        self._insert(b)
        if self.max_depth is not None and len(self._items) > self.max_depth:
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "%s queue is over %d messages: dropping the most-sent ones "
                    "(push/pull repairs what they carried)",
                    self.label,
                    self.max_depth,
                )
            self.prune(self.max_depth)
        elif self._overflowing and len(self._items) <= (self.max_depth or 0) // 2:
            self._overflowing = False
        return True

    def get(self, overhead: int, limit: int, target: str | None = None) -> list[bytes]:
        """Messages to piggyback within `limit` bytes, each costing len + overhead.

        `target` is the node the packet goes to, when known: broadcasts that exclude it
        are skipped (and not counted as sent).
        """
        if not self._items:
            return []
        transmit_limit = retransmit_limit(self.retransmit_mult, self.num_nodes())
        used = 0
        out: list[bytes] = []
        sent: list[Broadcast] = []
        for _, b in self._items:  # not mutated until the loop is over
            free = limit - used - overhead
            if free <= 0:
                break
            if len(b.message) > free or (b.exclude is not None and b.exclude == target):
                continue
            used += overhead + len(b.message)
            out.append(b.message)
            sent.append(b)
        for b in sent:
            b.sends += 1
            self._remove(b)
            if b.transmits + 1 >= transmit_limit:
                b.finished()
            else:
                b.transmits += 1
                self._insert(b)
        return out

    def prune(self, max_retain: int) -> None:
        """Drop the most-transmitted broadcasts beyond max_retain (memberlist's Prune:
        from the back of the send order, so the freshest survive)."""
        while len(self._items) > max_retain:
            _, b = self._items[-1]
            b.finished()
            self._remove(b)
            self.pruned += 1

    def reset(self) -> None:
        for _, b in self._items:
            b.finished()
        self._items.clear()
        self._by_name.clear()
