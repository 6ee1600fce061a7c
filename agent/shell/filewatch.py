"""The kernel's word that a file changed (inotify), so that a file the agent follows (the
fleet token file) is re-read when it is written, replaced or removed, not every few
seconds.

One inotify descriptor watches the file's *directory*, not the file: an editor or
``install``/``mv`` replaces a file by renaming a new one over it, which a watch on the
old inode would never see. Every event that names the file (written and closed, created,
moved in or out, deleted, its mode changed), an event about the directory itself (moved
or deleted: the watch is then gone) and a queue overflow call ``on_change`` once per
batch. Where there is no inotify, or the directory does not exist, ``start`` returns
False and the caller polls as before.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
MASK = (
    IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)
#: events about the watched directory itself: after them the watch is gone
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
READ_SIZE = 65536


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name, use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return lib


def changed_names(buffer: bytes) -> tuple[set[bytes], bool]:
    """The file names a read of inotify events names, and whether the watch itself is
    gone (the directory moved or deleted) or events were lost (an overflow)."""
    names: set[bytes] = set()
    lost = False
    offset = 0
    while offset + _HEADER.size <= len(buffer):
        _wd, mask, _cookie, length = _HEADER.unpack_from(buffer, offset)
        offset += _HEADER.size
        raw = buffer[offset : offset + length]
        offset += length
        if mask & (GONE | IN_Q_OVERFLOW):
            lost = True
        name = raw.rstrip(b"\0")
        if name:
            names.add(name)
    return names, lost


class FileWatch:
    """Calls ``on_change`` when ``path`` is written, replaced, removed or re-moded."""

    def __init__(self, path: Path, on_change: Callable[[], None]) -> None:
        self.path = path
        self.on_change = on_change
        self.changes = 0  # batches that named the file
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._name = os.fsencode(path.name)

    @property
    def active(self) -> bool:
        return self._fd is not None

    def start(self) -> bool:
        """Watch (on the running loop); False when this system or directory allows none."""
        if self._fd is not None:
            return True
        lib = _libc()
        if lib is None:
            log.debug("no inotify: %s is polled", self.path)
            return False
        fd = lib.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            log.debug("no inotify (%s): %s is polled", os.strerror(ctypes.get_errno()), self.path)
            return False
        directory = os.fsencode(self.path.parent)
        if lib.inotify_add_watch(fd, directory, MASK) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            log.debug(
                "cannot watch %s (%s): %s is polled",
                self.path.parent,
                os.strerror(err or errno.EINVAL),
                self.path,
            )
            return False
        try:
            loop = asyncio.get_running_loop()
            loop.add_reader(fd, self._readable)
        except (OSError, NotImplementedError) as e:
            os.close(fd)
            log.debug("cannot watch %s (%s): it is polled", self.path, e)
            return False
        self._fd, self._loop = fd, loop
        return True

    def stop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        os.close(fd)

    def _readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        names: set[bytes] = set()
        lost = False
        try:
            while True:
                more, gone = changed_names(os.read(fd, READ_SIZE))
                names |= more
                lost = lost or gone
        except BlockingIOError:
            pass
        except OSError as e:
            log.debug("inotify on %s: %s", self.path.parent, e)
            lost = True
        if lost:
            self.stop()  # the caller sees ``active`` drop and polls (or starts again)
        if lost or self._name in names:
            self.changes += 1
            self.on_change()
