"""Delta-state CRDTs (Almeida, Shoker, Baquero 2018) with digest-driven anti-entropy
(Enes et al. 2019): pure, deterministic, no clocks or I/O. See docs/replicated-state.md."""

from agent.crdt.aworset import AWORSet
from agent.crdt.causal_context import CausalContext, Digest
from agent.crdt.codec import (
    CrdtDecodeError,
    Interner,
    ItemCodec,
    Lookup,
    decode_digest,
    decode_ormap,
    decode_ormap_context,
    decode_ts,
    encode_digest,
    encode_ormap,
    encode_ts,
    fail,
)
from agent.crdt.dot import Dot
from agent.crdt.hlc import HLC, Timestamp
from agent.crdt.lww import LWWRegister
from agent.crdt.mvregister import MVRegister
from agent.crdt.ormap import DEFAULT_RECORD_LIMIT, KeyVV, ORMap

__all__ = [
    "DEFAULT_RECORD_LIMIT",
    "HLC",
    "AWORSet",
    "CausalContext",
    "CrdtDecodeError",
    "Digest",
    "Dot",
    "Interner",
    "ItemCodec",
    "KeyVV",
    "LWWRegister",
    "Lookup",
    "MVRegister",
    "ORMap",
    "Timestamp",
    "decode_digest",
    "decode_ormap",
    "decode_ormap_context",
    "decode_ts",
    "encode_digest",
    "encode_ormap",
    "encode_ts",
    "fail",
]
