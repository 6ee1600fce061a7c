"""Serf courtesy: the little a non-Serf member must do to look right in `serf members`.

Serf marks a member that vanishes from memberlist `failed`, and one that announced
its departure first `left`. The announcement is a Serf leave intent whose Lamport
time must be above what Serf last recorded for us, so we witness every Lamport
time we see in Serf traffic and stamp our intents above the highest.
"""

from __future__ import annotations

from agent.membership.errors import DecodeError
from agent.membership.serf_messages import (
    JoinIntent,
    LeaveIntent,
    SerfPushPull,
    decode_serf_message,
    encode_serf_message,
)


class SerfClock:
    def __init__(self) -> None:
        self.time = 0

    def witness(self, t: int) -> None:
        if t > self.time:
            self.time = t

    def observe(self, payload: bytes) -> None:
        """Witness a user message or push/pull user state; anything else is ignored."""
        try:
            msg = decode_serf_message(payload)
        except DecodeError:
            return
        if isinstance(msg, (JoinIntent, LeaveIntent)):
            self.witness(msg.ltime)
        elif isinstance(msg, SerfPushPull):
            self.witness(msg.ltime)
            for t in msg.status_ltimes.values():
                self.witness(t)

    def join_intent(self, node: str) -> bytes:
        self.time += 1
        return encode_serf_message(JoinIntent(self.time, node))

    def leave_intent(self, node: str) -> bytes:
        self.time += 1
        return encode_serf_message(LeaveIntent(self.time, node, False))
