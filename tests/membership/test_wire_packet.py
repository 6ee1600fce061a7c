"""UDP packet framing: compound, CRC, compression, encryption, and real serf packets."""

from __future__ import annotations

import struct
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.membership import lzw
from agent.membership.codec import (
    MAX_PACKET_ITEMS,
    PACKET_MAX_DECOMPRESSED,
    add_crc,
    compress_message,
    decode_packet,
    decompress_message,
    encode_message,
    encode_packet,
    make_compound,
    split_compound,
    strip_crc,
)
from agent.membership.errors import DecodeError, EncodeError, ErrorKind
from agent.membership.keyring import Keyring
from agent.membership.messages import (
    AckResp,
    Alive,
    Dead,
    ErrResp,
    Message,
    NackResp,
    Ping,
    PushPull,
    Suspect,
    UserMsg,
)
from agent.membership.serf_messages import OtherSerfMessage, SerfMessageType, decode_serf_message

from .wire_support import captures

PING = Ping(seq_no=1, node="a")
ACK = AckResp(seq_no=1)
SUS = Suspect(incarnation=2, node="b", from_node="a")


def kinds(problems: tuple[DecodeError, ...]) -> list[str]:
    return [p.kind.value for p in problems]


def test_single_message_packet() -> None:
    data = encode_packet([PING])
    assert data == encode_message(PING)
    res = decode_packet(data)
    assert res.messages == (PING,) and res.problems == () and not res.crc and not res.encrypted


def test_compound_layout_and_round_trip() -> None:
    parts = [encode_message(m) for m in (PING, SUS, UserMsg(b"\x01x"))]
    data = make_compound(parts)
    assert data[:2] == b"\x07\x03"
    assert struct.unpack(">3H", data[2:8]) == tuple(len(p) for p in parts)
    assert split_compound(data) == (parts, 0)
    assert decode_packet(data).messages == (PING, SUS, UserMsg(b"\x01x"))


def test_compound_nesting_in_both_directions() -> None:
    inner = make_compound([encode_message(PING), encode_message(ACK)])
    zipped = compress_message(make_compound([inner, encode_message(SUS)]))
    outer = make_compound([zipped, encode_message(NackResp(4))])
    res = decode_packet(add_crc(outer))
    assert res.messages == (PING, ACK, SUS, NackResp(4))
    assert res.crc and res.problems == ()


def test_compound_truncation_keeps_whole_parts_and_reports_rest() -> None:
    parts = [encode_message(PING), encode_message(ACK), encode_message(SUS)]
    data = make_compound(parts)
    cut = data[: len(data) - len(parts[2]) - 1]  # second part is now short by a byte
    got, truncated = split_compound(cut)
    assert got == parts[:1] and truncated == 2
    res = decode_packet(cut)
    assert res.messages == (PING,)
    assert kinds(res.problems) == ["truncated"]
    assert "2 truncated" in res.problems[0].reason
    # A damaged length table is a problem, not an exception.
    assert kinds(decode_packet(b"\x07\x05\x00").problems) == ["truncated"]
    assert kinds(decode_packet(b"\x07").problems) == ["truncated"]


def test_compound_with_bad_parts_reports_each() -> None:
    parts = [b"\x63junk", encode_message(PING), b"\x06\x80", b"\x00\xc1", b"\xf4\x00", b"\x0d\x80"]
    res = decode_packet(make_compound(parts))
    assert res.messages == (PING,)
    assert kinds(res.problems) == [
        "unknown_type",
        "unexpected_type",
        "bad_msgpack",
        "label_unsupported",
        "unexpected_type",
    ]
    # Empty parts crash serf 0.9.4 (verified live); we report and never build them.
    assert kinds(decode_packet(b"\x07\x01\x00\x00").problems) == ["empty"]
    with pytest.raises(EncodeError):
        make_compound([b""])


def test_compound_limits() -> None:
    with pytest.raises(EncodeError):
        make_compound([b"\x0b\x80"] * 256)
    with pytest.raises(EncodeError):
        make_compound([b"\x08" + bytes(70000)])
    assert len(decode_packet(make_compound([encode_message(ACK)] * 255)).messages) == 255


