"""Delta-state CRDTs (Almeida, Shoker, Baquero 2018) with digest-driven anti-entropy
(Enes et al. 2019): pure, deterministic, no clocks or I/O. See docs/replicated-state.md."""

from agent.crdt.aworset import AWORSet
from agent.crdt.causal_context import CausalContext, Digest
from agent.crdt.codec import CrdtDecodeError
from agent.crdt.dot import Dot
from agent.crdt.hlc import HLC, Timestamp
from agent.crdt.lww import LWWRegister
from agent.crdt.mvregister import MVRegister
from agent.crdt.ormap import ORMap

__all__ = [
    "HLC",
    "AWORSet",
    "CausalContext",
    "CrdtDecodeError",
    "Digest",
    "Dot",
    "LWWRegister",
    "MVRegister",
    "ORMap",
    "Timestamp",
]
