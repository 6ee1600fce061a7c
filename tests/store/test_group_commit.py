"""Group commit as databases do it (issue 17): a writer that waits for durability is
committed at once when no commit is running; writers that arrive during a commit share
the next one; records nobody waits for (check results, peers' deltas) still batch up to
the commit interval, so SD-card writes keep scaling with change.

The commit interval here is a minute: any writer that waited for it would time out.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from agent.crdt.hlc import HLC
from agent.domain.origin import parse_origin
from agent.node.state import Delta, State, decode_delta, encode_delta
from agent.shell.persistence import MAX_RECORD_DELTA, GroupCommit
from agent.store import SnapshotBudget, Store
from tests.store.test_threaded_commit import SlowCard, finished

INTERVAL = 60.0


class Writer:
    """A GroupCommit wired as the runtime wires it: ``on_work`` wakes a tick that calls
    ``maybe_commit`` (agent/shell/runtime.py, _coordinator_loop)."""

    def __init__(self, tmp_path: Path, card: SlowCard) -> None:
        self.loop = asyncio.get_running_loop()
        self.store = Store(tmp_path, fs=card)
        self.state = State("n1")
        self.clock = HLC("n1")
        self.published: list[Delta] = []
        self.commits = GroupCommit(
            self.store,
            INTERVAL,
            publish=self.published.append,
            copy_state=lambda: self.state.crdt.copy(),
        )
        self.commits.on_work = lambda: self.loop.call_soon(self.tick)
        self.n = 0

    def tick(self) -> None:
        self.commits.maybe_commit(self.loop.time(), {"hlc": self.n})

    def change(self, *, local: bool = True) -> None:
        self.n += 1
        spec = parse_origin({"id": f"o{self.n}", "url": f"http://127.0.0.1:9/{self.n}"})
        delta = self.state.declare(spec, "n1", "api", self.clock.now(1_000_000 + self.n))
        assert delta is not None
        self.commits.add([encode_delta(delta)], delta if local else None)

    async def write(self) -> bool:
        self.change()
        return await self.commits.durable()

    async def write_and_finish(self) -> bool:
        """A durable write, then its commit's end: a writer is answered once its record
        is on disk, and the commit may still run (a snapshot) after that."""
        ok = await self.write()
        await finished(self.commits)
        return ok


async def test_a_lone_writer_is_committed_at_once_not_at_the_interval(tmp_path: Path) -> None:
    w = Writer(tmp_path, SlowCard())
    try:
        for _ in range(5):
            # five sequential durable writes inside a deadline far below one interval
            assert await asyncio.wait_for(w.write(), 5) is True
        assert w.store.stats.commits == 5
        assert len(w.published) == 5  # each published once its own commit returned
    finally:
        w.commits.close({})


async def test_writers_arriving_during_a_commit_share_the_next_one(tmp_path: Path) -> None:
    card = SlowCard()
    w = Writer(tmp_path, card)
    try:
        card.gate.clear()  # the first commit sticks in fdatasync
        first = asyncio.ensure_future(w.write())
        assert await asyncio.to_thread(card.entered.wait, 10)
        crowd = [asyncio.ensure_future(w.write()) for _ in range(20)]
        await asyncio.sleep(0)
        assert not any(f.done() for f in crowd)
        card.gate.set()
        assert await asyncio.wait_for(first, 10) is True
        assert await asyncio.wait_for(asyncio.gather(*crowd), 10) == [True] * 20
        # one commit for the first writer, one shared by the twenty that came during it
        assert w.store.stats.commits == 2
        assert card.most_inside == 1
    finally:
        card.gate.set()
        w.commits.close({})
    rec = Store(tmp_path).recovered
    assert len(rec.deltas) == 21


async def test_records_nobody_waits_for_still_batch_to_the_interval(tmp_path: Path) -> None:
    w = Writer(tmp_path, SlowCard())
    try:
        assert await asyncio.wait_for(w.write_and_finish(), 5) is True
        last = w.loop.time()
        for _ in range(10):
            w.change(local=False)  # a peer's delta: persisted, nobody waits on it
        at = w.commits.next_commit()
        assert at is not None and at >= last + INTERVAL - 1.0
        for _ in range(3):
            await asyncio.sleep(0)  # let any wake-up run: none may commit early
        assert w.store.stats.commits == 1
        # a writer arriving now takes the waiting records along in its own commit
        assert await asyncio.wait_for(w.write(), 5) is True
        assert w.store.stats.commits == 2
        assert w.store.stats.pending_records == 0
    finally:
        w.commits.close({})


async def test_a_local_delta_nobody_waits_for_is_published_after_the_interval_commit(
    tmp_path: Path,
) -> None:
    w = Writer(tmp_path, SlowCard())
    try:
        assert await asyncio.wait_for(w.write_and_finish(), 5) is True  # the interval starts
        w.published.clear()
        w.change()  # a check result: local, published once durable, nobody awaits it
        await asyncio.sleep(0)
        assert w.published == []
        assert w.commits.next_commit() is not None
        w.commits.commit(w.loop.time(), {})  # the interval's tick
        deadline = w.loop.time() + 10
        while not w.published and w.loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert len(w.published) == 1
    finally:
        w.commits.close({})


async def test_a_delta_too_long_for_a_record_is_covered_by_a_snapshot(tmp_path: Path) -> None:
    """A batch of ~100,000 origins makes a delta past the 16 MiB a log record holds: it
    is not logged, the commit writes a snapshot of the state instead (all or nothing)."""
    w = Writer(tmp_path, SlowCard())
    try:
        assert await asyncio.wait_for(w.write(), 5) is True
        snapshots = w.store.stats.snapshots
        w.change()
        w.commits.add([b"\0" * (MAX_RECORD_DELTA + 1)], None)  # stands for the huge delta
        assert await asyncio.wait_for(w.commits.durable(), 10) is True
        assert w.store.stats.snapshots == snapshots + 1
    finally:
        w.commits.close({})
    rec = Store(tmp_path).recovered
    assert rec.state is not None
    assert all(len(raw) <= MAX_RECORD_DELTA for raw in rec.deltas)
    again = State.restore("n1", rec.state)
    for raw in rec.deltas:
        again.apply(decode_delta(raw))
    assert again == w.state


class SlowSnapshots(SlowCard):
    """Writing a snapshot file blocks while ``snap_gate`` is closed (a big state on a
    slow card: seconds); the log's own writes and fdatasync go through."""

    def __init__(self) -> None:
        super().__init__()
        self.snap_gate = threading.Event()
        self.snap_entered = threading.Event()

    def write_file(self, path: str, data: bytes) -> None:
        self.snap_entered.set()
        self.snap_gate.wait(10)
        super().write_file(path, data)