def test_crc() -> None:
    body = encode_message(PING)
    data = add_crc(body)
    assert data[0] == 0x0C and data[1:5] == zlib.crc32(body).to_bytes(4, "big")
    assert strip_crc(data) == (body, True)
    assert strip_crc(body) == (body, False)
    bad = data[:1] + bytes(4) + data[5:]
    with pytest.raises(DecodeError) as info:
        decode_packet(bad)
    assert info.value.kind is ErrorKind.BAD_CRC
    with pytest.raises(DecodeError) as info:
        decode_packet(b"\x0c\x00")
    assert info.value.kind is ErrorKind.TRUNCATED
    # CRC over nothing crashes serf 0.9.4 (verified live): refused both ways.
    with pytest.raises(DecodeError) as info:
        decode_packet(b"\x0c\x00\x00\x00\x00")  # crc32(b"") == 0: valid CRC, no body
    assert info.value.kind is ErrorKind.EMPTY
    with pytest.raises(EncodeError):
        add_crc(b"")


def test_compression_only_when_smaller_like_go() -> None:
    small = encode_packet([PING], compress=True)
    assert small == encode_message(PING)  # LZW would not shrink it
    big = [Alive(incarnation=i, node=f"node-{i}", addr=b"\x7f\0\0\1", port=7946) for i in range(8)]
    data = encode_packet(big, compress=True, crc=True)
    assert data[0] == 0x0C and data[5] == 0x09
    assert decode_packet(data).messages == tuple(big)


def test_a_packet_lzw_cannot_shrink_is_not_compressed_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle node's probes and acks: the LZW form is provably not smaller
    (lzw.least_size), so the compressor is not run for them."""
    ran: list[bytes] = []
    real = lzw.compress
    monkeypatch.setattr(lzw, "compress", lambda data: ran.append(data) or real(data))
    probe = Ping(
        seq_no=9071,
        node="edge-3",
        source_addr=b"\x0a\0\0\x07",
        source_port=7946,
        source_node="edge-1",
    )
    for msg in (probe, AckResp(seq_no=9071), AckResp(seq_no=9071, payload=b"\x01" * 8)):
        assert encode_packet([msg], compress=True, crc=True) == add_crc(encode_message(msg))
    assert ran == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.builds(
            Alive,
            incarnation=st.integers(0, 2**32 - 1),
            node=st.sampled_from(["a", "edge-1", "edge-2", "node-with-a-long-name"]),
            addr=st.sampled_from([b"\x7f\0\0\1", b"\x0a\0\0\x07"]),
            port=st.integers(0, 65535),
            meta=st.binary(max_size=40),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_compression_is_kept_exactly_when_smaller(msgs: list[Alive]) -> None:
    """Skipping the compressor changes no byte: the packet is Go's, compressed iff smaller."""
    parts = [encode_message(m) for m in msgs]
    body = parts[0] if len(parts) == 1 else make_compound(parts)
    packed = compress_message(body)
    want = packed if len(packed) < len(body) else body
    assert encode_packet(msgs, compress=True) == want


def test_compress_helpers_and_errors() -> None:
    payload = encode_message(ACK)
    packed = compress_message(payload)
    assert decompress_message(packed) == payload
    bad_algo = b"\x09" + msgpack.packb({"Algo": 1, "Buf": b""}, use_bin_type=False)
    assert kinds(decode_packet(bad_algo).problems) == ["bad_compression"]
    bad_lzw = b"\x09" + msgpack.packb({"Algo": 0, "Buf": b"\xff\xff"}, use_bin_type=False)
    assert kinds(decode_packet(bad_lzw).problems) == ["bad_compression"]
    # Compressed emptiness would crash serf 0.9.4 (handleCommand on an empty buffer).
    empty = b"\x09" + msgpack.packb({"Algo": 0, "Buf": lzw.compress(b"")}, use_bin_type=False)
    assert kinds(decode_packet(empty).problems) == ["empty"]
    with pytest.raises(EncodeError):
        compress_message(b"")


