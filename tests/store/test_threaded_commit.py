"""Group commit runs on one writer thread: a slow SD card delays durability, never the
event loop (gossip, the API, the watchdog), and local deltas still go out only after
the commit that made them durable.

The slow card is the absent hardware: a ``FileOps`` whose fdatasync blocks on a gate.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any, cast

from agent.checks.engine import CheckEngine
from agent.crdt.hlc import HLC
from agent.domain.origin import parse_origin
from agent.membership.member import Member as GossipMember
from agent.membership.messages import NodeState
from agent.membership.meta import encode_tags
from agent.membership.protocol import MemberEvent
from agent.node.placement import ROLE
from agent.node.replication import Output
from agent.node.state import State, decode_delta, encode_delta
from agent.shell.config import parse_config
from agent.shell.coordinator import Coordinator
from agent.shell.persistence import GroupCommit
from agent.store import SnapshotBudget, Store
from agent.store.fs import FileOps


class SlowCard(FileOps):
    """fdatasync blocks while ``gate`` is closed; remembers who synced and how many at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.threads: set[str] = set()
        self.writers: set[str] = set()
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0

    def fdatasync(self, fd: int, path: str) -> None:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.threads.add(threading.current_thread().name)
        self.entered.set()
        try:
            self.gate.wait(10)
            super().fdatasync(fd, path)
        finally:
            with self._lock:
                self.inside -= 1

    def write_file(self, path: str, data: bytes) -> None:
        self.writers.add(threading.current_thread().name)
        super().write_file(path, data)


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


def ask_echo_while_blocked(card: SlowCard, port: int, result: dict[str, bool]) -> None:
    """From another thread: once a commit is inside fdatasync, is the loop still
    answering UDP? Then let the card finish."""
    try:
        if not card.entered.wait(10):
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2.0)
            s.sendto(b"ping", ("127.0.0.1", port))
            try:
                result["answered"] = s.recv(16) == b"ping"
            except TimeoutError:
                result["answered"] = False
        result["still_blocked"] = card.inside > 0
    finally:
        card.gate.set()


def peer(name: str) -> GossipMember:
    tags = encode_tags({"role": ROLE})
    return GossipMember(name, b"\x7f\x00\x00\x01", 7946, meta=tags, state=NodeState.ALIVE)


def coordinator(tmp_path: Path, card: SlowCard) -> tuple[Coordinator, list[bool]]:
    config = parse_config({"node": {"name": "n1", "data_dir": str(tmp_path)}})
    co = Coordinator("n1", config, CheckEngine(concurrency=1), fs=card)
    card.threads.clear()  # recovery may commit at start, before there is a loop to keep
    card.entered.clear()
    sent: list[bool] = []  # per transport call: was the card done syncing by then?

    def transport(out: list[Output]) -> None:
        sent.append(card.gate.is_set())

    co.transport = transport
    return co, sent


def spec(origin_id: str) -> Any:
    return parse_origin({"id": origin_id, "url": f"http://127.0.0.1:9/{origin_id}"})


async def test_the_loop_answers_while_a_commit_waits_for_the_card(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    card = SlowCard()
    co, sent = coordinator(tmp_path, card)
    co.start([], loop.time(), alone=True)
    b = peer("n2")
    co.on_event(MemberEvent("join", b), loop.time(), lambda: [b])  # someone to publish to
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    result: dict[str, bool] = {}
    asker = threading.Thread(target=ask_echo_while_blocked, args=(card, port, result))
    try:
        co.put(spec("web"), loop.time())
        assert sent == []  # not durable yet: not published
        card.gate.clear()
        asker.start()
        co.tick(loop.time() + 10.0, {"n1", "n2"})  # the commit is due: a slow fdatasync
        assert await asyncio.wait_for(co.durable(), 15) is True
        asker.join(15)
    finally:
        card.gate.set()
        transport.close()
        co.close()
    assert result == {"answered": True, "still_blocked": True}
    assert card.threads == {"store-writer_0"}
    assert sent and all(sent)  # published, and only after the commit returned


async def finished(commits: GroupCommit) -> None:
    """Wait (10 s at most) for the running commit to end: its writers are answered once
    their records are durable, before a snapshot that may follow."""
    deadline = asyncio.get_running_loop().time() + 10
    while commits.committing and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    assert not commits.committing


async def test_one_write_at_a_time_and_later_changes_wait_for_their_own_commit(
    tmp_path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    card = SlowCard()
    co, sent = coordinator(tmp_path, card)
    co.start([], loop.time(), alone=True)
    b = peer("n2")
    co.on_event(MemberEvent("join", b), loop.time(), lambda: [b])
    try:
        co.put(spec("a"), loop.time())
        card.gate.clear()
        co.tick(loop.time() + 10.0, {"n1", "n2"})
        first = asyncio.ensure_future(co.durable())
        assert await asyncio.to_thread(card.entered.wait, 10)
        co.put(spec("b"), loop.time())  # made while the first commit is on the card
        second = asyncio.ensure_future(co.durable())
        co.tick(loop.time() + 20.0, {"n1", "n2"})  # due, but a commit is running
        await asyncio.sleep(0)
        assert card.inside == 1 and not first.done() and sent == []
        card.gate.set()
        assert await asyncio.wait_for(first, 10) is True
        assert len(sent) == 1  # "a" only: "b" is not durable yet
        assert not second.done()
        await finished(co.commits)
        co.tick(loop.time() + 30.0, {"n1", "n2"})
        assert await asyncio.wait_for(second, 10) is True
        assert len(sent) == 2
    finally:
        card.gate.set()
        co.close()
    assert card.most_inside == 1
    # both are on disk: a new coordinator over the same directory recovers them
    again, _ = coordinator(tmp_path, SlowCard())
    try:
        assert again.state.spec("a") is not None and again.state.spec("b") is not None
    finally:
        again.close()


async def test_snapshots_are_encoded_and_written_on_the_writer_thread(tmp_path: Path) -> None:
    card = SlowCard()
    store = Store(
        tmp_path,
        fs=card,
        budget=SnapshotBudget(min_log_bytes=1, ratio=0.0, max_log_bytes=1),
    )
    state = State("n1")
    published: list[object] = []
    commits = GroupCommit(
        store, 0.0, publish=published.append, copy_state=lambda: state.crdt.copy()
    )
    loop = asyncio.get_running_loop()
    clock = HLC("n1")
    for i in range(3):
        delta = state.declare(spec(f"o{i}"), "n1", "api", clock.now(1_000_000 + i))
        assert delta is not None
        commits.add([encode_delta(delta)], delta)
        commits.commit(loop.time(), {"hlc": i})
        assert await asyncio.wait_for(commits.durable(), 10) is True
        await finished(commits)  # answered when durable; the snapshot may still run
    assert commits.close({"hlc": 3}) is True
    assert store.stats.snapshots >= 1
    assert card.writers == {"store-writer_0"}
    assert len(published) == 3
    rec = Store(tmp_path).recovered
    assert rec.state is not None  # a snapshot, then the log after it
    again = State.restore("n1", rec.state)
    for raw in rec.deltas:
        again.apply(decode_delta(raw))
    assert again == state
