"""The kernel's word that a file changed (agent/shell/filewatch.py): what lets a node
follow its fleet token file without reading it every few seconds."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
from pathlib import Path

from agent.shell.filewatch import (
    IN_CLOSE_WRITE,
    IN_IGNORED,
    IN_Q_OVERFLOW,
    FileWatch,
    changed_names,
)


async def _one_change(seen: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(seen.wait(), 5)
    except TimeoutError:
        raise AssertionError(f"no change reported after {what}") from None
    seen.clear()


def test_every_way_a_file_changes_is_reported_and_other_files_are_not(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a\n")

    async def main() -> int:
        seen = asyncio.Event()
        w = FileWatch(token, seen.set)
        assert w.start()
        # a neighbour's changes are not ours; a write of ours then is
        (tmp_path / "other").write_text("x")
        token.write_text("b\n")
        await _one_change(seen, "a write")
        assert w.changes == 1
        # replaced by a rename over it (install, mv, an editor)
        new = tmp_path / "token.new"
        new.write_text("c\n")
        os.replace(new, token)
        await _one_change(seen, "a rename over it")
        token.chmod(0o000)
        await _one_change(seen, "a chmod")
        token.unlink()
        await _one_change(seen, "a delete")
        token.write_text("d\n")
        await _one_change(seen, "a create")
        assert w.active
        w.stop()
        assert not w.active
        return w.changes

    assert asyncio.run(main()) >= 5


def test_a_watch_whose_directory_goes_reports_it_and_stops(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    d.mkdir()
    token = d / "token"

    async def main() -> None:
        seen = asyncio.Event()
        w = FileWatch(token, seen.set)
        assert w.start()
        shutil.rmtree(d)
        await _one_change(seen, "the directory's removal")
        assert not w.active  # the caller polls again until it can watch
        assert not w.start()  # no directory: nothing to watch

    asyncio.run(main())


def test_no_directory_means_no_watch(tmp_path: Path) -> None:
    async def main() -> bool:
        return FileWatch(tmp_path / "missing" / "token", lambda: None).start()

    assert asyncio.run(main()) is False


def _event(mask: int, name: bytes) -> bytes:
    padded = name + b"\0" * (-len(name) % 16 or (16 if name else 0))
    return struct.pack("iIII", 1, mask, 0, len(padded)) + padded


def test_the_event_reader_names_files_and_sees_overflow_and_a_lost_watch() -> None:
    buf = _event(IN_CLOSE_WRITE, b"token") + _event(IN_CLOSE_WRITE, b"other")
    assert changed_names(buf) == ({b"token", b"other"}, False)
    assert changed_names(_event(IN_Q_OVERFLOW, b"")) == (set(), True)
    assert changed_names(_event(IN_IGNORED, b"")) == (set(), True)
    # a truncated read never raises: what is whole is read
    assert changed_names(buf[:-3])[0] == {b"token", b"other"}
    assert changed_names(b"\x01\x02") == (set(), False)
