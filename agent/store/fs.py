"""The thin file layer: every system call the store makes goes through ``FileOps``.

Keeping the calls in one small class is what lets the tests inject EIO/ENOSPC/EROFS at
any step without root, and keeps the rest of the store about the format, not about ``os``.
"""

from __future__ import annotations

import contextlib
import errno
import os


class FileOps:
    """Plain ``os`` calls. Subclass and override ``check`` to inject faults in tests."""

    def check(self, op: str, path: str) -> None:
        """Called before every mutating operation; raise OSError here to simulate a fault."""

    def makedirs(self, path: str) -> None:
        if not os.path.isdir(path):
            self.check("mkdir", path)
            os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def open_write(self, path: str, *, create: bool) -> int:
        """An fd for writing ``path`` (not O_APPEND: the store positions it itself).
        ``create``: the file must not exist yet (FileExistsError if it does)."""
        self.check("open", path)
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        return os.open(path, flags, 0o644)

    def truncate_fd(self, fd: int, size: int, path: str) -> None:
        self.check("truncate", path)
        os.ftruncate(fd, size)
        os.lseek(fd, size, os.SEEK_SET)

    def write_all(self, fd: int, data: bytes, path: str) -> None:
        self.check("write", path)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            if n <= 0:  # pragma: no cover - os.write raises rather than returning 0
                raise OSError(errno.EIO, "short write", path)
            view = view[n:]

    def fdatasync(self, fd: int, path: str) -> None:
        self.check("fsync", path)
        os.fdatasync(fd)

    def fsync_dir(self, path: str) -> None:
        self.check("fsync", path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self, fd: int) -> None:
        # the data's fate was decided by the last fsync, not by close
        with contextlib.suppress(OSError):
            os.close(fd)

    def write_file(self, path: str, data: bytes) -> None:
        """Create (or replace) ``path`` with ``data`` and fsync it."""
        self.check("write", path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            self.write_all(fd, data, path)
            self.fdatasync(fd, path)
        finally:
            os.close(fd)

    def truncate_path(self, path: str, size: int) -> None:
        self.check("truncate", path)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self.fdatasync(fd, path)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        self.check("rename", dst)
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        self.check("unlink", path)
        os.unlink(path)
