"""The broadcast queues stay bounded and never keep what no packet can carry.

memberlist's TransmitLimitedQueue keeps a message until it has been sent its retransmit
limit; one too big for any packet is never sent, so it would stay forever, and Serf
bounds its delegate queues with Prune(MaxQueueDepth). Here: a broadcast no gossip packet
can carry is dropped (and counted) when queued, the user queue is pruned to its bound,
and push/pull repairs what was dropped.
"""

from __future__ import annotations

import random

from agent.membership.broadcast_queue import Broadcast, BroadcastQueue
from agent.membership.meta import encode_tags
from agent.membership.protocol import Event, Membership, UserMessage
from agent.membership.settings import Settings
from agent.membership.simulator import Simulator

ENCRYPTED = 29  # memberlist's encryptOverhead(1)


def bare(settings: Settings, encryption_overhead: int = ENCRYPTED) -> Membership:
    return Membership(
        "a",
        "10.0.0.1",
        7946,
        settings=settings,
        rng=random.Random(1),
        encryption_overhead=encryption_overhead,
    )


def test_a_user_broadcast_no_packet_can_carry_is_dropped_not_queued_forever() -> None:
    core = bare(Settings(udp_buffer_size=600))
    # an empty gossip packet carries 600 - 2 (compound header) - 29 (encryption) bytes of
    # parts; a user message costs 2 (its length) + 1 (its type byte) more than its payload
    done: list[int] = []
    core.queue_user_broadcast(b"x" * 567, on_finished=lambda: done.append(567))
    assert len(core.user_broadcasts) == 0, "a broadcast no packet can carry stays queued"
    assert done == [567]  # finished, as memberlist finishes what it drops
    assert core.user_broadcasts.oversized == 1
    core.queue_user_broadcast(b"x" * 566, on_finished=lambda: done.append(566))
    assert len(core.user_broadcasts) == 1 and done == [567]


def test_the_largest_user_broadcast_the_queue_accepts_goes_out_in_a_packet() -> None:
    sim = Simulator(2, seed=2, settings=Settings(udp_buffer_size=600, push_pull_interval=0))
    got: list[bytes] = []

    def on_event(name: str, ev: Event) -> None:
        if name == "n0001" and isinstance(ev, UserMessage):
            got.append(ev.payload)

    sim.on_event = on_event
    sim.join_all()
    sim.run_for(5)
    core = sim.nodes["n0000"].core
    # compound header, the encryption the simulator runs with, length and type byte
    payload = b"y" * (600 - 2 - core.encryption_overhead - 2 - 1)
    core.queue_user_broadcast(payload)
    sim.flush("n0000")
    sim.run_for(5)
    assert payload in got
    assert len(core.user_broadcasts) == 0


def test_the_user_queue_never_exceeds_serfs_max_queue_depth() -> None:
    core = bare(Settings())
    dropped: list[int] = []
    for i in range(5000):
        core.queue_user_broadcast(
            i.to_bytes(4, "big") * 8, on_finished=lambda i=i: dropped.append(i)
        )
        assert len(core.user_broadcasts) <= 4096, f"{len(core.user_broadcasts)} queued"
    # all equally fresh and long: the oldest go first (memberlist's order, from the back)
    assert dropped == list(range(5000 - 4096))
    assert core.user_broadcasts.pruned == 5000 - 4096


def test_prune_drops_the_most_transmitted_first() -> None:
    q = BroadcastQueue(4, lambda: 10, max_depth=3)
    for m in (b"old-1", b"old-2", b"old-3"):
        q.queue(Broadcast(m))
    assert q.get(2, 1000) == [b"old-3", b"old-2", b"old-1"]  # each sent once
    finished: list[bytes] = []
    for m in (b"new-1", b"new-2"):
        q.queue(Broadcast(m, on_finished=lambda m=m: finished.append(m)))
        assert len(q) <= 3
    # two of the sent ones made room; the fresh ones are kept
    kept = q.get(2, 1000)
    assert b"new-1" in kept and b"new-2" in kept and len(kept) == 3
    assert q.pruned == 2 and finished == []


def test_an_oversized_message_still_invalidates_an_older_one_about_the_same_node() -> None:
    q = BroadcastQueue(4, lambda: 10, max_message=lambda: 100)
    q.queue(Broadcast(b"alive-1", "n1"))
    q.queue(Broadcast(b"A" * 101, "n1"))  # newer news about n1, too big to send
    assert len(q) == 0 and q.oversized == 1  # the stale one is not sent in its stead


def test_the_cores_own_oversized_alive_is_dropped_and_push_pull_carries_it() -> None:
    """Big tags with a small buffer: the alive that announces them fits no packet. It is
    not kept (memberlist would keep it, unsendable, until a newer one replaced it); the
    next push/pull gives every peer the new tags."""
    settings = Settings(udp_buffer_size=512, push_pull_interval=2.0)
    sim = Simulator(3, seed=3, settings=settings)
    sim.join_all()
    sim.run_for(8)
    assert sim.converged()
    core = sim.nodes["n0000"].core
    meta = encode_tags({"role": "edge-agent", "note": "z" * 470})
    core.update_meta(meta, sim.now)
    sim.flush("n0000")
    assert len(core.broadcasts) == 0, "an alive no packet can carry stays queued"
    assert core.broadcasts.oversized == 1
    deadline = sim.now + 3 * 2.0 * 2  # push/pull to a random peer every interval
    peers = ("n0001", "n0002")
    while sim.now < deadline:
        if all(sim.nodes[p].core.node_map["n0000"].meta == meta for p in peers):
            break
        sim.run_for(0.25)
    assert all(sim.nodes[p].core.node_map["n0000"].meta == meta for p in peers)
    assert sim.converged()
