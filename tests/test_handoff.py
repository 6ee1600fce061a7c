"""Handoff: make-before-break ownership for one node (issue 6, item 3)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.node.handoff import Handoff, HandoffResult
from agent.node.placement import OwnerChange

ME = "a"
INTERVALS = {"o1": 1.0, "o2": 2.5, "o3": 10.0}


def interval_of(origin: str) -> float:
    return INTERVALS.get(origin, 5.0)


def R(
    started: list[str] | None = None,
    stopped: list[str] | None = None,
    removed: list[str] | None = None,
) -> HandoffResult:
    return HandoffResult(started or [], stopped or [], removed or [])


def gained(h: Handoff, origin: str, now: float = 0.0, owners: tuple[str, ...] = (ME, "b")) -> None:
    assert h.owners_changed([OwnerChange(origin, (), owners)], now, interval_of) == R([origin])


def test_gain_starts_at_once() -> None:
    h = Handoff(ME)
    r = h.owners_changed(
        [OwnerChange("o1", ("b",), ("b", ME)), OwnerChange("o2", ("b",), ("c",))], 3.0, interval_of
    )
    assert r == R(started=["o1"])
    assert h.checking() == {"o1"} == h.owned()
    assert h.next_deadline() is None


def test_owner_reshuffle_that_keeps_me_changes_nothing() -> None:
    h = Handoff(ME)
    gained(h, "o1", owners=(ME, "b"))
    r = h.owners_changed([OwnerChange("o1", (ME, "b"), ("c", ME))], 1.0, interval_of)
    assert not r
    assert h.checking() == {"o1"}


def test_loss_drains_until_new_owners_first_observation() -> None:
    h = Handoff(ME)
    gained(h, "o3", owners=(ME, "b"))
    r = h.owners_changed([OwnerChange("o3", (ME, "b"), ("b", "c"))], 100.0, interval_of)
    assert not r  # still checked: make before break
    assert h.checking() == {"o3"}
    assert h.owned() == set()
    assert h.draining() == {"o3": 120.0}
    assert h.next_deadline() == 120.0
    # b was an owner before and after: it is a "new owner" too and must report since the loss
    assert not h.observation_arrived("o3", "c", 101.0)
    assert h.checking() == {"o3"}
    r = h.observation_arrived("o3", "b", 102.0)
    assert r == R(stopped=["o3"], removed=["o3"])
    assert h.checking() == set()
    assert h.next_deadline() is None


def test_loss_times_out_after_two_intervals() -> None:
    h = Handoff(ME)
    gained(h, "o2", owners=(ME,))
    assert not h.owners_changed([OwnerChange("o2", (ME,), ("c",))], 10.0, interval_of)
    assert h.next_deadline() == 15.0
    assert not h.tick(14.999)
    assert h.checking() == {"o2"}
    assert h.tick(15.0) == R(stopped=["o2"], removed=["o2"])
    assert h.checking() == set()
    assert not h.tick(100.0)


def test_timeout_is_also_applied_by_other_timed_inputs() -> None:
    h = Handoff(ME)
    gained(h, "o1", owners=(ME,))
    h.owners_changed([OwnerChange("o1", (ME,), ("c",))], 0.0, interval_of)
    r = h.observation_arrived("o9", "b", 2.0)  # unrelated origin, but time has passed
    assert r == R(stopped=["o1"], removed=["o1"])


def test_regain_while_draining_stays_checked() -> None:
    h = Handoff(ME)
    gained(h, "o1", owners=(ME, "b"))
    h.owners_changed([OwnerChange("o1", (ME, "b"), ("b", "c"))], 0.0, interval_of)
    r = h.owners_changed([OwnerChange("o1", ("b", "c"), ("b", ME))], 0.5, interval_of)
    assert not r  # no start, no stop, no removal
    assert h.checking() == {"o1"} == h.owned()
    assert h.next_deadline() is None
    assert not h.tick(50.0)  # the old drain deadline no longer applies
    assert not h.observation_arrived("o1", "c", 51.0)
    assert h.checking() == {"o1"}


def test_removal_of_an_origin_stops_at_once() -> None:
    h = Handoff(ME)
    gained(h, "o1")
    gained(h, "o2")
    h.owners_changed([OwnerChange("o2", (ME, "b"), ("b", "c"))], 1.0, interval_of)
    assert h.origin_removed("o1") == R(stopped=["o1"], removed=["o1"])
    assert h.origin_removed("o2") == R(stopped=["o2"], removed=["o2"])
    assert h.checking() == set()
    assert h.next_deadline() is None
    # not checked: nothing stops, but a leftover register of mine is still removed
    assert h.origin_removed("o3") == R(removed=["o3"])


def test_origin_removed_with_now_also_expires_drains() -> None:
    h = Handoff(ME)
    gained(h, "o1", owners=(ME,))
    h.owners_changed([OwnerChange("o1", (ME,), ("b",))], 0.0, interval_of)
    assert h.origin_removed("o2") == R(removed=["o2"])  # no time: the drain waits
    assert h.checking() == {"o1"}
    assert h.origin_removed("o2", 2.0) == R(stopped=["o1"], removed=["o1", "o2"])


def test_loss_to_nobody_stops_at_once() -> None:
    h = Handoff(ME)
    gained(h, "o1", owners=(ME,))
    r = h.owners_changed([OwnerChange("o1", (ME,), ())], 1.0, interval_of)
    assert r == R(stopped=["o1"], removed=["o1"])


def test_observations_from_non_owners_me_or_before_the_change_do_not_end_a_drain() -> None:
    h = Handoff(ME)
    gained(h, "o3", owners=(ME, "b"))
    h.observation_arrived("o3", "c", 9.0)  # c reports before it becomes an owner
    h.owners_changed([OwnerChange("o3", (ME, "b"), ("c", "b"))], 10.0, interval_of)
    assert not h.observation_arrived("o3", "c", 9.5)  # delivered late, made before the loss
    assert not h.observation_arrived("o3", "d", 11.0)  # not an owner
    assert not h.observation_arrived("o3", ME, 11.0)  # my own
    assert not h.observation_arrived("o3", "c", 12.0)  # b still owes its first report
    assert h.checking() == {"o3"}
    assert h.observation_arrived("o3", "b", 12.0) == R(stopped=["o3"], removed=["o3"])


def test_owners_change_again_while_draining() -> None:
    h = Handoff(ME)
    gained(h, "o3", owners=(ME,))
    h.owners_changed([OwnerChange("o3", (ME,), ("b",))], 0.0, interval_of)
    h.observation_arrived("o3", "c", 1.0)  # c is not an owner yet, but it did report
    # b dies before reporting; c and d take over: the deadline stays at 0 + 2 * 10
    assert not h.owners_changed([OwnerChange("o3", ("b",), ("c", "d"))], 5.0, interval_of)
    assert h.next_deadline() == 20.0
    assert h.observation_arrived("o3", "d", 6.0) == R(stopped=["o3"], removed=["o3"])


def test_owners_change_to_reported_owners_ends_the_drain() -> None:
    h = Handoff(ME)
    gained(h, "o3", owners=(ME,))
    h.owners_changed([OwnerChange("o3", (ME,), ("b",))], 0.0, interval_of)
    h.observation_arrived("o3", "c", 1.0)
    r = h.owners_changed([OwnerChange("o3", ("b",), ("c",))], 2.0, interval_of)
    assert r == R(stopped=["o3"], removed=["o3"])


def test_gain_and_loss_in_one_batch_report_the_net_effect() -> None:
    h = Handoff(ME)
    changes = [OwnerChange("o1", (), (ME,)), OwnerChange("o1", (ME,), ())]
    assert h.owners_changed(changes, 0.0, interval_of) == R(removed=["o1"])
    assert h.checking() == set()


def test_bad_interval_is_refused() -> None:
    h = Handoff(ME)
    gained(h, "o1", owners=(ME,))
    with pytest.raises(ValueError):
        h.owners_changed([OwnerChange("o1", (ME,), ("b",))], 0.0, lambda o: float("nan"))


# --- property -------------------------------------------------------------------------------

NODES = (ME, "b", "c", "d")
ORIGINS = tuple(INTERVALS)

owner_sets = st.lists(st.sampled_from(NODES), unique=True, max_size=3).map(tuple)
ops = st.one_of(
    st.tuples(st.just("change"), st.sampled_from(ORIGINS), owner_sets),
    st.tuples(st.just("observe"), st.sampled_from(ORIGINS), st.sampled_from(NODES)),
    st.tuples(st.just("tick")),
    st.tuples(st.just("remove"), st.sampled_from(ORIGINS)),
)
steps = st.lists(st.tuples(st.sampled_from([0.0, 0.0, 0.25, 1.0, 2.5, 7.0]), ops), max_size=60)


@dataclass
class Model:
    """The world as the test sees it, independent of Handoff's internals."""

    owners: dict[str, tuple[str, ...]] = field(default_factory=dict)
    loss: dict[str, float] = field(default_factory=dict)  # origin -> time I last lost it
    reported: dict[str, set[str]] = field(default_factory=dict)  # observers since the loss


