"""The sans-I/O node core: placement, handoff, the replicated state and replication."""

from agent.node.catalogue import CatalogueDiff
from agent.node.core import IDLE_TICK, Conflict, NodeCore
from agent.node.handoff import Handoff
from agent.node.placement import Placement
from agent.node.replication import (
    Gossip,
    Output,
    ReplicationDecodeError,
    ReplicationMessage,
    Replicator,
    decode_message,
    is_replication,
)
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
    "ReplicationDecodeError",
    "ReplicationMessage",
    "Replicator",
    "State",
    "VerdictChange",
    "decode_delta",
    "decode_message",
    "encode_delta",
    "is_replication",
]
