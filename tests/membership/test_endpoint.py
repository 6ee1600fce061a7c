"""The membership front door, driven by hand: bytes, timers and now in; bytes and events out.

No loop, no sockets: two endpoints pass each other their datagrams and stream bytes.
"""

from __future__ import annotations

import random

from agent.membership import (
    GossipEndpoint,
    JoinResult,
    Keyring,
    MemberEvent,
    Rejected,
    Settings,
    StreamDecoder,
    UserMessage,
    encode_stream,
)
from agent.membership.codec import encode_message, encode_packet
from agent.membership.endpoint import MAX_COMPRESSED_USER_MSG
from agent.membership.messages import ErrResp, NodeState, Ping, PushNodeState, PushPull
from agent.membership.stream import decode_stream

KEY = bytes(range(32))
A = ("10.0.0.1", 7946)
B = ("10.0.0.2", 7946)


def endpoint(name: str, addr: tuple[str, int], keyring: Keyring | None) -> GossipEndpoint:
    ep = GossipEndpoint(name, addr, keyring=keyring, settings=Settings(), rng=random.Random(1))
    ep.start(0.0)
    return ep


class Wire:
    """Moves datagrams and whole stream exchanges between endpoints, by address."""

    def __init__(self, *eps: tuple[tuple[str, int], GossipEndpoint]) -> None:
        self.at = dict(eps)
        self.events: dict[str, list[object]] = {ep.name: [] for _, ep in eps}
        self.datagrams = 0

    def pump(self, now: float) -> None:
        moved = True
        while moved:
            moved = False
            for addr, ep in self.at.items():
                for data, to in ep.datagrams_to_send(now):
                    self.datagrams += 1
                    self.at[to].receive_datagram(data, addr, now)
                    moved = True
                for out in ep.streams_to_open(now):
                    inbound = self.at[out.addr].accept_stream(addr, now)
                    inbound.receive(out.request, now)
                    out.sent(now)
                    if out.expects_reply:
                        if inbound.reply is not None:
                            out.receive(inbound.reply, now)
                        out.receive_eof(now)
                    moved = True
                evs = ep.events()
                self.events[ep.name] += evs
                moved = moved or bool(evs)

    def run(self, until: float, now: float = 0.0) -> float:
        self.pump(now)
        while True:
            due = [t for t in (ep.next_timer() for ep in self.at.values()) if t is not None]
            if not due or min(due) > until:
                return until
            now = min(due)
            for ep in self.at.values():
                ep.handle_timer(now)
            self.pump(now)


def test_two_endpoints_join_and_gossip_over_encrypted_bytes() -> None:
    a, b = endpoint("a", A, Keyring([KEY])), endpoint("b", B, Keyring([KEY]))
    wire = Wire((A, a), (B, b))
    (sid,) = a.join([B], 0.0)
    wire.run(5.0)
    assert JoinResult(sid, B, None) in wire.events["a"]
    assert [(m.name, m.state_name) for m in a.members()] == [("a", "alive"), ("b", "alive")]
    assert [(m.name, m.state_name) for m in b.members()] == [("a", "alive"), ("b", "alive")]
    # probes and gossip went as datagrams, all readable, none refused
    assert wire.datagrams > 0 and a.counters.packets_in > 0 and b.counters.packets_in > 0
    assert a.counters.bad_input == b.counters.bad_input == {}
    assert a.counters.streams_out == b.counters.streams_in >= 1  # the join, maybe a push/pull
    # a delegate message, best effort and reliable
    a.send_user(B, b"hello")
    a.send_reliable(B, b"reliable", 5.0)
    b.broadcast(b"to all")
    wire.run(7.0, now=5.0)
    got = [e.payload for e in wire.events["b"] if isinstance(e, UserMessage)]
    assert got == [b"hello", b"reliable"]
    assert b"to all" in [e.payload for e in wire.events["a"] if isinstance(e, UserMessage)]


def test_a_node_with_another_key_is_kept_out_and_counted() -> None:
    a, b = endpoint("a", A, Keyring([KEY])), endpoint("b", B, Keyring([bytes(32)]))
    wire = Wire((A, a), (B, b))
    a.join([B], 0.0)
    wire.run(3.0)
    (result,) = [e for e in wire.events["a"] if isinstance(e, JoinResult)]
    assert result.error is not None and "bad reply" in result.error
    assert b.counters.bad_input == {"decrypt_failed": 1}  # our push/pull: unreadable
    assert a.counters.bad_input == {"decrypt_failed": 1}  # its errResp: unreadable too
    assert not [e for e in wire.events["b"] if isinstance(e, MemberEvent) and e.member.name == "a"]


def test_a_bad_request_gets_an_error_reply_and_is_counted() -> None:
    b = endpoint("b", B, None)
    inbound = b.accept_stream(A, 1.0)
    inbound.receive(b"\x63garbage", 1.0)  # an unknown message type
    assert inbound.done and inbound.reply is not None
    dec = StreamDecoder()
    dec.feed(inbound.reply)
    reply = dec.next_message()
    assert isinstance(reply, ErrResp) and "unknown_type" in reply.error
    assert b.counters.bad_input == {"unknown_type": 1}
    # a ping over TCP is answered; one cut short gets nothing, and is counted
    ok = b.accept_stream(A, 1.0)
    ok.receive(encode_stream(Ping(seq_no=4, node="b"), compress=False), 1.0)
    assert ok.done and ok.reply is not None
    short = b.accept_stream(A, 1.0)
    short.receive(b"\x06", 1.0)
    assert not short.done
    short.receive_eof(1.0)
    assert short.done and short.reply is None and b.counters.bad_input["truncated"] == 1


