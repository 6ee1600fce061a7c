"""Fast reconnects after a partition (agent/shell/rejoin.py): the schedule alone, then real
clusters on loopback: an unanswering member never holds up the next attempt, and an mDNS
sighting of a failed member is tried at once, at most once per FAST_INTERVAL."""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.shell import rejoin
from agent.shell.cluster import Cluster
from agent.shell.cluster_metrics import ClusterCollector
from agent.shell.config import parse_config
from agent.shell.peers import Peer
from agent.shell.rejoin import FAST_INTERVAL, FAST_WINDOW, fast_due
from tests.conftest import async_wait_for

# --- the schedule, pure ------------------------------------------------------------------


def test_never_tried_first_the_latest_failure_first_at_most_limit() -> None:
    failed = {"a": 10.0, "b": 30.0, "c": 20.0}
    assert fast_due(failed, {}, 40.0, limit=2) == ["b", "c"]
    assert fast_due(failed, {"b": 39.0, "c": 39.0}, 40.0, limit=2) == ["a", "b"]
    assert fast_due(failed, {}, 40.0, limit=0) == []
    assert fast_due(failed, {}, 40.0, limit=-1) == []  # more in flight than the bound


def test_not_twice_within_the_interval_nor_while_being_tried_nor_past_the_window() -> None:
    failed = {"a": 0.0, "b": 0.0, "c": 0.0}
    tried = {"a": 100.0 - FAST_INTERVAL / 2, "b": 100.0 - FAST_INTERVAL}
    assert fast_due(failed, tried, 100.0, limit=5) == ["c", "b"]  # a: too soon
    assert fast_due(failed, tried, 100.0, limit=5, busy={"c"}) == ["b"]  # c: being tried
    assert fast_due(failed, {}, 100.0, limit=5, busy={"c"}) == ["a", "b"]
    assert fast_due(failed, {}, FAST_WINDOW, limit=5) == ["a", "b", "c"]  # the last moment
    assert fast_due(failed, {}, FAST_WINDOW + 0.001, limit=5) == []  # the 30 s schedule's


def test_a_run_tries_each_member_in_turn_within_the_bound_for_the_window() -> None:
    """Seven members split off at once, two attempts a pass, a pass a second: every
    pass within the bound, each member again within ceil(7/2) = 4 passes, none after."""
    failed = {f"m{i}": 0.0 for i in range(7)}
    tried: dict[str, float] = {}
    when: dict[str, list[float]] = {n: [] for n in failed}
    t = 0.0
    while t <= FAST_WINDOW + 60:
        due = fast_due(failed, tried, t, limit=2)
        assert len(due) <= 2
        for n in due:
            tried[n] = t
            when[n].append(t)
        t += FAST_INTERVAL
    for n, times in when.items():
        assert times[0] <= math.ceil(7 / 2) * FAST_INTERVAL, n
        gaps = {round(b - a, 6) for a, b in itertools.pairwise(times)}
        assert FAST_INTERVAL <= min(gaps) <= max(gaps) <= math.ceil(7 / 2) * FAST_INTERVAL
        assert times[-1] <= FAST_WINDOW, n
    assert sum(map(len, when.values())) <= 2 * (FAST_WINDOW / FAST_INTERVAL + 1)


def test_a_member_that_fails_again_is_first_in_line_again() -> None:
    r = rejoin.Rejoiner(cast(Cluster, None))  # memory only: no cluster needed
    r.member_failed("a", ("10.0.0.1", 7946), 0.0)
    r.member_failed("b", ("10.0.0.2", 7946), 0.0)
    r.tried.update(a=5.0, b=6.0)
    r.member_back("a")
    r.member_failed("a", ("10.0.0.1", 7946), 7.0)
    since = {n: t for n, (_, t) in r.failed.items()}
    assert fast_due(since, r.tried, 7.0, limit=1) == ["a"]


# --- real clusters on loopback -------------------------------------------------------------

MakeCluster = Callable[[str], Any]


@pytest.fixture
async def clusters(tmp_path: Path) -> AsyncIterator[MakeCluster]:
    made: list[Cluster] = []

    async def make(name: str) -> Cluster:
        config = parse_config(
            {
                "node": {"name": name, "data_dir": str(tmp_path / name)},
                "cluster": {"bind": "127.0.0.1:0", "discover": False},
            }
        )
        c = Cluster(config, name)
        await c.start()
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            await c.leave_and_stop(1.0)


