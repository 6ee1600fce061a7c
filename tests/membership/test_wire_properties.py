"""Property tests: every encoder round-trips through its decoder, whatever the input."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.membership import lzw
from agent.membership.codec import decode_message, decode_packet, encode_message, encode_packet
from agent.membership.errors import DecodeError, EncodeError
from agent.membership.keyring import Keyring
from agent.membership.messages import (
    DEFAULT_VSN,
    AckResp,
    Alive,
    Dead,
    ErrResp,
    IndirectPingReq,
    Message,
    NackResp,
    NodeState,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)
from agent.membership.meta import decode_tags, encode_tags
from agent.membership.serf_messages import (
    JoinIntent,
    LeaveIntent,
    SerfPushPull,
    UserEvent,
    UserEvents,
    decode_serf_message,
    encode_serf_message,
)
from agent.membership.stream import StreamDecoder, StreamMessage, encode_stream

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 2**64 - 1)
# Go strings are bytes; our str form must round-trip any of them (surrogateescape).
names = st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape"))
ips = st.sampled_from([b"\x7f\x00\x00\x01", bytes(16), b"\x0a\x00\x00\x05", b""])
blobs = st.binary(max_size=300)
vsns = st.one_of(st.just(DEFAULT_VSN), st.binary(min_size=6, max_size=8))

node_states = st.builds(
    PushNodeState,
    name=names,
    addr=ips,
    port=u16,
    meta=blobs,
    incarnation=u32,
    state=st.sampled_from(list(NodeState)),
    vsn=vsns,
)
packet_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, seq_no=u32, node=names, source_addr=ips, source_port=u16, source_node=names),
    st.builds(
        IndirectPingReq,
        seq_no=u32,
        target=ips,
        port=u16,
        node=names,
        nack=st.booleans(),
        source_addr=ips,
        source_port=u16,
        source_node=names,
    ),
    st.builds(AckResp, seq_no=u32, payload=blobs),
    st.builds(NackResp, seq_no=u32),
    st.builds(Suspect, incarnation=u32, node=names, from_node=names),
    st.builds(Alive, incarnation=u32, node=names, addr=ips, port=u16, meta=blobs, vsn=vsns),
    st.builds(Dead, incarnation=u32, node=names, from_node=names),
    st.builds(UserMsg, payload=blobs),
)
stream_messages: st.SearchStrategy[StreamMessage] = st.one_of(
    st.builds(Ping, seq_no=u32, node=names),
    st.builds(AckResp, seq_no=u32, payload=blobs),
    st.builds(ErrResp, error=names),
    st.builds(UserMsg, payload=blobs),
    st.builds(
        PushPull,
        nodes=st.lists(node_states, max_size=6).map(tuple),
        user_state=blobs,
        join=st.booleans(),
    ),
)
RING = Keyring([bytes(range(16)), bytes(range(32))])


@given(packet_messages)
def test_message_round_trip(msg: Message) -> None:
    data = encode_message(msg)
    assert decode_message(data) == msg
    assert encode_message(decode_message(data)) == data


@given(st.binary(max_size=3000))
@settings(max_examples=150)
def test_lzw_round_trip(data: bytes) -> None:
    assert lzw.decompress(lzw.compress(data), len(data)) == data


@given(st.lists(st.sampled_from(b"ab\x00"), max_size=6000).map(bytes))
@settings(max_examples=50)
def test_lzw_round_trip_repetitive(data: bytes) -> None:
    assert lzw.decompress(lzw.compress(data), len(data)) == data


@given(
    st.lists(packet_messages, min_size=1, max_size=12),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_packet_round_trip(msgs: list[Message], compress: bool, crc: bool, encrypt: bool) -> None:
    ring = RING if encrypt else None
    data = encode_packet(msgs, compress=compress, crc=crc, keyring=ring)
    res = decode_packet(data, ring)
    assert res.messages == tuple(msgs)
    assert res.problems == ()
    assert res.crc == crc and res.encrypted == encrypt


@given(stream_messages, st.booleans(), st.booleans(), st.data())
@settings(max_examples=150)
def test_stream_round_trip_any_chunking(
    msg: StreamMessage, compress: bool, encrypt: bool, data: st.DataObject
) -> None:
    ring = RING if encrypt else None
    wire = encode_stream(msg, compress=compress, keyring=ring)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    dec = StreamDecoder(ring)
    got = None
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        dec.feed(wire[a:b])
        got = dec.next_message()
        if b < len(wire):
            assert got is None
    assert got == msg


@given(st.binary(max_size=400))
def test_decoders_only_raise_decode_error(data: bytes) -> None:
    for keyring in (None, RING):
        with contextlib.suppress(DecodeError):
            decode_packet(data, keyring)
        dec = StreamDecoder(keyring, require_encryption=False)
        dec.feed(data)
        dec.feed_eof()
        with contextlib.suppress(DecodeError):
            dec.next_message()
    with contextlib.suppress(DecodeError):
        decode_serf_message(data)
    decode_tags(data)


@given(st.binary(max_size=64), st.integers(0, 1))
def test_keyring_round_trip(plain: bytes, version: int) -> None:
    assert RING.decrypt(RING.encrypt(plain, version=version)) == plain
    header = b"\x0a" + bytes(4)
    assert RING.decrypt(RING.encrypt(plain, header, version=version), header) == plain


@given(st.dictionaries(names, names, max_size=8))
def test_tags_round_trip(tags: dict[str, str]) -> None:
    try:
        meta = encode_tags(tags)
    except EncodeError:
        return  # over 512 bytes
    assert decode_tags(meta) == tags


@given(
    st.one_of(
        st.builds(JoinIntent, ltime=u64, node=names),
        st.builds(LeaveIntent, ltime=u64, node=names, prune=st.booleans()),
        st.builds(
            SerfPushPull,
            ltime=u64,
            status_ltimes=st.dictionaries(names, u64, max_size=5),
            left_members=st.lists(names, max_size=3).map(tuple),
            event_ltime=u64,
            events=st.lists(
                st.one_of(
                    st.none(),
                    st.builds(
                        UserEvents,
                        ltime=u64,
                        events=st.lists(
                            st.builds(UserEvent, name=names, payload=blobs), max_size=3
                        ).map(tuple),
                    ),
                ),
                max_size=5,
            ).map(tuple),
            query_ltime=u64,
        ),
    )
)
def test_serf_message_round_trip(msg: JoinIntent | LeaveIntent | SerfPushPull) -> None:
    assert decode_serf_message(encode_serf_message(msg)) == msg
