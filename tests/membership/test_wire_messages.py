"""Every message type: round trips, byte-exact Go encodings, go-msgpack decode leniency."""

from __future__ import annotations

import msgpack
import pytest

from agent.membership.codec import (
    decode_message,
    decode_push_pull_body,
    encode_message,
    encode_struct,
)
from agent.membership.errors import DecodeError, EncodeError, ErrorKind
from agent.membership.messages import (
    DEFAULT_VSN,
    AckResp,
    Alive,
    Compress,
    Dead,
    ErrResp,
    IndirectPingReq,
    Message,
    MessageType,
    NackResp,
    NodeState,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
    Vsn,
    ip_from_wire,
    ip_to_wire,
)

LOCAL = bytes([127, 0, 0, 1])

EXAMPLES: list[Message] = [
    Ping(seq_no=1, node="a1"),
    Ping(seq_no=0xFFFFFFFF, node="n", source_addr=LOCAL, source_port=7946, source_node="me"),
    IndirectPingReq(seq_no=5, target=LOCAL, port=7946, node="t", nack=True),
    IndirectPingReq(5, LOCAL, 1, "t", False, LOCAL, 2, "src"),
    AckResp(seq_no=3),
    AckResp(seq_no=3, payload=b"\x01" * 140),
    NackResp(seq_no=9),
    ErrResp(error="boom"),
    Suspect(incarnation=4, node="x", from_node="y"),
    Alive(incarnation=1, node="s1", addr=LOCAL, port=17946, meta=b"\xff\x80"),
    Alive(incarnation=2**32 - 1, node="v6", addr=bytes(16), port=65535, meta=b"", vsn=DEFAULT_VSN),
    Dead(incarnation=1, node="x", from_node="x"),
    UserMsg(payload=b"\x03hello"),
    UserMsg(payload=b""),
    Compress(algo=0, buf=b"\x00\x01"),
    PushPull(
        nodes=(
            PushNodeState("a", LOCAL, 1, b"\xff\x80", 3, NodeState.SUSPECT),
            PushNodeState("b", bytes(16), 2, b"", 0, NodeState.LEFT, DEFAULT_VSN),
        ),
        user_state=b"\x02\x80",
        join=True,
    ),
    PushPull(),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    data = encode_message(msg)
    assert data[0] == msg.TYPE
    assert decode_message(data) == msg
    # And the bytes are stable: encode(decode(x)) == x.
    assert encode_message(decode_message(data)) == data


def test_ping_matches_serf_capture() -> None:
    # Reference doc §2.2, captured from serf: keys sorted, omitempty fields present.
    want = bytes.fromhex(
        "0085a44e6f6465a26131a55365714e6f01aa536f7572636541646472a47f000001"
        "aa536f757263654e6f6465a26132aa536f75726365506f7274cd461b"
    )
    ping = Ping(seq_no=1, node="a1", source_addr=LOCAL, source_port=17947, source_node="a2")
    assert encode_message(ping) == want
    assert decode_message(want) == ping


def test_ping_omitempty() -> None:
    # Go leaves SourceAddr/SourcePort/SourceNode out entirely when zero.
    assert encode_message(Ping(seq_no=1, node="a")) == b"\x00" + msgpack.packb(
        {"Node": b"a", "SeqNo": 1}, use_bin_type=False
    )


def test_alive_key_order_and_field_encodings() -> None:
    a = Alive(incarnation=1, node="s1", addr=LOCAL, port=17946, meta=b"\xff\x80")
    data = encode_message(a)
    assert data == bytes.fromhex(
        "0486"
        "a441646472a47f000001"  # Addr: raw str a4 7f000001
        "ab496e6361726e6174696f6e01"  # Incarnation 1 -> 01
        "a44d657461a2ff80"  # Meta
        "a44e6f6465a27331"  # Node
        "a4506f7274cd461a"  # Port 17946 -> cd 46 1a
        "a356736ea6010502020505"  # Vsn -> a6 01 05 02 02 05 05
    )


def test_nil_slices_and_str16() -> None:
    assert encode_message(AckResp(seq_no=1)) == bytes.fromhex(
        "0282a75061796c6f6164c0a55365714e6f01"
    )
    big = encode_message(AckResp(seq_no=1, payload=b"\x00" * 140))
    assert bytes.fromhex("a75061796c6f6164da008c") in big  # str16, never bin8/str8
    mid = encode_message(AckResp(seq_no=1, payload=b"\x00" * 40))
    assert bytes.fromhex("da0028") in mid and b"\xd9" not in mid[:20]


def test_integers_smallest_form() -> None:
    for value, enc in [
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (256, "cd0100"),
        (65536, "ce00010000"),
    ]:
        data = encode_message(NackResp(seq_no=value))
        assert data == bytes.fromhex("0b81a55365714e6f" + enc)


def test_decode_lenient_like_go_msgpack() -> None:
    # Any key order, unknown keys skipped, missing keys -> zero values.
    raw = {b"Zzz": [1, 2], b"SeqNo": 7, b"Extra": {b"a": None}}
    assert decode_message(b"\x00" + msgpack.packb(raw)) == Ping(seq_no=7)
    # Struct as array in declaration order; extra elements ignored.
    arr = [3, b"n", b"\x7f\x00\x00\x01", 80, b"src", "ignored"]
    assert decode_message(b"\x00" + msgpack.packb(arr)) == Ping(3, "n", LOCAL, 80, "src")
    # nil struct -> zero value; nil field -> zero value.
    assert decode_message(b"\x00\xc0") == Ping()
    assert decode_message(b"\x0b" + msgpack.packb({"SeqNo": None})) == NackResp(0)
    # []byte accepts bin, str8 and an array of small ints; strings accept str8.
    alive = {"Addr": LOCAL, "Vsn": [1, 5, 2, 2, 5, 5], "Node": "s1"}
    packed = b"\x04" + msgpack.packb(alive, use_bin_type=True)
    assert b"\xc4\x04\x7f" in packed  # Addr really is bin8 here
    got = decode_message(packed)
    assert isinstance(got, Alive) and got.addr == LOCAL and got.vsn == DEFAULT_VSN
    str8 = b"\x0d\x81\xa5Error\xd9\x03abc"
    assert decode_message(str8) == ErrResp("abc")
    # bool from fixint 0/1, as go-msgpack allows.
    assert decode_message(b"\x01" + msgpack.packb({"Nack": 1})) == IndirectPingReq(nack=True)
    # Trailing bytes after the struct are ignored (Go's decoder reads one value).
    assert decode_message(encode_message(NackResp(1)) + b"junk") == NackResp(1)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", ErrorKind.EMPTY),
        (b"\x00", ErrorKind.TRUNCATED),
        (b"\x00\x85\xa4Node", ErrorKind.TRUNCATED),
        (b"\x00\xc1", ErrorKind.BAD_MSGPACK),
        (b"\x00\x01", ErrorKind.BAD_FIELD),  # a struct must be a map/array/nil
        (b"\x0b" + msgpack.packb({"SeqNo": -1}), ErrorKind.BAD_FIELD),
        (b"\x0b" + msgpack.packb({"SeqNo": 2**32}), ErrorKind.BAD_FIELD),
        (b"\x00" + msgpack.packb({"SeqNo": True}), ErrorKind.BAD_FIELD),
        (b"\x00" + msgpack.packb({"Node": 5}), ErrorKind.BAD_FIELD),
        (b"\x00" + msgpack.packb({"SourcePort": 70000}), ErrorKind.BAD_FIELD),
        (b"\x01" + msgpack.packb({"Nack": 2}), ErrorKind.BAD_FIELD),
        (b"\x04" + msgpack.packb({"Vsn": [1, 300]}), ErrorKind.BAD_FIELD),
        (b"\x63", ErrorKind.UNKNOWN_TYPE),
        (b"\xf4\x01x", ErrorKind.LABEL_UNSUPPORTED),
        (b"\x07\x00", ErrorKind.UNEXPECTED_TYPE),
        (b"\x0c\x00\x00\x00\x00", ErrorKind.UNEXPECTED_TYPE),
        (b"\x0a\x00", ErrorKind.UNEXPECTED_TYPE),
        (b"\x00\xdd\xff\xff\xff\xff", ErrorKind.BAD_MSGPACK),  # hostile array32 header
    ],
)
def test_decode_errors_are_classified(data: bytes, kind: ErrorKind) -> None:
    with pytest.raises(DecodeError) as info:
        decode_message(data)
    assert info.value.kind is kind


