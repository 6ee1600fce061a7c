"""Flap damping (agent/node/flaps.py): the pure rule, then in the node core: a member
that keeps dying and coming back is held out of placement, its origins staying with
the owners that took them over, and taken back when the hold ends."""

from __future__ import annotations

from agent.membership.member import Member as GossipMember
from agent.membership.messages import NodeState
from agent.node.flaps import FlapDamping
from tests.test_node_core import answer_from, core, member, spec


def test_the_second_death_in_the_window_holds_the_next_return() -> None:
    f = FlapDamping(window=300.0, flaps=2, hold=30.0, hold_max=100.0)
    assert f.update("b", True, False, 0.0) is None  # first seen: a baseline
    assert f.update("b", False, True, 10.0) is None  # death 1
    assert f.update("b", True, False, 12.0) is None  # back: the first death is free
    assert f.update("b", False, True, 20.0) is None  # death 2
    assert f.update("b", True, False, 22.0) == 52.0  # back: held 30 s
    assert f.held("b", 51.9) and not f.held("b", 52.0)
    assert f.held_members() == {"b": 52.0} and f.holds == 1
    # while held, more deaths and returns change nothing
    assert f.update("b", False, True, 30.0) is None  # death 3
    assert f.update("b", True, False, 31.0) is None
    assert f.next_expiry() == 52.0
    assert not f.expire(51.0) and f.expire(52.0) and f.next_expiry() is None
    # death 4 with 3 before it in the window: held twice as long, capped at hold_max
    f.update("b", False, True, 60.0)
    assert f.update("b", True, False, 61.0) == 61.0 + 100.0  # 30 * 2**2 = 120 > 100


def test_old_deaths_and_leaves_do_not_count() -> None:
    f = FlapDamping(window=300.0, flaps=2, hold=30.0)
    f.update("b", True, False, 0.0)
    f.update("b", False, True, 10.0)  # death 1
    f.update("b", True, False, 11.0)
    f.update("b", False, False, 20.0)  # a leave (or lost proof): not a death
    assert f.update("b", True, False, 21.0) is None
    f.update("b", False, True, 400.0)  # death 2, but death 1 is out of the window
    assert f.update("b", True, False, 401.0) is None
    f.forget({"c"})
    assert f.held_members() == {} and f.update("b", True, False, 402.0) is None  # anew


def test_a_flapping_member_is_held_out_of_placement_then_taken_back() -> None:
    a = core("a")
    ids = [f"o{i}" for i in range(40)]
    a.start([spec(o) for o in ids], now=0.0, wall=1000.0, alone=True)
    a.drain()

    def members(b: NodeState) -> list[GossipMember]:
        return [member("a"), member("b", b)]

    def b_owns() -> set[str]:
        return {o for o in ids if a.owners(o) == ("b",)}

    now = 1.0
    a.members_changed(members(NodeState.ALIVE), now, 1000.0 + now)
    answer_from(a, "b", now, members(NodeState.ALIVE))
    share = b_owns()
    assert share
    for _ in range(2):  # death, return; death, return
        now += 5.0
        a.members_changed(members(NodeState.DEAD), now, 1000.0 + now)
        assert not b_owns()
        now += 1.0
        a.members_changed(members(NodeState.ALIVE), now, 1000.0 + now)
        answer_from(a, "b", now, members(NodeState.ALIVE))  # proves itself again
    assert not b_owns()  # the second return is held: a keeps b's origins
    assert a.flaps.held_members() == {"b": now + 30.0}
    assert a.next_deadline() is not None and a.next_deadline() <= now + 30.0
    a.tick(now + 29.0, 1029.0 + now, {"a", "b"})
    assert not b_owns()
    a.tick(now + 30.0, 1030.0 + now, {"a", "b"})
    assert b_owns() == share  # taken back: the same origins as before
