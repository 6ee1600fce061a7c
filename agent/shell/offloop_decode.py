"""Large replication messages are decoded on a worker thread, not on the event loop.

A batch of 10,000 origins arrives as one delta of about 1.4 MB, and a node that catches
up after a long absence may get the whole state (14 MB at 100,000 origins); decoding
one validates every origin spec in it, about 100 µs each: one to ten seconds. On the
loop that would stall gossip long enough for peers to suspect this node, and the
watchdog. On a thread, the loop keeps its timing (it gets the interpreter at least
every switch interval, 5 ms) and the decoded message is handed to the node core as if
it had been decoded there. Deltas are CRDT joins, so arriving a little later than the
small messages behind them changes nothing but timing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agent.membership import Event, UserMessage
from agent.node import (
    ReplicationDecodeError,
    ReplicationMessage,
    decode_message,
    is_replication,
)

log = logging.getLogger(__name__)

THRESHOLD = 64 * 1024  # bytes: shorter messages decode in well under 10 ms, on the loop
MAX_WAITING = 16  # messages queued for the thread; past it, decode on the loop (as before)

Deliver = Callable[[Event, ReplicationMessage | ReplicationDecodeError], None]


class OffLoopDecoder:
    """Takes large replication messages (``offer``) and delivers them decoded, one at a
    time and in arrival order, from ``run`` (a supervised task)."""

    def __init__(self, deliver: Deliver, redundant: Callable[[bytes], bool] | None = None) -> None:
        self.deliver = deliver
        #: tells from a message's causal context alone that it holds nothing new (a copy
        #: of a batch already applied): such a copy is dropped here, never decoded
        self.redundant = redundant
        self.skipped = 0  # redundant copies dropped undecoded
        self.queue: asyncio.Queue[UserMessage] = asyncio.Queue(MAX_WAITING)
        self.decoded = 0  # messages decoded off the loop (for tests and metrics)

    def offer(self, ev: Event) -> bool:
        """True if ``ev`` was taken (decoded and delivered later); False: handle it now."""
        if not isinstance(ev, UserMessage) or len(ev.payload) < THRESHOLD:
            return False
        if not is_replication(ev.payload):
            return False
        if self.redundant is not None and self.redundant(ev.payload):
            self.skipped += 1
            return True
        try:
            self.queue.put_nowait(ev)
        except asyncio.QueueFull:
            return False
        return True

    async def run(self) -> None:
        while True:
            ev = await self.queue.get()
            try:
                msg: ReplicationMessage | ReplicationDecodeError = await asyncio.to_thread(
                    decode_message, ev.payload
                )
            except ReplicationDecodeError as e:
                msg = e
            self.decoded += 1
            self.deliver(ev, msg)
