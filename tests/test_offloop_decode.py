"""Large replication messages are decoded off the event loop and delivered decoded, in
order; malformed ones are delivered as the decode error the replicator counts; small
ones and other messages stay on the loop (agent/shell/offloop_decode.py)."""

from __future__ import annotations

import asyncio
import threading

from agent.crdt.hlc import HLC
from agent.domain import parse_batch
from agent.membership import UserMessage
from agent.node import State, encode_delta
from agent.node.replication import (
    KIND_DELTA,
    REDUNDANT_CHECK_MIN,
    ReplicationDecodeError,
    ReplicationMessage,
    Replicator,
    encode_message,
)
from agent.shell.offloop_decode import THRESHOLD, OffLoopDecoder


def big_message(n: int) -> bytes:
    st = State("a")
    specs = parse_batch([{"id": f"o{i}", "url": f"http://127.0.0.1:9/{i}"} for i in range(n)])
    clock = HLC("a")
    delta = st.declare_many([(s, clock.now(1_000_000)) for s in specs], "a", "api")
    assert delta is not None
    return encode_message(KIND_DELTA, "a", encode_delta(delta))


async def test_large_messages_are_decoded_on_a_thread_and_delivered_in_order() -> None:
    got: list[tuple[bytes, ReplicationMessage | ReplicationDecodeError, str]] = []

    def deliver(ev: object, msg: ReplicationMessage | ReplicationDecodeError) -> None:
        assert isinstance(ev, UserMessage)
        got.append((ev.payload, msg, threading.current_thread().name))

    decoder = OffLoopDecoder(deliver)
    task = asyncio.create_task(decoder.run())
    try:
        big = big_message(1000)
        assert len(big) > THRESHOLD
        broken = big[:-100]  # truncated: a decode error, delivered as such
        small = big_message(1)
        assert decoder.offer(UserMessage(big, None)) is True
        assert decoder.offer(UserMessage(broken, None)) is True
        assert decoder.offer(UserMessage(small, None)) is False  # decoded on the loop as before
        assert decoder.offer(UserMessage(b"\x01" * THRESHOLD, None)) is False  # not replication
        async with asyncio.timeout(30):
            while len(got) < 2:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert [g[0] for g in got] == [big, broken]
    ok, bad = got[0][1], got[1][1]
    assert isinstance(ok, ReplicationMessage) and len(ok.delta) == 1000
    assert isinstance(bad, ReplicationDecodeError)
    assert {g[2] for g in got} == {threading.current_thread().name}  # delivered on the loop
    # the replicator takes both as if it had decoded them itself
    r = Replicator(State("b"))
    assert len(r.handle_event(UserMessage(big, None), ok)) == 1000
    assert r.handle_event(UserMessage(broken, None), bad) == set()
    assert r.counters.bad_input == 1


def test_a_copy_holding_nothing_new_is_dropped_without_decoding() -> None:
    """A batch reaches a node several times (gossip pass-on, anti-entropy): a copy whose
    causal context this replica already holds is counted redundant and not decoded."""
    big = big_message(1000)
    r = Replicator(State("b"))
    assert r.holds_all_of(big) is False  # new to b
    assert len(r.handle_event(UserMessage(big, None))) == 1000
    assert r.holds_all_of(big) is True  # the same batch again: nothing new
    assert r.counters.redundant == 1
    assert r.holds_all_of(big[:-100]) is False  # damaged: the full decode reports it
    hello = encode_message(KIND_DELTA, "a", encode_delta(State("a").crdt))
    assert r.holds_all_of(hello) is False  # a hello (empty): handled in full

    delivered: list[object] = []
    decoder = OffLoopDecoder(lambda ev, msg: delivered.append(msg), r.holds_all_of)
    assert decoder.offer(UserMessage(big, None)) is True
    assert decoder.skipped == 1 and decoder.queue.empty() and delivered == []


def test_a_medium_copy_on_the_loop_is_told_redundant_from_its_context_alone() -> None:
    """Under THRESHOLD a message is decoded on the loop, but from REDUNDANT_CHECK_MIN
    bytes a copy holding nothing new is still told from its context: every delta reaches
    a node once per peer passing it on, and decoding each copy validated every spec."""
    medium = big_message(60)
    assert REDUNDANT_CHECK_MIN <= len(medium) < THRESHOLD
    r = Replicator(State("b"))
    assert len(r.handle_event(UserMessage(medium, None))) == 60
    r.outputs()
    assert r.handle_event(UserMessage(medium, None)) == set()
    assert r.counters.redundant == 1 and r.outputs() == []
    # proof that the copy's entries are never read: one whose specs would fail
    # validation, under an intact context, is a redundant copy too, not bad input
    damaged = medium.replace(b"http://127.0.0.1:9/", b"ftp://127.0.0.1:9/x")
    assert damaged != medium
    assert r.handle_event(UserMessage(damaged, None)) == set()
    assert r.counters.redundant == 2 and r.counters.bad_input == 0
    # and a new message of that size is decoded (and validated) in full
    fresh = Replicator(State("c"))
    assert fresh.handle_event(UserMessage(damaged, None)) == set()
    assert fresh.counters.bad_input == 1
