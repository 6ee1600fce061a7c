"""The incarnation a node announces is persisted off the loop (transport.py): each start
announces one above the last, and the newest value is on disk once stop returns, even
when several changes come faster than the disk writes them."""

from __future__ import annotations

from pathlib import Path

from agent.membership import MembershipNode
from agent.membership.transport import read_incarnation


async def _start_stop(path: Path) -> int:
    node = MembershipNode("n", ("127.0.0.1", 0), incarnation_file=path)
    await node.start()
    announced = node.endpoint.incarnation if node.endpoint else -1
    await node.stop()
    return announced


async def test_each_start_announces_one_above_the_last_and_persists_it(tmp_path: Path) -> None:
    path = tmp_path / "incarnation"
    first = await _start_stop(path)
    assert read_incarnation(path) == first == 1
    second = await _start_stop(path)
    assert second == 2 and read_incarnation(path) == 2


async def test_the_newest_of_quick_changes_is_what_stays(tmp_path: Path) -> None:
    path = tmp_path / "incarnation"
    node = MembershipNode("n", ("127.0.0.1", 0), incarnation_file=path)
    await node.start()
    for value in (5, 6, 7, 8):  # faster than the writes (each is two fsyncs)
        node._persist_incarnation(value)
    await node.flush_incarnation()
    assert read_incarnation(path) == 8
    node._persist_incarnation(9)
    await node.stop()
    assert read_incarnation(path) == 9