def test_short_vsn_alive_decodes_flagged_and_never_encodes() -> None:
    raw = b"\x04" + msgpack.packb({"Node": b"evil", "Vsn": b"\x01\x05\x02"})
    alive = decode_message(raw)
    assert isinstance(alive, Alive)
    assert alive.vsn == b"\x01\x05\x02"
    assert alive.vsn_problem == "short_vsn"
    assert Vsn.parse(alive.vsn) is None
    with pytest.raises(EncodeError):
        encode_message(alive)  # would crash serf 0.9.4
    with pytest.raises(EncodeError):
        encode_message(Alive(node="x", vsn=b""))  # would poison serf's push/pulls
    with pytest.raises(EncodeError):
        encode_struct(PushNodeState(name="x", vsn=b"\x01"))
    assert Alive(vsn=DEFAULT_VSN).vsn_problem is None
    assert Vsn.parse(DEFAULT_VSN) == Vsn(1, 5, 2, 2, 5, 5)
    assert Vsn(1, 5, 2, 2, 5, 5).to_bytes() == DEFAULT_VSN


def test_unknown_node_state_is_kept() -> None:
    body = encode_message(PushPull(nodes=(PushNodeState(name="a", state=NodeState.DEAD),)))
    pp = decode_message(body)
    assert isinstance(pp, PushPull) and pp.nodes[0].state is NodeState.DEAD
    odd = body.replace(b"\xa5State\x02", b"\xa5State\x07")
    pp2 = decode_push_pull_body(odd[1:])
    assert pp2.nodes[0].state == 7


