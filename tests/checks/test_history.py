"""The latency history behind the dashboard's sparklines: pure, fed (origin, latency, ok,
now), so bucketing, bounds and eviction are checked with a clock the test sets."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checks.history import CAPACITY, MAX_MS, LatencyHistory


def test_points_are_the_mean_of_each_minute_oldest_first() -> None:
    h = LatencyHistory()
    t0 = 6000.0  # the start of bucket 100
    h.add("shop", 0.010, True, t0 + 1)
    h.add("shop", 0.030, True, t0 + 59)  # same minute: mean 20 ms
    h.add("shop", 0.100, True, t0 + 60)  # the next
    s = h.series("shop", t0 + 61)
    assert s is not None
    assert len(s.ms) == 60
    assert s.ms[-2:] == [20, 100] and s.ms[:-2] == [None] * 58
    assert s.failed == []
    assert h.window_end(t0 + 61) == t0 + 120


def test_a_failed_check_marks_its_minute() -> None:
    h = LatencyHistory()
    h.add("shop", 0.010, True, 0.0)
    h.add("shop", 0.250, False, 30.0)  # a timeout: its latency counts in the mean too
    h.add("shop", 0.012, True, 60.0)
    s = h.series("shop", 60.0)
    assert s is not None
    assert s.ms[-2:] == [130, 12]
    assert s.failed == [58]


def test_minutes_without_a_check_are_empty_and_the_window_slides() -> None:
    h = LatencyHistory(points=5)
    for minute in (0, 1, 4):
        h.add("o", 0.001 * (minute + 1), True, minute * 60.0)
    s = h.series("o", 4 * 60.0)
    assert s is not None and s.ms == [1, 2, None, None, 5]
    # later: the window moves on, with no new check
    s = h.series("o", 6 * 60.0)
    assert s is not None and s.ms == [None, None, 5, None, None]
    # a check after a gap longer than the window: only the new point remains
    h.add("o", 0.007, True, 20 * 60.0)
    s = h.series("o", 20 * 60.0)
    assert s is not None and s.ms == [None, None, None, None, 7]


def test_the_ring_reuses_places_without_leaking_old_points() -> None:
    h = LatencyHistory(points=3)
    for minute in range(10):
        h.add("o", minute / 1000, True, minute * 60.0)
        s = h.series("o", minute * 60.0)
        assert s is not None
        want = [m if m >= 0 else None for m in range(minute - 2, minute + 1)]
        assert s.ms == want, minute


def test_latency_is_capped_and_never_negative() -> None:
    h = LatencyHistory()
    h.add("slow", 3600.0, False, 0.0)
    h.add("odd", -1.0, True, 0.0)  # a clock quirk must not underflow
    assert h.series("slow", 0.0).ms[-1] == MAX_MS  # type: ignore[union-attr]
    assert h.series("odd", 0.0).ms[-1] == 0  # type: ignore[union-attr]


def test_an_origin_not_fed_for_a_window_is_dropped() -> None:
    h = LatencyHistory(points=60)
    h.add("old", 0.01, True, 0.0)
    h.add("new", 0.01, True, 0.0)
    assert h.series("old", 59 * 60.0) is not None
    assert h.series("old", 60 * 60.0) is None  # out of the window, even before a sweep
    h.add("new", 0.01, True, 60 * 60.0)  # the clock passes it: swept from memory
    assert "old" not in h and "new" in h and len(h) == 1


def test_at_capacity_the_least_recently_fed_origin_goes() -> None:
    h = LatencyHistory(capacity=3)
    for i, name in enumerate(("a", "b", "c")):
        h.add(name, 0.01, True, i * 60.0)
    h.add("a", 0.02, True, 3 * 60.0)  # a is fed again: b is now the stalest
    h.add("d", 0.01, True, 3 * 60.0)
    assert set(h.origins()) == {"c", "a", "d"}
    assert h.evicted == 1
    # its slot was reused, with nothing of b left in it
    s = h.series("d", 3 * 60.0)
    assert s is not None and s.ms[:-1] == [None] * 59


def test_forget_drops_an_origin_and_frees_its_slot() -> None:
    h = LatencyHistory()
    h.add("gone", 0.01, True, 0.0)
    h.forget(["gone", "never-seen"])
    assert "gone" not in h and h.series("gone", 0.0) is None
    h.add("next", 0.02, True, 0.0)
    assert len(h._sum) == 1  # the slot was reused, the arrays did not grow


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 400), st.booleans(), st.integers(0, 40)),
        max_size=60,
    )
)
def test_matches_a_plain_model(events: list[tuple[int, int, bool, int]]) -> None:
    """Against a dict-of-lists model: the same points for any feed in time order."""
    h = LatencyHistory(capacity=10, points=8, step=10.0)
    model: dict[str, dict[int, list[tuple[int, bool]]]] = {}
    now = 0.0
    for origin_n, ms, ok, dt in events:
        now += dt
        origin = f"o{origin_n}"
        h.add(origin, ms / 1000, ok, now)
        model.setdefault(origin, {}).setdefault(int(now // 10), []).append((ms, ok))
    end = int(now // 10)
    for origin, buckets in model.items():
        want = [
            sum(m for m, _ in buckets[b]) // len(buckets[b]) if b in buckets else None
            for b in range(end - 7, end + 1)
        ]
        failed = [
            i
            for i, b in enumerate(range(end - 7, end + 1))
            if any(not ok for _, ok in buckets.get(b, []))
        ]
        s = h.series(origin, now)
        if all(w is None for w in want):
            assert s is None
        else:
            assert s is not None and (s.ms, s.failed) == (want, failed), origin


@pytest.mark.parametrize("origins", [CAPACITY])
def test_memory_at_the_cap_is_small(origins: int) -> None:
    """At the cap (100,000 origins, 60 one-minute buckets each, every bucket filled) the
    history holds under 24 MB: measured with tracemalloc, the origin ids excluded (they
    are the catalogue's own strings)."""
    ids = [f"origin-{i:06d}.example" for i in range(origins)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        h = LatencyHistory()
        for minute in range(61):  # every origin moved to a new bucket, one filling
            now = minute * 60.0
            for origin in ids[:: 1 if minute in (0, 60) else 997]:
                h.add(origin, 0.123, minute % 2 == 0, now)
        used, peak = (m - before for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert len(h) == origins and h.evicted == 0
    per_origin = used / origins
    print(
        f"\nlatency history: {used / 1e6:.1f} MB at {origins:,} origins ({per_origin:.0f} B"
        f" each), peak {peak / 1e6:.1f} MB"
    )
    assert used < 24e6 and peak < 32e6, (used, peak)
    # and the next origin takes the place of the stalest, not more memory
    h.add("one-more", 0.01, True, 3600.0)
    assert len(h) == origins and h.evicted == 1
