"""The store the runtime uses: recovery at open, then appends, group commit, snapshots.

Typical use::

    store = Store(data_dir / "store", snapshot_source=state.snapshot)
    rec = store.recovered                     # state bytes, deltas, meta
    ...                                       # restore the State, apply rec.deltas
    store.append_delta(encode_delta(delta))   # for every local or remote delta applied
    store.set_meta({"hlc": high_water})       # only changed keys are written
    store.commit()                            # every commit_interval, and at shutdown
    store.fault                               # None, or why the disk is not being written

Nothing here raises on I/O: the agent keeps running from memory with ``fault`` set and
catches up when the disk returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.store import quarantine
from agent.store.fs import FileOps
from agent.store.log import SegmentLog, StoreStats
from agent.store.record import KIND_DELTA, KIND_META, Record, encode
from agent.store.recovery import Recovered, recover
from agent.store.snapshot import SnapshotBudget, prune, write_snapshot

log = logging.getLogger("agent.store")


class Store:
    """A crash-safe log of CRDT deltas and node metadata in ``directory``.

    ``snapshot_source`` returns the whole state as bytes (``State.snapshot``); with it,
    ``commit`` snapshots by itself when the budget says so, and after records had to be
    dropped while the disk was failing. Without it, call ``snapshot`` yourself when
    ``snapshot_due``.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        snapshot_source: Callable[[], bytes] | None = None,
        segment_bytes: int = 4 << 20,
        budget: SnapshotBudget | None = None,
        max_pending_bytes: int = 8 << 20,
        fs: FileOps | None = None,
    ) -> None:
        self.dir = str(directory)
        self.fs = fs or FileOps()
        self.budget = budget or SnapshotBudget()
        self.snapshot_source = snapshot_source
        self.stats = StoreStats()
        self.recovered: Recovered = recover(self.fs, self.dir)
        rec = self.recovered
        self.meta: dict[str, Any] = dict(rec.meta)
        self._seq = rec.last_seq
        self._snapshots = list(rec.snapshots)
        self._last_snapshot_bytes = 0
        self.stats.log_bytes = rec.log_bytes
        self.stats.quarantined_files = len(rec.quarantined)
        self.stats.unlink_errors = rec.unlink_errors
        self._log = SegmentLog(
            self.fs,
            self.dir,
            rec.next_segment,
            self.stats,
            segment_bytes=segment_bytes,
            max_pending_bytes=max_pending_bytes,
        )
        self._snapshot_fault: str | None = None

    # --- writing -------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The sequence number of the last record appended."""
        return self._seq

    def append_delta(self, data: bytes) -> int:
        """Buffer one encoded delta; durable after the next successful ``commit``."""
        return self._append(KIND_DELTA, bytes(data))

    def set_meta(self, changes: dict[str, Any]) -> int | None:
        """Record node metadata (incarnation, HLC high-water mark, remembered peers);
        only keys whose value changed are written. Values must be msgpack-able (tuples
        come back as lists). Returns the record's seq, or None if nothing changed."""
        diff = {k: v for k, v in changes.items() if k not in self.meta or self.meta[k] != v}
        if not diff:
            return None
        self.meta.update(diff)
        return self._append(KIND_META, diff)

    def _append(self, kind: int, payload: Any) -> int:
        self._seq += 1
        self._log.append(encode(Record(self._seq, kind, payload)))
        self.stats.records_appended += 1
        return self._seq

    def commit(self, durable: Callable[[], None] | None = None) -> bool:
        """Make every appended record durable (one write + one fdatasync), then snapshot
        if due. True when everything appended is on disk; never raises on I/O.
        ``durable`` is called once the records are on disk, before a due snapshot is
        encoded and written (seconds for a big state): who waits for the records need
        not wait for the snapshot. Not called if they are not durable."""
        if self._log.gap and self.snapshot_source is not None:
            self._auto_snapshot()
        ok = self._log.commit()
        if ok and not self._log.gap and durable is not None:
            durable()
        if ok and self.snapshot_source is not None and self.snapshot_due:
            self._auto_snapshot()
        return ok and not self._log.gap

    def _auto_snapshot(self) -> None:
        assert self.snapshot_source is not None
        try:
            state = self.snapshot_source()
        except Exception:  # the state's encoder failing is a bug, not a disk fault
            log.exception("store: snapshot source failed")
            return
        self.snapshot(state)

    @property
    def snapshot_due(self) -> bool:
        return self._log.gap or self.budget.due(self.stats.log_bytes, self._last_snapshot_bytes)

    def snapshot(self, state: bytes) -> bool:
        """Write ``state`` (which must include every delta appended so far) as a new
        snapshot; the buffered records are then covered and dropped. True on success."""
        number = self._log.segment + 1
        try:
            size = write_snapshot(self.fs, self.dir, number, self._seq, dict(self.meta), state)
        except OSError as e:
            self._log.failed(e)
            return False
        self.stats.snapshots += 1
        self.stats.bytes_written += size
        self.stats.fsyncs += 2
        self.stats.log_bytes = 0
        self._last_snapshot_bytes = size
        self._log.rotate()  # now == number: segments below it are covered
        self._log.drop_pending()
        self._log.gap = False
        self._log.cleared()
        self._snapshots.append(number)
        _, failed = prune(self.fs, self.dir, self._snapshots)
        self.stats.unlink_errors += failed
        return True

    # --- damage --------------------------------------------------------------------------

    def quarantine(self, base: str, data: bytes) -> str | None:
        """Keep a copy of bytes the store read but its user could not decode (a record
        of a format this version does not understand, or a bug) in ``quarantine/``,
        before a snapshot makes the log that holds them go. The name it got, or None
        if it could not be written (logged)."""
        try:
            name = quarantine.copy_aside(self.fs, self.dir, base, data)
        except OSError as e:
            log.error("store: could not quarantine %s (%s)", base, e)
            return None
        self.recovered.quarantined.append(name)
        self.stats.quarantined_files += 1
        return name

    # --- state ---------------------------------------------------------------------------

    @property
    def fault(self) -> str | None:
        """Why the store is not writing (e.g. 'read-only filesystem'), or None."""
        return self._log.fault

    def close(self) -> bool:
        """Commit what is buffered and close the active segment (clean shutdown)."""
        ok = self.commit()
        self._log.close()
        return ok