def black_hole() -> socket.socket:
    """A TCP port that completes the handshake and then never answers: a join to it
    waits for its timeout, as one to a cut-off member does."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s


async def test_an_unanswering_member_holds_up_neither_the_loop_nor_the_next_attempt(
    clusters: MakeCluster,
) -> None:
    a, b = await clusters("a"), await clusters("b")
    holes = [black_hole(), black_hole()]
    loop = asyncio.get_running_loop()
    now = loop.time()
    try:
        # the holes failed last, so they go first and fill the first pass
        a.rejoiner.member_failed("b", ("127.0.0.1", b.node.port), now - 1)
        for i, h in enumerate(holes):
            a.rejoiner.member_failed(f"hole{i}", h.getsockname(), now)
        joiner = asyncio.create_task(a.run_joiner())
        try:
            await async_wait_for(
                lambda: a.rejoiner.attempts["fast", "joined"] == 1, 5, "a to reconnect to b"
            )
            # b joined while both attempts to the holes were still waiting on them
            assert a.rejoiner.trying == {"hole0", "hole1"}
            assert a.peers() == 1 and "b" not in a.rejoiner.failed
            started = min(a.rejoiner.tried["hole0"], a.rejoiner.tried["hole1"])
            joiner.cancel()  # no new passes: the attempts running now end by themselves
            await asyncio.gather(joiner, return_exceptions=True)
            await async_wait_for(lambda: not a.rejoiner.trying, 5, "the holes' attempts to end")
            # given up after ATTEMPT_TIMEOUT, not the 10 s tcp_timeout
            assert loop.time() - started < rejoin.ATTEMPT_TIMEOUT + 1.5
            assert a.rejoiner.attempts["fast", "no_answer"] >= 2
        finally:
            joiner.cancel()
            await asyncio.gather(joiner, return_exceptions=True)
    finally:
        for h in holes:
            h.close()


async def test_an_mdns_sighting_of_a_failed_member_is_tried_at_once_and_rate_limited(
    clusters: MakeCluster,
) -> None:
    """No joiner loop runs here: only the sighting can have joined."""
    a, b = await clusters("a"), await clusters("b")
    loop = asyncio.get_running_loop()
    with socket.socket() as closed:  # a port nobody listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        gone = closed.getsockname()
    a.rejoiner.member_failed("c", gone, loop.time())
    assert a.rejoiner.sighted("c", gone, loop.time())
    await async_wait_for(lambda: a.rejoiner.attempts["mdns", "no_answer"] == 1, 5, "c's try")
    # seen again within FAST_INTERVAL: handled (PeerFinder must not join it), not tried
    assert a.rejoiner.sighted("c", gone, loop.time())
    assert not a.rejoiner.trying and a.rejoiner.attempts.total() == 1
    assert not a.rejoiner.sighted("stranger", ("127.0.0.1", 9), loop.time())  # PeerFinder's
    # b failed at an old address and announces its new one: joined there, at once
    a.rejoiner.member_failed("b", gone, loop.time())
    a.finder._on_discovered("b", "127.0.0.1", b.node.port)
    assert a.rejoiner.failed["b"][0] == ("127.0.0.1", b.node.port)
    await async_wait_for(lambda: a.rejoiner.attempts["mdns", "joined"] == 1, 5, "b's try")
    assert a.peers() == 1 and b.peers() == 1 and "b" not in a.rejoiner.failed
    registry = CollectorRegistry()
    registry.register(ClusterCollector(a))
    text = generate_latest(registry).decode()
    assert 'edge_agent_reconnect_attempts_total{kind="mdns",result="joined"} 1.0' in text
    assert 'edge_agent_reconnect_attempts_total{kind="mdns",result="no_answer"} 1.0' in text
    # a member failed at that address is found by address when the name is not ours
    a.rejoiner.member_failed("c", gone, loop.time() - 10)
    a.rejoiner.tried.clear()
    assert a.rejoiner.sighted("c-renamed", gone, loop.time())
    assert a.rejoiner.trying == {"c"}


def count_passes(c: Cluster, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The loop time of each joiner pass of ``c`` (each pass begins with ``follow``)."""
    passes: list[float] = []
    follow = c.follower.follow

    async def counted() -> bool:
        passes.append(asyncio.get_running_loop().time())
        return await follow()

    monkeypatch.setattr(c.follower, "follow", counted)
    return passes


async def test_the_joiner_makes_no_pass_while_there_is_nothing_to_do(
    clusters: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a healthy cluster with a configured address the joiner sleeps: no pass a second.
    A failed member wakes it at once, and it then tries every FAST_INTERVAL again."""
    a, b = await clusters("a"), await clusters("b")
    await a.node.join([("127.0.0.1", b.node.port)])
    await async_wait_for(lambda: a.peers() == 1 and a.peer_store.pending, 5, "a joined b")
    passes = count_passes(a, monkeypatch)
    joiner = asyncio.create_task(a.run_joiner())
    try:
        await async_wait_for(lambda: passes and a.peer_store.writes == 1, 2, "the first pass")
        quiet_until = asyncio.get_running_loop().time() + 3 * FAST_INTERVAL
        while asyncio.get_running_loop().time() < quiet_until:
            await asyncio.sleep(0.05)
        assert len(passes) == 1  # were it on a clock: four
        with socket.socket() as closed:  # a port nobody listens on: refused at once
            closed.bind(("127.0.0.1", 0))
            gone = closed.getsockname()
        a.rejoiner.member_failed("c", gone, asyncio.get_running_loop().time())
        await async_wait_for(lambda: a.rejoiner.attempts["fast", "no_answer"] >= 1, 2, "c tried")
        await async_wait_for(lambda: len(passes) >= 4, 4 * FAST_INTERVAL, "a pass a second")
    finally:
        joiner.cancel()
        await asyncio.gather(joiner, return_exceptions=True)


async def test_peers_to_save_wake_the_joiner_once_when_the_write_is_allowed(
    clusters: MakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A changed peer set that came too soon after the last write waits for the store's
    interval: the joiner sleeps until then and writes, instead of a pass a second."""
    a, b = await clusters("a"), await clusters("b")
    await a.node.join([("127.0.0.1", b.node.port)])
    await async_wait_for(lambda: a.peers() == 1 and a.peer_store.pending, 5, "a joined b")
    a.peer_store.min_interval = 3 * FAST_INTERVAL
    passes = count_passes(a, monkeypatch)
    joiner = asyncio.create_task(a.run_joiner())
    try:
        await async_wait_for(lambda: passes and a.peer_store.writes == 1, 2, "b saved")
        assert a.peer_store.note([Peer("b", "127.0.0.1", b.node.port), Peer("c", "x", 1)])
        a.rejoiner.poke()
        await async_wait_for(lambda: a.peer_store.writes == 2, 6 * FAST_INTERVAL, "saved")
        assert len(passes) <= 3, passes  # first, poked, the write's; on a clock: 4 or more
        assert not a.peer_store.pending
    finally:
        joiner.cancel()
        await asyncio.gather(joiner, return_exceptions=True)
