"""Group commit on one writer thread: the store's write, fdatasync and snapshot encoding
run off the event loop, so a slow SD card delays durability, never gossip or the watchdog.

The durability contract (docs/store.md, docs/replication.md): a local delta is handed
back for publication only after the commit that made its record durable has returned.
A node that crashes and restarts then never reuses a dot (replica, counter) that a peer
already holds for a different write. While the store is faulted nothing can be made
durable: local deltas are published at once and the node runs from memory.

Only the writer thread touches the ``Store`` after recovery; the loop hands it whole
batches (records, metadata, and a copy of the state when a snapshot is due) and reads
its counters and ``fault``, which the thread updates with single assignments.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.node import Delta, encode_delta
from agent.store import MAX_RECORD, Store

log = logging.getLogger("agent.store")

FAULT_RETRY = 5.0  # while faulted, try the disk again this often
MAX_BUFFER_BYTES = 8 << 20  # records held while a commit is slow; past it, snapshot instead
#: a delta longer than this (a batch of ~100,000 origins) is not logged as one record (a
#: record holds at most 16 MiB): the next commit writes a snapshot, which covers it and
#: replaces the old one atomically, so the batch is still all there or none of it
MAX_RECORD_DELTA = MAX_RECORD - 1024


@dataclass(slots=True)
class _Batch:
    """One group commit: what it writes and who waits for it."""

    records: list[bytes]
    meta: dict[str, Any]
    snapshot: Delta | None  # a copy of the state covering every record so far
    force_snapshot: bool  # records were dropped from the buffer: only a snapshot covers them
    local: Delta | None  # published once this batch is durable
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)
    #: its records are on disk; a snapshot may still be running behind them
    durable: bool = False


class GroupCommit:
    """Buffers records between commits and runs each commit on the writer thread."""

    def __init__(
        self,
        store: Store,
        commit_interval: float,
        *,
        publish: Callable[[Delta], None],
        copy_state: Callable[[], Delta],
    ) -> None:
        self.store = store
        self.commit_interval = commit_interval
        self.publish = publish  # the shell's: spread a delta made durable
        self.copy_state = copy_state
        self.on_work: Callable[[], None] | None = None  # a commit can start: wake the tick
        self.on_fault_change: Callable[[str | None], None] | None = None
        self.records_dropped = 0  # records dropped from the buffer (a snapshot covers them)
        self._records: list[bytes] = []
        self._bytes = 0
        self._lost = False
        self._local: Delta | None = None
        self._waiters: list[asyncio.Future[bool]] = []
        self._inflight: _Batch | None = None
        self._last_commit = 0.0
        self._closed = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")

    # --- from the loop -------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Records or local deltas not yet handed to a commit."""
        return bool(self._records) or self._local is not None or self._lost

    @property
    def buffered(self) -> int:
        """Records waiting on the loop for the next commit (not yet in the store)."""
        return len(self._records)

    @property
    def committing(self) -> bool:
        return self._inflight is not None

    def add(self, records: list[bytes], local: Delta | None) -> None:
        """Records to persist; ``local``: the delta they hold for publication."""
        if not records and local is None:
            return
        idle = not self.pending and not self.store.stats.pending_records
        for raw in records:
            if len(raw) > MAX_RECORD_DELTA:
                self._lost = True  # too long for a record: the next commit snapshots
                continue
            self._records.append(raw)
            self._bytes += len(raw)
        if self._bytes > MAX_BUFFER_BYTES and self._inflight is not None:
            self._shed()
        if local is not None:
            if self.store.fault is not None:
                self.publish(local)  # nothing can be made durable: run from memory
            elif self._local is None:
                self._local = local
            else:
                self._local.join(local)
        if idle and self.on_work is not None:
            self.on_work()

    def _copy(self) -> Delta:
        """The state's copy for a snapshot, made on the loop (the thread encodes it while
        the loop goes on changing the state). The copy allocates one dict per key and
        makes no cycles: with the collector paused it takes half as long (0.24 s instead
        of 0.5 s for 70,000 origins), a stall the loop feels in full."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self.copy_state()
        finally:
            if enabled:
                gc.enable()

    def _shed(self) -> None:
        """A commit is stuck (a hung card): drop the buffered records; the state in
        memory has them, and the next commit writes a snapshot that covers them."""
        if not self._lost:
            log.warning("store: a commit is taking long; the next one writes a snapshot")
        self.records_dropped += len(self._records)
        self._records.clear()
        self._bytes = 0
        self._lost = True

    def next_commit(self) -> float | None:
        """When ``maybe_commit`` next has something to do (None: nothing waits).

        A writer waiting in ``durable`` is committed for at once (0.0: already due), not
        at the next interval: the interval is a ceiling for background records (check
        results, peers' deltas), which batch up to it, never a floor for a writer."""
        if self._inflight is not None:
            return None  # its completion wakes the tick
        if self._waiters:
            return 0.0
        if self.pending or self.store.stats.pending_records:
            return self._last_commit + self.commit_interval
        if self.store.fault is not None:
            return self._last_commit + FAULT_RETRY
        return None

    def maybe_commit(self, now: float, meta: dict[str, Any]) -> None:
        """Start a group commit if one is due and none is running."""
        at = self.next_commit()
        if at is not None and now >= at:
            self.commit(now, meta)

    def commit(self, now: float, meta: dict[str, Any]) -> None:
        """Hand everything buffered to the writer thread."""
        if self._inflight is not None or self._closed:
            return
        self._last_commit = now
        store = self.store
        snapshot = self._copy() if self._lost or store.snapshot_due else None
        batch = _Batch(self._records, meta, snapshot, self._lost, self._local, self._waiters)
        self._records, self._bytes, self._lost, self._local, self._waiters = [], 0, False, None, []
        self._inflight = batch
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a simulation, a tool): wait for the writer here
            self._committed(batch, self._writer.submit(_write, store, batch))
            return

        def durable() -> None:  # on the writer thread, before a due snapshot
            loop.call_soon_threadsafe(self._durable, batch)

        fut = loop.run_in_executor(self._writer, _write, store, batch, durable)
        fut.add_done_callback(lambda f: self._committed(batch, f))

    def _durable(self, batch: _Batch) -> None:
        """The batch's records are on disk: publish and answer its writers now, not after
        the snapshot that may follow (at 100,000 origins it takes seconds). Runs before
        ``_committed`` (both are queued on the loop, in this order)."""
        batch.durable = True
        if batch.local is not None:
            local, batch.local = batch.local, None
            self.publish(local)
        for w in batch.waiters:
            if not w.done():
                w.set_result(True)

    def _committed(self, batch: _Batch, fut: asyncio.Future[None] | Future[None]) -> None:
        self._inflight = None
        error = None if fut.cancelled() else fut.exception()
        if error is not None:  # a bug, not a disk fault (the store never raises on I/O)
            log.error("store: the writer thread failed", exc_info=error)
        if batch.local is not None:  # not yet published by _durable
            self.publish(batch.local)  # durable now (or never will be: run from memory)
        fault = self.store.fault
        for w in batch.waiters:
            if not w.done():
                w.set_result(fault is None and error is None)
        if self.on_fault_change is not None:
            self.on_fault_change(fault)
        if (self.pending or fault is not None) and self.on_work is not None:
            self.on_work()

    async def durable(self) -> bool:
        """Wait until every local change made so far is on disk; False if the store is
        faulted (memory only).

        Group commit as databases do it: with no commit running, the change is committed
        at once (one write and fdatasync, a few milliseconds); with one running, it joins
        the next, which starts as soon as the running one returns, together with every
        other change that arrived meanwhile. A lone writer never waits for a timer, and a
        crowd of writers shares each fdatasync."""
        if self.store.fault is not None:
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self.pending:
            first = not self._waiters
            self._waiters.append(fut)
            if first and self._inflight is None and self.on_work is not None:
                self.on_work()  # the tick commits now (next_commit says it is due)
        elif self._inflight is not None and not self._inflight.durable:
            self._inflight.waiters.append(fut)
        else:
            return True
        return await fut

    def close(self, meta: dict[str, Any]) -> bool:
        """Clean shutdown: the last commit, on the writer thread (after any running one),
        waited for here; then the writer stops. A second call does nothing."""
        if self._closed:
            return self.store.fault is None
        self._closed = True
        batch = _Batch(self._records, meta, None, False, self._local, self._waiters)
        if self._lost:
            batch.snapshot, batch.force_snapshot = self._copy(), True
        if self._inflight is not None:
            batch.waiters += self._inflight.waiters
        self._records, self._local, self._waiters = [], None, []
        ok = self._writer.submit(_close, self.store, batch).result()
        self._writer.shutdown(wait=True)
        for w in batch.waiters:
            if not w.done():
                w.set_result(ok)
        return ok


# --- on the writer thread ----------------------------------------------------------------


def _write(store: Store, batch: _Batch, durable: Callable[[], None] | None = None) -> None:
    """Append the batch, commit (write + fdatasync), snapshot if due: the slow part.
    ``durable``: told as soon as the records are on disk (Store.commit)."""
    for raw in batch.records:
        store.append_delta(raw)
    store.set_meta(batch.meta)
    snap = batch.snapshot
    store.snapshot_source = None if snap is None else (lambda: encode_delta(snap))
    if batch.force_snapshot and snap is not None:
        store.snapshot(encode_delta(snap))
    store.commit(durable)
    store.snapshot_source = None


def _close(store: Store, batch: _Batch) -> bool:
    _write(store, batch)
    return store.close()