def test_decompression_budget_is_shared_across_layers() -> None:
    bomb = compress_message(b"\x08" + bytes(PACKET_MAX_DECOMPRESSED))  # one byte over
    assert len(bomb) < 2000
    assert kinds(decode_packet(bomb).problems) == ["too_large"]
    half = compress_message(b"\x08" + bytes(PACKET_MAX_DECOMPRESSED // 2))
    res = decode_packet(make_compound([half, half, half]))
    assert len(res.messages) == 1 and kinds(res.problems) == ["too_large", "too_large"]
    assert len(decode_packet(half, max_decompressed=10**7).messages) == 1


def test_nesting_depth_is_bounded() -> None:
    data = encode_message(PING)
    for _ in range(12):
        data = make_compound([data])
    assert kinds(decode_packet(data).problems) == ["too_deep"]
    assert decode_packet(data, max_depth=20).messages == (PING,)
    for _ in range(3):
        data = compress_message(data)
    assert kinds(decode_packet(data, max_depth=100).problems) == []


def test_item_count_is_bounded() -> None:
    level = make_compound([b"\x0b\x80"] * 255)  # 255 NackResp(0)
    many = make_compound([level] * 20)  # 5100 items > MAX_PACKET_ITEMS
    res = decode_packet(many)
    assert len(res.messages) + len(res.problems) == MAX_PACKET_ITEMS + 1
    assert "too_large" in kinds(res.problems)


def test_whole_packet_failures_raise() -> None:
    for data, kind in [
        (b"", ErrorKind.EMPTY),
        (b"\xf4\x03abc\x00\x80", ErrorKind.LABEL_UNSUPPORTED),
    ]:
        with pytest.raises(DecodeError) as info:
            decode_packet(data)
        assert info.value.kind is kind
    # Message-level damage does not raise.
    assert kinds(decode_packet(b"\x99").problems) == ["unknown_type"]
    assert kinds(decode_packet(b"\x06\x80").problems) == ["unexpected_type"]


def test_short_vsn_alive_is_dropped_with_a_problem() -> None:
    evil = b"\x04" + msgpack.packb({"Node": b"x", "Vsn": b"\x01\x05\x02"}, use_bin_type=False)
    res = decode_packet(make_compound([evil, encode_message(PING)]))
    assert res.messages == (PING,)
    assert kinds(res.problems) == ["short_vsn"]


def test_encryption_layering() -> None:
    ring = Keyring([bytes(16)], random_bytes=lambda n: b"\x01" * n)
    msgs: list[Message] = [PING, SUS, Dead(incarnation=1, node="b", from_node="b")]
    data = encode_packet(msgs, compress=True, crc=True, keyring=ring)
    assert data[0] == 1  # encryption version 1, like serf
    res = decode_packet(data, ring)
    assert res.messages == tuple(msgs) and res.encrypted and res.crc
    with pytest.raises(DecodeError) as info:
        decode_packet(data, Keyring([bytes(32)]))
    assert info.value.kind is ErrorKind.DECRYPT_FAILED
    with pytest.raises(DecodeError):
        decode_packet(encode_packet([PING]), ring)  # plaintext refused when a key is set
    lenient = decode_packet(encode_packet([PING]), ring, verify_incoming=False)
    assert lenient.messages == (PING,) and not lenient.encrypted
    v0 = encode_packet([PING], keyring=ring, encryption_version=0)
    assert v0[0] == 0 and decode_packet(v0, ring).messages == (PING,)


def test_encode_packet_refusals() -> None:
    bads: list[list[Message | bytes]] = [[], [b""], [PushPull()], [ErrResp("x")]]
    for bad in bads:
        with pytest.raises(EncodeError):
            encode_packet(bad)


def test_preencoded_broadcasts_can_be_mixed_in() -> None:
    queued = encode_message(SUS)
    assert decode_packet(encode_packet([PING, queued])).messages == (PING, SUS)


# ------------------------------------------------------------------ real serf packets
@pytest.mark.parametrize("kind", ["plain", "encrypted"])
def test_real_serf_packets_decode_and_reencode_identically(kind: str) -> None:
    cap = captures(kind)
    ring = Keyring.from_base64([cap["key"]]) if kind == "encrypted" else None
    ack = decode_packet(bytes.fromhex(cap["udp_ack"]), ring)
    assert isinstance(ack.messages[0], AckResp) and ack.messages[0].seq_no == 7
    assert ack.messages[0].payload[:1] == b"\x01"  # Serf's coordinate
    assert isinstance(ack.messages[1], Alive) and ack.messages[1].node == "s1"
    gossip = decode_packet(bytes.fromhex(cap["udp_gossip_crc"]), ring)
    assert gossip.crc and gossip.problems == ()
    event = decode_packet(bytes.fromhex(cap["udp_user_event"]), ring)
    users = [m for m in event.messages if isinstance(m, UserMsg)]
    serf = decode_serf_message(users[0].payload)
    assert isinstance(serf, OtherSerfMessage) and serf.type is SerfMessageType.USER_EVENT
    if ring is None:
        # Byte-exact: our encoder reproduces serf's packets (compound, LZW, CRC).
        for name in ("udp_ack", "udp_gossip_crc", "udp_ping", "udp_user_event"):
            raw = bytes.fromhex(cap[name])
            res = decode_packet(raw)
            assert encode_packet(res.messages, compress=True, crc=res.crc) == raw, name
    else:
        for name in ("udp_ack", "udp_gossip_crc", "udp_ping", "udp_user_event"):
            assert decode_packet(bytes.fromhex(cap[name]), ring).encrypted
