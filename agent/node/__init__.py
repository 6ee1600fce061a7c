"""The sans-I/O node core: placement, handoff, the replicated state and replication."""

from agent.node.catalogue import CatalogueDiff
from agent.node.core import IDLE_TICK, Conflict, NodeCore
from agent.node.handoff import Handoff
from agent.node.placement import Placement
from agent.node.replication import Gossip, Output, Replicator
from agent.node.state import Delta, State, decode_delta, encode_delta
from agent.node.verdicts import VerdictChange

__all__ = [
    "IDLE_TICK",
    "CatalogueDiff",
    "Conflict",
    "Delta",
    "Gossip",
    "Handoff",
    "NodeCore",
    "Output",
    "Placement",
    "Replicator",
    "State",
    "VerdictChange",
    "decode_delta",
    "encode_delta",
]