@settings(max_examples=400, deadline=None)
@given(steps)
def test_property_checking_is_owned_plus_bounded_drain_without_gaps(
    script: list[tuple[float, tuple[object, ...]]],
) -> None:
    """After every input (each passes ``now``; origin_removed gets it too), with owners(o)
    the latest owner tuple fed in:

    1. owned ⊆ checking: me ∈ owners(o) ⇒ o ∈ checking().
    2. bounded drain: o ∈ checking() ∧ me ∉ owners(o) ⇒ I lost o at t_loss (its latest
       owner change that dropped me), o was not removed since, and now < t_loss + 2·interval(o).
    2b. prompt drain end: o ∈ checking() ∧ me ∉ owners(o) ⇒ some owner of o other than
       me has not had an observation of o arrive since t_loss (nobody is over-checked).
    3. no gap (make before break), asserted when o is in ``stopped`` for a reason other
       than origin_removed and now < t_loss + 2·interval(o): every owner of o other than
       me has had an observation of o arrive at or after t_loss. So an early stop leaves
       o with a checker among the new owners who have reported (or with no owners at all:
       a loss to nobody stops at once); only the timeout (the partition case) can stop a
       drain before they report. Later owner changes are the new owners' own handoffs.
    4. results are exactly the diff of checking() around the call; stopped ⊆
       remove_observations; nothing in remove_observations is still checked.
    5. next_deadline() is None iff nothing drains, else min(t_loss + 2·interval(o)) over
       the draining origins (checking() minus owned-per-model).
    """
    h = Handoff(ME)
    m = Model()
    now = 0.0
    for dt, op in script:
        now += dt
        before = h.checking()
        if op[0] == "change":
            origin, new = str(op[1]), tuple(str(n) for n in op[2])  # type: ignore[attr-defined]
            old = m.owners.get(origin, ())
            if old == new:
                continue
            r = h.owners_changed([OwnerChange(origin, old, new)], now, interval_of)
            m.owners[origin] = new
            if ME in old and ME not in new:
                m.loss[origin], m.reported[origin] = now, set()
            elif ME in new:
                m.loss.pop(origin, None)
                m.reported.pop(origin, None)
        elif op[0] == "observe":
            origin, observer = str(op[1]), str(op[2])
            r = h.observation_arrived(origin, observer, now)
            if origin in m.reported:
                m.reported[origin].add(observer)
        elif op[0] == "tick":
            r = h.tick(now)
        else:
            origin = str(op[1])
            r = h.origin_removed(origin, now)
            m.owners.pop(origin, None)
            m.loss.pop(origin, None)
            m.reported.pop(origin, None)

        checking = h.checking()
        # 4. results
        assert r.started == sorted(checking - before)
        assert r.stopped == sorted(before - checking)
        assert set(r.stopped) <= set(r.remove_observations)
        assert not set(r.remove_observations) & checking
        deadlines = {}
        for o in ORIGINS:
            mine = ME in m.owners.get(o, ())
            window_open = o in m.loss and now < m.loss[o] + 2 * interval_of(o)
            # 1. owned ⊆ checking
            if mine:
                assert o in checking
            # 2. bounded drain
            if o in checking and not mine:
                assert window_open, (o, now, m)
                deadlines[o] = m.loss[o] + 2 * interval_of(o)
            if o in checking and not mine:
                # 2b. prompt drain end
                assert not {n for n in m.owners.get(o, ()) if n != ME} <= m.reported[o]
            # 3. no gap
            if o in r.stopped and op[0] != "remove" and window_open:
                others = {n for n in m.owners.get(o, ()) if n != ME}
                assert others <= m.reported[o], (o, now, m)
        # 5. next deadline
        assert h.next_deadline() == (min(deadlines.values()) if deadlines else None)
        assert h.draining() == deadlines


def test_many_observations_at_once_equal_the_same_one_by_one() -> None:
    """observations_arrived (a member change that moves thousands of origins) ends the
    same drains, with the same net result, as observation_arrived called per pair."""

    def draining() -> Handoff:
        h = Handoff(ME)
        for i in range(6):
            gained(h, f"d{i}", owners=(ME, "b"))
        h.owners_changed(
            [OwnerChange(f"d{i}", (ME, "b"), ("b", "c")) for i in range(6)], 10.0, interval_of
        )
        return h

    arrivals = [("d0", "b"), ("d0", "c"), ("d1", "b"), ("d2", "c"), ("d2", "b"), ("d3", ME)]
    one, many = draining(), draining()
    stopped: set[str] = set()
    for origin, observer in arrivals:
        stopped |= set(one.observation_arrived(origin, observer, 11.0).stopped)
    r = many.observations_arrived(arrivals, 11.0)
    assert set(r.stopped) == stopped == {"d0", "d2"}
    assert r.remove_observations == ["d0", "d2"]
    assert many.checking() == one.checking() == {"d1", "d3", "d4", "d5"}
    assert many.draining() == one.draining()
