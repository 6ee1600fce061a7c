"""The segmented append-only log: buffered appends, group commit, wear counters.

``append`` only buffers a frame; ``commit`` writes the whole batch with one write and
one fdatasync. The runtime calls ``commit`` at most every ``store.commit_interval``
(1 s) and at clean shutdown, so an SD card sees one small sequential write per second
of change, and none at all when nothing changed.

A write error never reaches the caller: the batch stays buffered (bounded by
``max_pending_bytes``), ``fault`` says why, and the next ``commit`` truncates the
segment back to its last durable size and writes the batch again. Re-writing after a
failed fsync matters on Linux, which may mark the failed pages clean and lose them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from agent.store import names
from agent.store.fs import FileOps

log = logging.getLogger("agent.store")


@dataclass
class StoreStats:
    """Counters for /metrics (monotonic unless noted). Wear is bytes_written + fsyncs."""

    bytes_written: int = 0  # log and snapshot bytes handed to the kernel and made durable
    fsyncs: int = 0  # fdatasync/fsync calls on files and the directory
    snapshots: int = 0
    commits: int = 0  # batches made durable
    records_appended: int = 0
    write_errors: int = 0  # failed commits or snapshots (each one sets ``fault``)
    records_dropped: int = 0  # buffered records dropped past the memory bound while faulted
    pending_records: int = 0  # gauge: buffered, not yet durable
    pending_bytes: int = 0  # gauge
    log_bytes: int = 0  # gauge: log bytes since the last snapshot (the snapshot budget)
    quarantined_files: int = 0  # files set aside at the last open
    unlink_errors: int = 0  # files the store could not delete (covered log, leftovers)


def describe(e: OSError) -> str:
    """A short fault reason for /v1/health: 'read-only filesystem', 'disk full', ..."""
    import errno

    known = {
        errno.EROFS: "read-only filesystem",
        errno.ENOSPC: "disk full",
        errno.EDQUOT: "disk quota exceeded",
        errno.EIO: "I/O error",
        errno.EACCES: "permission denied",
    }
    what = known.get(e.errno or 0, e.strerror or type(e).__name__)
    return f"{what} ({e.filename})" if e.filename else what


class SegmentLog:
    """The active segment and the batch waiting for it. Segments are numbered; a new
    one starts when the active one would pass ``segment_bytes`` or after a snapshot."""

    def __init__(
        self,
        fs: FileOps,
        directory: str,
        first_segment: int,
        stats: StoreStats,
        *,
        segment_bytes: int,
        max_pending_bytes: int,
    ) -> None:
        self.fs = fs
        self.dir = directory
        self.stats = stats
        self.segment_bytes = segment_bytes
        self.max_pending_bytes = max_pending_bytes
        self.segment = first_segment  # the active segment's number (file made lazily)
        self._fd: int | None = None
        self._created = False  # the active file exists, made by us
        self._dir_synced = True
        self._durable = 0  # the active segment's size as of its last successful fsync
        self._torn = False  # a write failed: truncate to _durable before writing again
        self._pending: list[bytes] = []
        self.fault: str | None = None
        self.gap = False  # records were dropped: only a snapshot makes the disk whole again

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def append(self, frame: bytes) -> None:
        self._pending.append(frame)
        self.stats.pending_records += 1
        self.stats.pending_bytes += len(frame)
        if self.fault is not None and self.stats.pending_bytes > self.max_pending_bytes:
            self._shed()

    def _shed(self) -> None:
        """Past the memory bound while the disk is failing: drop the oldest records. The
        state in memory still has them; the next snapshot will put them on disk."""
        dropped = 0
        while self.stats.pending_bytes > self.max_pending_bytes // 2 and len(self._pending) > 1:
            frame = self._pending.pop(0)
            self.stats.pending_bytes -= len(frame)
            dropped += 1
        self.stats.pending_records -= dropped
        self.stats.records_dropped += dropped
        if dropped and not self.gap:
            log.warning("store: memory bound reached while faulted; a snapshot will catch up")
        self.gap = self.gap or dropped > 0

    def path(self, n: int) -> str:
        return os.path.join(self.dir, names.segment_name(n))

    def _open(self) -> int:
        """Open the active segment positioned at its durable size. The fd is closed again
        after each commit: an open fd would keep a remount read-only (by an operator or
        the kernel) from taking effect cleanly, and reopening costs no disk write."""
        if not self._created:
            while True:  # a number already on disk is someone else's data: never reuse it
                try:
                    fd = self.fs.open_write(self.path(self.segment), create=True)
                    break
                except FileExistsError:
                    self.segment += 1
            self._created, self._dir_synced, self._durable, self._torn = True, False, 0, False
        else:
            fd = self.fs.open_write(self.path(self.segment), create=False)
        self._fd = fd
        try:
            if self._torn:  # a failed batch may have left bytes past the durable size
                self.fs.truncate_fd(fd, self._durable, self.path(self.segment))
                self._torn = False
            else:
                os.lseek(fd, self._durable, os.SEEK_SET)
        except OSError:
            self._close()
            raise
        return fd

    def _close(self) -> None:
        if self._fd is not None:
            self.fs.close(self._fd)
            self._fd = None

    def rotate(self) -> None:
        """Start a new segment at the next write (after a snapshot, or when full)."""
        self._close()
        self.segment += 1
        self._created, self._durable, self._dir_synced, self._torn = False, 0, True, False

    def commit(self) -> bool:
        """Write and fdatasync the batch; True when nothing is left pending."""
        if not self._pending:
            return True
        data = b"".join(self._pending)
        try:
            if self._created and self._durable and self._durable + len(data) > self.segment_bytes:
                self.rotate()
            fd = self._open()
            path = self.path(self.segment)
            self.fs.write_all(fd, data, path)
            self.fs.fdatasync(fd, path)
            self.stats.fsyncs += 1
            if not self._dir_synced:
                self.fs.fsync_dir(self.dir)
                self.stats.fsyncs += 1
                self._dir_synced = True
        except OSError as e:
            self._close()  # reopen, truncate to the durable size and rewrite next time
            self._torn = self._created
            self.failed(e)
            return False
        finally:
            self._close()
        self._durable += len(data)
        self.stats.bytes_written += len(data)
        self.stats.commits += 1
        self.stats.log_bytes += len(data)
        self.drop_pending()
        self.cleared()
        return True

    def drop_pending(self) -> None:
        self._pending.clear()
        self.stats.pending_records = self.stats.pending_bytes = 0

    def failed(self, e: OSError) -> None:
        """A write failed. Logged once when the fault begins (and once when it clears):
        a standing fault must not log at every retry, nor again because the file it
        failed on changed (the log segment, then a snapshot). ``write_errors`` counts."""
        reason = describe(e)
        if self.fault is None:
            log.error("store: write failed: %s; keeping records in memory and retrying", reason)
        elif self.fault != reason:
            log.debug("store: still failing: %s", reason)
        self.fault = reason
        self.stats.write_errors += 1
        if self.stats.pending_bytes > self.max_pending_bytes:
            self._shed()

    def cleared(self) -> None:
        if self.fault is not None and not self._pending and not self.gap:
            log.warning("store: writes succeed again (was: %s); caught up", self.fault)
            self.fault = None

    def close(self) -> None:
        self._close()
