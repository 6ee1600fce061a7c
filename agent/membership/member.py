"""One member of the cluster as this node sees it (memberlist's nodeState)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from agent.membership.messages import DEFAULT_VSN, NodeState, ip_from_wire


@dataclass(slots=True)
class Member:
    name: str
    addr: bytes  # raw IP as on the wire (4 or 16 bytes)
    port: int
    meta: bytes = b""
    vsn: bytes = DEFAULT_VSN
    incarnation: int = 0
    state: NodeState = NodeState.DEAD
    state_change: float = 0.0
    # held by several cores at once (the simulator's converged start, Membership.
    # adopt_members): a core copies the record before it changes it
    shared: bool = field(default=False, compare=False, repr=False)

    @property
    def host(self) -> str:
        return host_of(self.addr)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def pmax(self) -> int:
        return self.vsn[1] if len(self.vsn) > 1 else 0

    @property
    def dead_or_left(self) -> bool:
        return self.state in (NodeState.DEAD, NodeState.LEFT)

    @property
    def state_name(self) -> str:
        return _STATE_NAMES[self.state]


@lru_cache(maxsize=16384)
def host_of(raw: bytes) -> str:
    """Wire IP bytes -> text ("" when unusable); cached: it runs for every packet sent
    (16,384 entries: every member of a 10,000-node cluster, a few MiB at most)."""
    ip = ip_from_wire(raw)
    return str(ip) if ip is not None else ""


_STATE_NAMES = {
    NodeState.ALIVE: "alive",
    NodeState.SUSPECT: "suspect",
    NodeState.DEAD: "dead",
    NodeState.LEFT: "left",
}
