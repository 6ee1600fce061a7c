"""Hostile input to the protocol core and to a live node: counted, never raised.

The wire fuzz (test_wire_fuzz.py) proves the decoder only ever raises DecodeError.
This file goes one layer up: decoded-but-hostile messages (nonsense incarnations,
addresses, versions, names, push/pull states) into the core, and mutated packets
over a real UDP socket into a running node, which must keep answering pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.membership.codec import decode_packet, encode_packet
from agent.membership.messages import (
    AckResp,
    Alive,
    Dead,
    IndirectPingReq,
    Message,
    NackResp,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)
from agent.membership.protocol import Membership
from agent.membership.transport import MembershipNode

from .test_wire_fuzz import _packet

names = st.sampled_from(["a", "b", "c", "", "x" * 300, "\udcff", "n\x00ul"])
u32 = st.integers(min_value=0, max_value=2**32 - 1)
addrs = st.sampled_from([b"", b"\x7f\x00\x00\x01", b"\x0a\x00\x00\x02", b"\x00" * 16, b"abc"])
ports = st.integers(min_value=0, max_value=65535)
vsns = st.binary(max_size=8) | st.just(bytes([1, 5, 2, 2, 5, 5]))

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, u32, names, addrs, ports, names),
    st.builds(IndirectPingReq, u32, addrs, ports, names, st.booleans(), addrs, ports, names),
    st.builds(AckResp, u32, st.binary(max_size=32)),
    st.builds(NackResp, u32),
    st.builds(Suspect, u32, names, names),
    st.builds(Alive, u32, names, addrs, ports, st.binary(max_size=64), vsns),
    st.builds(Dead, u32, names, names),
    st.builds(UserMsg, st.binary(max_size=64)),
)
push_pulls = st.builds(
    PushPull,
    st.lists(
        st.builds(
            PushNodeState,
            names,
            addrs,
            ports,
            st.binary(max_size=16),
            u32,
            st.integers(min_value=-3, max_value=9),
            vsns,
        ),
        max_size=6,
    ).map(tuple),
    st.binary(max_size=32),
    st.booleans(),
)


def consistent(m: Membership) -> None:
    assert {n.name for n in m.nodes} == set(m.node_map)
    assert m.node_map[m.name].state_name == "alive"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(messages, push_pulls), min_size=1, max_size=40), st.integers(0, 10**6))
def test_core_survives_any_message_sequence(msgs: list[Message], seed: int) -> None:
    m = Membership("a", "127.0.0.1", 7946, rng=random.Random(seed))
    now = 0.0
    m.start(now)
    for msg in msgs:
        now += 0.05
        if isinstance(msg, PushPull):
            reply = m.handle_stream(msg, ("10.0.0.9", 7946), now)
            assert isinstance(reply, PushPull)
            m.stream_result(999, msg, None, now)  # an unknown stream id is ignored
        else:
            m.handle_message(msg, ("10.0.0.9", 7946), now)
        m.handle_timer(now)
        for p in m.packets_to_send():
            # whatever the core sends must itself be valid on the wire
            assert decode_packet(encode_packet(p.messages)).problems == ()
        m.streams_to_open()
        m.events()
        consistent(m)
    m.handle_timer(now + 120)  # every pending timer fires without error
    consistent(m)


async def test_live_node_survives_mutated_packets() -> None:
    """20,000 mutated packets over real UDP; the node still answers a ping after."""
    node = MembershipNode("victim", ("127.0.0.1", 0))
    await node.start()
    rng = random.Random(1234)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        sent = 0
        for i in range(20_000):
            data, _ = _packet(rng)
            with contextlib.suppress(BlockingIOError):
                sock.sendto(data[:65000], ("127.0.0.1", node.port))
                sent += 1
            if i % 100 == 99:  # pace ourselves: wait (bounded) for the node to read
                deadline = loop.time() + 2
                while node.counters.packets_in < sent - 20 and loop.time() < deadline:
                    await asyncio.sleep(0.001)
        assert node.counters.packets_in >= sent * 0.9
        assert sum(node.counters.bad_input.values()) > 1000
        # the node survives a decoder bug by design (logged, counted apart): the fuzz
        # must still fail on one
        assert "internal-error" not in node.counters.bad_input, node.counters.bad_input
        # still healthy: a ping (from a fresh socket, whose buffer the flood's replies
        # have not filled) gets an ack
        ping = encode_packet([Ping(77, "victim", b"", 0, "")])
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.setblocking(False)
        try:
            probe.sendto(ping, ("127.0.0.1", node.port))
            reply = await asyncio.wait_for(loop.sock_recv(probe, 65536), 5)
        finally:
            probe.close()
        assert any(isinstance(x, AckResp) and x.seq_no == 77 for x in decode_packet(reply).messages)
        assert [m.state_name for m in node.members() if m.name == "victim"] == ["alive"]
    finally:
        sock.close()
        await node.stop()