def test_push_pull_errors() -> None:
    head = b"\x06" + msgpack.packb({"Nodes": -1})
    with pytest.raises(DecodeError) as info:
        decode_message(head)
    assert info.value.kind is ErrorKind.BAD_FIELD  # Go panics in makeslice here
    with pytest.raises(DecodeError) as info:
        decode_message(b"\x06" + msgpack.packb({"Nodes": 10**6}))
    assert info.value.kind is ErrorKind.TOO_LARGE
    with pytest.raises(DecodeError) as info:
        decode_message(b"\x06" + msgpack.packb({"Nodes": 0, "UserStateLen": 5}) + b"abc")
    assert info.value.kind is ErrorKind.TRUNCATED


@pytest.mark.parametrize(
    "bad",
    [
        Ping(seq_no=-1),
        Ping(seq_no=2**32),
        Ping(source_port=65536),
        Alive(incarnation=True),
        IndirectPingReq(nack=1),  # type: ignore[arg-type]
        Compress(algo=256),
    ],
)
def test_encode_refuses_out_of_range(bad: Message) -> None:
    with pytest.raises(EncodeError):
        encode_message(bad)


def test_strings_are_lossless_bytes() -> None:
    raw = b"\x00" + msgpack.packb({"Node": b"caf\xc3\xa9\xff\xfe", "SeqNo": 1}, use_bin_type=False)
    ping = decode_message(raw)
    assert isinstance(ping, Ping)
    assert ping.node.startswith("café")
    assert encode_message(ping) == raw


def test_ip_helpers() -> None:
    assert str(ip_from_wire(LOCAL)) == "127.0.0.1"
    mapped = bytes(10) + b"\xff\xff" + LOCAL
    assert str(ip_from_wire(mapped)) == "127.0.0.1"
    assert str(ip_from_wire(bytes(15) + b"\x01")) == "::1"
    assert ip_from_wire(b"\x01\x02\x03") is None
    assert ip_to_wire("127.0.0.1") == LOCAL
    assert ip_to_wire("::ffff:127.0.0.1") == LOCAL
    assert ip_to_wire("::1") == bytes(15) + b"\x01"


def test_message_type_values() -> None:
    assert [int(t) for t in MessageType][:14] == list(range(14))
    assert MessageType.HAS_CRC == 12 and MessageType.ENCRYPT == 10
    assert MessageType.HAS_LABEL == 244
    assert bytes([1, 5, 2, 2, 5, 5]) == DEFAULT_VSN