async def test_a_writer_is_answered_when_its_record_is_durable_not_after_the_snapshot(
    tmp_path: Path,
) -> None:
    """A snapshot that falls due rides on a commit, after its fdatasync: the writers of
    that commit (and their publication) do not wait for it (at 100,000 origins encoding
    and writing one takes seconds, and no API write may take longer than 1 s)."""
    card = SlowSnapshots()
    w = Writer(tmp_path, card)
    w.store.budget = SnapshotBudget(min_log_bytes=1, ratio=0.0)  # a log: snapshot due
    try:
        card.snap_gate.set()
        assert await asyncio.wait_for(w.write(), 5) is True  # an empty log: no snapshot
        assert not card.snap_entered.is_set()
        card.snap_gate.clear()
        assert await asyncio.wait_for(w.write(), 5) is True  # the snapshot stuck behind it
        assert await asyncio.to_thread(card.snap_entered.wait, 10)
        assert w.commits.committing  # the commit still runs: its snapshot is held
        assert len(w.published) == 2  # published as soon as it was on disk
        # a writer whose change is in no batch yet waits for the next commit, which
        # starts once the snapshot is done
        later = asyncio.ensure_future(w.write())
        await asyncio.sleep(0.05)
        assert not later.done()
        card.snap_gate.set()
        assert await asyncio.wait_for(later, 10) is True
        assert len(w.published) == 3
    finally:
        card.snap_gate.set()
        w.commits.close({})
