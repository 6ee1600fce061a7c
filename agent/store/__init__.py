"""The SD-card store: a crash-safe, segmented append-only log of CRDT deltas and node
metadata, with group commit, snapshots and recovery (docs/store.md)."""

from agent.store.atomic_file import write_atomic
from agent.store.fs import FileOps
from agent.store.log import StoreStats
from agent.store.record import MAX_BODY as MAX_RECORD
from agent.store.recovery import Recovered
from agent.store.replica_id import META_KEY as REPLICA_META_KEY
from agent.store.replica_id import choose_replica_id
from agent.store.snapshot import SnapshotBudget
from agent.store.store import Store

__all__ = [
    "MAX_RECORD",
    "REPLICA_META_KEY",
    "FileOps",
    "Recovered",
    "SnapshotBudget",
    "Store",
    "StoreStats",
    "choose_replica_id",
    "write_atomic",
]