def test_a_broken_inbound_stream_is_counted_by_kind() -> None:
    b = endpoint("b", B, None)
    for exc in (TimeoutError(), ConnectionResetError(), BrokenPipeError(), OSError(5, "EIO")):
        b.accept_stream(A, 1.0).abort(exc)
    assert b.counters.stream_errors == {"timeout": 1, "reset": 1, "broken_pipe": 1, "os_error": 1}
    assert b.counters.streams_in == 4


def test_a_rotated_keyring_applies_to_the_next_packet() -> None:
    new = bytes(range(2, 34))
    a, b = endpoint("a", A, Keyring([KEY])), endpoint("b", B, Keyring([KEY, new]))
    wire = Wire((A, a), (B, b))
    a.join([B], 0.0)
    wire.run(3.0)
    a.keyring = Keyring([new])  # b has both: still readable
    b.keyring = Keyring([new])
    wire.run(10.0, now=3.0)
    assert a.counters.bad_input == b.counters.bad_input == {}
    assert {m.state_name for m in a.members()} == {"alive"}


def refused(events: list[object]) -> list[tuple[str, tuple[str, int] | None]]:
    """The peer refusals among the events, as (kind, peer)."""
    return [(e.kind, e.peer) for e in events if isinstance(e, Rejected) and e.peer is not None]


def test_a_wrong_key_is_a_refusal_naming_the_peer_on_both_sides() -> None:
    """Issue 16 item 9: a refusal for the key reaches the shell as an event naming the
    peer, so it can be logged (rate-limited) and not only counted."""
    a, b = endpoint("a", A, Keyring([KEY])), endpoint("b", B, Keyring([bytes(32)]))
    wire = Wire((A, a), (B, b))
    a.join([B], 0.0)
    wire.run(3.0)
    assert refused(wire.events["b"]) == [("decrypt_failed", A)]
    assert refused(wire.events["a"]) == [("decrypt_failed", B)]
    assert b.counters.bad_input == {"decrypt_failed": 1}  # counted once, as before


def test_plaintext_against_encryption_is_refused_both_ways() -> None:
    a, b = endpoint("a", A, None), endpoint("b", B, Keyring([KEY]))
    wire = Wire((A, a), (B, b))
    a.join([B], 0.0)
    wire.run(3.0)
    assert refused(wire.events["b"]) == [("not_encrypted", A)]
    assert refused(wire.events["a"]) == [("encrypted_no_key", B)]
    # a plaintext datagram: refused with the peer's address (as memberlist does, a
    # datagram that does not decrypt is not told apart from one never encrypted)
    b.receive_datagram(encode_packet([encode_message(Ping(seq_no=1, node="b"))]), A, 4.0)
    assert refused(b.events()) == [("decrypt_failed", A)]


def test_an_incompatible_push_pull_is_a_refusal_naming_the_peer() -> None:
    b = endpoint("b", B, None)
    vsn = bytes([1, 5, 2, 2, 5, 9])  # delegate version 9: outside every range
    node = PushNodeState("old", bytes([10, 0, 0, 1]), 7946, b"", 1, NodeState.ALIVE, vsn)
    inbound = b.accept_stream(A, 1.0)
    inbound.receive(encode_stream(PushPull((node,), b"", True), compress=False), 1.0)
    evs = b.events()
    assert refused(evs) == [("incompatible", A)]
    assert b.counters.bad_input == {"incompatible": 1}


def test_refusals_held_between_drains_are_bounded() -> None:
    b = endpoint("b", B, Keyring([KEY]))
    plain = encode_packet([encode_message(Ping(seq_no=1, node="b"))])
    for i in range(1000):
        b.receive_datagram(plain, ("10.0.0.9", 1000 + i), 1.0)
    assert len(refused(b.events())) == 64
    assert b.counters.bad_input == {"decrypt_failed": 1000}


def test_a_large_user_message_goes_uncompressed_and_arrives_whole() -> None:
    """Compression is per message: a user message past MAX_COMPRESSED_USER_MSG (a batch
    of thousands of origins) is sent as is, since pure-Python LZW would hold the loop
    for a large part of a second at each hop; a small one is still compressed. Both
    decode to the payload sent."""
    a = endpoint("a", A, None)
    small = b"E" + bytes(range(256)) * 4
    large = b"E" + random.Random(2).randbytes(MAX_COMPRESSED_USER_MSG + 1)
    sent = []
    for payload in (small, large):
        a.send_reliable(B, payload, 1.0)
        (stream,) = a.streams_to_open(1.0)
        sent.append(stream.request)
    for raw, payload in zip(sent, (small, large), strict=True):
        msg = decode_stream(raw)
        assert getattr(msg, "payload", None) == payload
    assert sent[0][0] == 9  # compress wrapper (memberlist's compressMsg)
    assert sent[1][0] != 9 and len(sent[1]) > len(large)


def test_a_join_with_a_timeout_gives_up_then_and_never_after_tcp_timeout() -> None:
    """A reconnect attempt (agent/shell/rejoin.py) to a member that may still be cut off
    asks for a short timeout: its stream expires then, with a JoinResult, and frees its
    socket; without one (or with a longer one) the stream lives for tcp_timeout."""
    a = endpoint("a", A, None)
    short, plain, long_ = a.join([B], 0.0, 2.0), a.join([B], 0.0), a.join([B], 0.0, 60.0)
    deadlines = {s.id: s.deadline for s in a.streams_to_open(0.0)}
    tcp_timeout = Settings().tcp_timeout
    assert [deadlines[sid] for sid in (*short, *plain, *long_)] == [2.0, tcp_timeout, tcp_timeout]
    a.handle_timer(2.01)  # nobody answers
    results = [e for e in a.events() if isinstance(e, JoinResult)]
    assert [r.stream_id for r in results] == short and results[0].error is not None
