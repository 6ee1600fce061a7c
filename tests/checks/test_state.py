"""The rise/fall state machine and the scheduling helpers: pure, no sockets, no clock."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.checks.state import (
    JITTER,
    OriginState,
    ProbeResult,
    Status,
    Transition,
    initial_delay,
    jittered,
)

from .conftest import make_spec


def ok(at: float = 0.0) -> ProbeResult:
    return ProbeResult(True, 0.01, "status 200", at, status_code=200)


def fail(at: float = 0.0) -> ProbeResult:
    return ProbeResult(False, 0.5, "status 500 (expected 200)", at, status_code=500)


def run(state: OriginState, script: str) -> list[tuple[int, Status, Status]]:
    """Feed '+' (success) / '-' (failure) results; return (index, old, new) per transition."""
    out = []
    for i, c in enumerate(script):
        t = state.record(ok(float(i)) if c == "+" else fail(float(i)))
        if t is not None:
            out.append((i, t.old, t.new))
    return out


def test_starts_unknown() -> None:
    s = OriginState("a")
    assert s.status is Status.UNKNOWN
    assert s.last is None and s.since is None
    assert (s.successes, s.failures) == (0, 0)


def test_first_success_decides_up_at_once() -> None:
    s = OriginState("a", rise=5, fall=5)
    t = s.record(ok(7.0))
    assert t == Transition("a", Status.UNKNOWN, Status.UP, "status 200", 0.01, 7.0)
    assert s.status is Status.UP and s.since == 7.0


def test_first_failure_decides_down_at_once() -> None:
    s = OriginState("a", rise=5, fall=5)
    t = s.record(fail(3.0))
    assert t == Transition("a", Status.UNKNOWN, Status.DOWN, "status 500 (expected 200)", 0.5, 3.0)
    assert s.status is Status.DOWN and s.failures == 1


def test_rise_2_fall_3_scripted_flapping() -> None:
    s = OriginState("a", rise=2, fall=3)
    #        idx: 0 1 2 3 4 5 6 7 8 9 10 11 12 13
    transitions = run(s, "+--+---+-++---")
    assert transitions == [
        (0, Status.UNKNOWN, Status.UP),  # first result decides
        (6, Status.UP, Status.DOWN),  # third consecutive failure (4, 5, 6); 1-2 were reset by 3
        (10, Status.DOWN, Status.UP),  # second consecutive success (9, 10); 7 was reset by 8
        (13, Status.UP, Status.DOWN),  # failures 11, 12, 13
    ]
    assert s.since == 13.0


def test_alternating_results_never_flip_after_the_first() -> None:
    s = OriginState("a", rise=2, fall=2)
    assert run(s, "+-+-+-+-+-+-") == [(0, Status.UNKNOWN, Status.UP)]
    s = OriginState("b", rise=2, fall=2)
    assert run(s, "-+-+-+-+-+-+") == [(0, Status.UNKNOWN, Status.DOWN)]


def test_rise_fall_1_follow_every_change() -> None:
    s = OriginState("a", rise=1, fall=1)
    assert [i for i, _, _ in run(s, "+-+--++")] == [0, 1, 2, 3, 5]


def test_streaks_and_last_result_are_tracked() -> None:
    s = OriginState("a", rise=3, fall=3)
    run(s, "++-")
    assert (s.successes, s.failures) == (0, 1)
    assert s.last is not None and not s.last.ok
    s.record(ok())
    assert (s.successes, s.failures) == (1, 0)


def test_tls_expiry_days_kept_from_the_last_result_that_had_one() -> None:
    s = OriginState("a")
    s.record(ProbeResult(True, 0.01, "status 200", 1.0, 200, tls_expiry_days=29.5))
    s.record(ProbeResult(False, 0.01, "timeout after 2s", 2.0))
    assert s.tls_expiry_days == 29.5


def test_rise_and_fall_can_change_without_losing_status() -> None:
    s = OriginState("a", rise=5, fall=5)
    run(s, "+----")
    assert s.status is Status.UP
    s.fall = 2
    assert s.record(fail()) is not None and s.status is Status.DOWN


def test_rise_and_fall_must_be_positive() -> None:
    with pytest.raises(ValueError):
        OriginState("a", rise=0)


@given(
    st.lists(st.booleans(), min_size=1, max_size=60),
    st.integers(1, 5),
    st.integers(1, 5),
)
def test_transitions_follow_streaks(results: list[bool], rise: int, fall: int) -> None:
    """Property: every flip ends a full streak; a full streak always leaves that status."""
    s = OriginState("p", rise=rise, fall=fall)
    for i, r in enumerate(results):
        t = s.record(ok(i) if r else fail(i))
        assert s.status is not Status.UNKNOWN
        tail_ok = i + 1 >= rise and all(results[i + 1 - rise : i + 1])
        tail_fail = i + 1 >= fall and not any(results[i + 1 - fall : i + 1])
        if t is not None and i > 0:
            assert (t.new is Status.UP and tail_ok) or (t.new is Status.DOWN and tail_fail)
            assert t.new is not t.old
        if tail_ok:
            assert s.status is Status.UP
        if tail_fail:
            assert s.status is Status.DOWN


# --- scheduling ----------------------------------------------------------------------------


def test_next_delay_uses_interval_up_and_unknown_and_down_interval_down() -> None:
    spec = make_spec("http://x/", interval=10.0, down_interval=2.0)
    rng = random.Random(1)
    s = OriginState.for_spec(spec)
    unknown = [s.next_delay(spec, rng) for _ in range(500)]
    s.record(ok())
    up = [s.next_delay(spec, rng) for _ in range(500)]
    s.record(fail())
    s.record(fail())
    s.record(fail())
    assert s.status is Status.DOWN
    down = [s.next_delay(spec, rng) for _ in range(500)]
    for delays, base in ((unknown, 10.0), (up, 10.0), (down, 2.0)):
        assert all(base * (1 - JITTER) <= d <= base * (1 + JITTER) for d in delays)
        assert min(delays) < base * 0.95 and max(delays) > base * 1.05  # really jittered
        assert statistics.mean(delays) == pytest.approx(base, rel=0.02)


def test_down_interval_defaults_to_interval() -> None:
    spec = make_spec("http://x/", interval=4.0)
    s = OriginState.for_spec(spec)
    s.record(fail())
    assert all(3.6 <= s.next_delay(spec, random.Random(i)) <= 4.4 for i in range(100))


def test_jitter_is_deterministic_given_the_rng() -> None:
    a = [jittered(5.0, r) for r in [random.Random(42)] for _ in range(20)]
    b = [jittered(5.0, r) for r in [random.Random(42)] for _ in range(20)]
    assert a == b and len(set(a)) == 20


def test_initial_delay_is_stable_and_within_the_interval() -> None:
    spec = make_spec("http://x/", id="shop", interval=10.0)
    d = initial_delay(spec)
    assert 0.0 <= d < 10.0
    assert initial_delay(spec) == d == initial_delay(spec, "shop")
    assert initial_delay(make_spec("http://y/", id="shop", interval=10.0)) == d
    assert initial_delay(spec, "other") != d


def test_initial_delays_of_10000_origins_are_spread_uniformly() -> None:
    spec = make_spec("http://x/", interval=10.0)
    delays = sorted(initial_delay(spec, f"origin-{i}") for i in range(10_000))
    assert delays[0] >= 0.0 and delays[-1] < 10.0
    # Kolmogorov-Smirnov distance to uniform(0, 10): 0.0163 is the 1% critical value.
    ks = max(
        max(abs(d / 10.0 - i / 1e4), abs(d / 10.0 - (i + 1) / 1e4)) for i, d in enumerate(delays)
    )
    assert ks < 0.0163
    # and no instant is crowded: at most 2% of origins fire in any 1% of the interval
    buckets = [0] * 100
    for d in delays:
        buckets[int(d * 10)] += 1
    assert max(buckets) < 200
