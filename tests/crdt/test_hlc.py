"""The hybrid logical clock: monotonic whatever the physical clock does, and deaf to
peers whose clocks are absurdly far ahead."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.crdt import HLC, Timestamp
from agent.crdt.hlc import DAY_MS

YEAR_MS = 365 * DAY_MS
NOW_2026 = 1_780_000_000_000

# physical readings: sane times, 1970 after a reboot without RTC, jumps of years
physical = st.one_of(
    st.integers(NOW_2026 - 10_000, NOW_2026 + 10_000),
    st.integers(0, 10_000),
    st.integers(NOW_2026 + YEAR_MS, NOW_2026 + 20 * YEAR_MS),
    st.integers(-(10**6), 0),
)
remote = st.builds(
    Timestamp,
    st.one_of(physical, st.integers(0, 2**62)),
    st.integers(0, 2**32 + 5),
    st.sampled_from(["p", "q"]),
)
events = st.lists(st.tuples(st.booleans(), physical, remote), max_size=80)


@given(events)
def test_never_goes_backwards(evs: list[tuple[bool, int, Timestamp]]) -> None:
    clock = HLC("n")
    last = Timestamp(-1, 0, "n")
    for local, pt, rts in evs:
        ts = clock.now(pt) if local else clock.update(rts, pt)
        if ts is None:
            continue
        assert ts > last
        assert ts.node == "n"
        if not local:
            assert (ts.wall_ms, ts.logical) > (rts.wall_ms, rts.logical)
        last = ts
        assert clock.high_water >= ts.wall_ms


@given(events, physical)
def test_restored_clock_continues_above_its_high_water(
    evs: list[tuple[bool, int, Timestamp]], boot_pt: int
) -> None:
    clock = HLC("n")
    issued = [clock.now(pt) if local else clock.update(r, pt) for local, pt, r in evs]
    reborn = HLC("n", high_water=clock.high_water)
    first = reborn.now(boot_pt)  # e.g. a boot with the clock back in 1970
    assert all(first > t for t in issued if t is not None)


@given(physical, st.integers(1, 50 * YEAR_MS))
def test_refuses_remote_times_beyond_the_drift_bound(pt: int, ahead: int) -> None:
    clock = HLC("n", max_drift_ms=DAY_MS)
    before = clock.now(pt)
    bound = max(pt, before.wall_ms) + DAY_MS
    far = Timestamp(bound + ahead, 0, "p")
    assert clock.update(far, pt) is None
    assert clock.rejected == 1
    assert clock.now(pt) < far  # not adopted
    near = Timestamp(bound, 3, "p")
    got = clock.update(near, pt)
    assert got is not None and got > near and clock.rejected == 1


def test_a_pi_booting_in_1970_with_a_high_water_does_not_issue_1970_times() -> None:
    synced = HLC("n")
    t = synced.now(NOW_2026)
    rebooted = HLC("n", high_water=synced.high_water)
    assert rebooted.now(5_000) > t  # the RTC-less boot: physical clock says 1970
    assert rebooted.update(Timestamp(NOW_2026 + 60_000, 0, "p"), 6_000) is not None


def test_a_fresh_pi_in_1970_refuses_to_be_dragged_but_orders_below_the_fleet() -> None:
    fresh = HLC("n")
    assert fresh.update(Timestamp(NOW_2026, 0, "p"), 1_000) is None
    assert fresh.now(1_000) < Timestamp(NOW_2026, 0, "p")
    # once NTP syncs, it jumps forward and stays there
    synced = fresh.now(NOW_2026 + 5)
    assert synced.wall_ms == NOW_2026 + 5 and fresh.now(1_000) > synced


def test_logical_overflow_nudges_the_wall_clock() -> None:
    clock = HLC("n")
    ts = clock.update(Timestamp(1000, 0xFFFF_FFFF, "p"), 1000)
    assert ts is not None and ts.wall_ms == 1001 and ts.logical == 0
