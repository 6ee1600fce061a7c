"""The gossip tick sleeps while there is nothing to gossip, and keeps memberlist's pace.

memberlist gossips every GossipInterval (200 ms) and a tick with no broadcast waiting
sends nothing; here such a tick parks the timer instead of waking the node five times a
second for nothing. What reaches the wire must not change: a queued broadcast leaves on
the next tick (no later than one interval after it was queued, and at once after a long
idle), ticks stay at least one interval apart, and each message still gets its
retransmit limit.
"""

from __future__ import annotations

import itertools
import random

from agent.membership.messages import Alive, Dead, UserMsg
from agent.membership.protocol import Membership
from agent.membership.settings import Settings

INTERVAL = 0.2


def core_with_a_peer() -> Membership:
    # only the gossip timer runs: no probes, no push/pull
    return core_with_a_peer_settings(
        Settings(probe_interval=0, push_pull_interval=0, gossip_interval=INTERVAL)
    )


def core_with_a_peer_settings(s: Settings) -> Membership:
    core = Membership("a", "10.0.0.1", 7946, settings=s, rng=random.Random(3))
    core.start(0.0)
    core.handle_message(Alive(1, "b", bytes([10, 0, 0, 2]), 7946), ("10.0.0.2", 7946), 0.0)
    return core


def drive(core: Membership, until: float) -> list[tuple[float, bool]]:
    """Fire every timer due up to ``until``: (time, whether it sent a user message)."""
    fired: list[tuple[float, bool]] = []
    while (t := core.next_timer()) is not None and t <= until:
        core.handle_timer(t)
        packets = core.packets_to_send()
        user = any(m and m[0] == UserMsg.TYPE for p in packets for m in p.messages)
        fired.append((t, user))
    return fired


def test_an_idle_node_has_no_gossip_timer_once_its_broadcasts_are_spent() -> None:
    core = core_with_a_peer()
    fired = drive(core, 60.0)
    assert fired, "the join's broadcasts were never gossiped"
    assert fired[-1][0] < 10.0, "gossip ticks went on long after every broadcast was spent"
    assert core.next_timer() is None  # parked: nothing would wake the node
    assert len(core.broadcasts) == 0 and len(core.user_broadcasts) == 0


def test_a_broadcast_after_a_long_idle_leaves_at_once_then_on_the_interval() -> None:
    core = core_with_a_peer()
    drive(core, 60.0)
    core.queue_user_broadcast(b"hello")
    when = core.next_timer()
    assert when is not None and when <= 60.0, "a broadcast after an idle minute waited"
    fired = drive(core, 120.0)
    times = [t for t, _ in fired]
    assert fired[0] == (when, True)
    assert all(b - a >= INTERVAL - 1e-9 for a, b in itertools.pairwise(times))
    # memberlist's retransmit limit: RetransmitMult (4) x ceil(log10(2 nodes + 1)) = 4
    # transmissions, one a tick to the one peer; then the tick parked again
    assert sum(1 for _, user in fired if user) == 4
    assert core.next_timer() is None


def test_a_broadcast_queued_right_after_a_tick_waits_for_the_next_tick() -> None:
    core = core_with_a_peer()
    drive(core, 60.0)
    core.queue_user_broadcast(b"first")
    first = drive(core, 60.0 + INTERVAL / 2)  # the at-once tick
    assert first and first[0][1]
    tick = first[-1][0]
    core.queue_user_broadcast(b"second")  # queued between ticks
    when = core.next_timer()
    assert when is not None and abs(when - (tick + INTERVAL)) < 1e-9, (tick, when)


def test_a_node_alone_parks_with_its_broadcasts_queued_and_resumes_when_a_peer_comes() -> None:
    """Alone (or with only long-dead peers) a tick has nobody to send to: it parks even
    though its own alive waits in the queue, and the first live peer wakes it."""
    s = Settings(probe_interval=0, push_pull_interval=0, gossip_interval=INTERVAL)
    core = Membership("a", "10.0.0.1", 7946, settings=s, rng=random.Random(3))
    core.start(0.0)
    fired = drive(core, 30.0)
    assert len(fired) <= 1, f"a lone node ticked {len(fired)} times"
    assert core.next_timer() is None and len(core.broadcasts) > 0  # queued, parked
    core.handle_message(Alive(1, "b", bytes([10, 0, 0, 2]), 7946), ("10.0.0.2", 7946), 30.0)
    when = core.next_timer()
    assert when is not None, "a live peer did not resume gossip"
    assert when <= 30.0 + INTERVAL
    fired = drive(core, 31.0)
    assert fired and fired[0][0] == when


def drive_from(core: Membership, now: float, until: float) -> list[tuple[float, bool]]:
    """``drive`` on a clock that is at ``now``: a timer due in the past fires now, as the
    transport fires it (it resumes a parked tick due one interval after the last)."""
    fired: list[tuple[float, bool]] = []
    while (t := core.next_timer()) is not None and max(t, now) <= until:
        now = max(t, now)
        core.handle_timer(now)
        packets = core.packets_to_send()
        user = any(m and m[0] == UserMsg.TYPE for p in packets for m in p.messages)
        fired.append((now, user))
    return fired


def test_a_recently_dead_peer_is_still_gossiped_to_then_the_tick_parks() -> None:
    """memberlist gossips to the dead for gossip_to_the_dead_time (they may be back): a
    broadcast queued inside that window goes to the dead peer; one queued after it finds
    nobody, and the tick parks with it queued instead of ticking on."""
    s = Settings(
        probe_interval=0,
        push_pull_interval=0,
        gossip_interval=INTERVAL,
        gossip_to_the_dead_time=5.0,
    )
    core = core_with_a_peer_settings(s)
    core.handle_message(Dead(2, "b", "a"), ("10.0.0.2", 7946), 1.0)
    drive_from(core, 1.0, 3.0)
    core.queue_user_broadcast(b"inside the window")
    fired = drive_from(core, 3.0, 5.5)
    assert any(user for _, user in fired), "nothing sent to the recently dead peer"
    assert core.next_timer() is None
    core.queue_user_broadcast(b"after the window")
    fired = drive_from(core, 8.0, 30.0)
    assert len(fired) <= 1 and not any(user for _, user in fired)
    assert core.next_timer() is None and len(core.user_broadcasts) == 1
