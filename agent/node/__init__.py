"""The sans-I/O node core: placement, handoff, the replicated state and replication."""

from agent.node.catalogue import CatalogueDiff
from agent.node.core import IDLE_TICK, Conflict, NodeCore
from agent.node.handoff import Handoff
from agent.node.lb_answer import (
    MAX_REQUEST,
    AgentReply,
    LbAnswer,
    LbStatus,
    agent_reply,
    lb_answer_for,
    sanitise,
)
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
from agent.node.state import UNKNOWN_SPEC_KEYS, Delta, State, decode_delta, encode_delta
from agent.node.verdicts import VerdictChange

__all__ = [
    "IDLE_TICK",
    "MAX_REQUEST",
    "UNKNOWN_SPEC_KEYS",
    "AgentReply",
    "CatalogueDiff",
    "Conflict",
    "Delta",
    "Gossip",
    "Handoff",
    "LbAnswer",
    "LbStatus",
    "NodeCore",
    "Output",
    "Placement",
    "ReplicationDecodeError",
    "ReplicationMessage",
    "Replicator",
    "State",
    "VerdictChange",
    "agent_reply",
    "decode_delta",
    "decode_message",
    "encode_delta",
    "is_replication",
    "lb_answer_for",
    "sanitise",
]
