"""Incremental TCP stream parsing (fed 1 byte at a time) and the matching encoder."""

from __future__ import annotations

import msgpack
import pytest

from agent.membership.codec import compress_message, encode_message, encode_push_pull_body
from agent.membership.errors import DecodeError, EncodeError, ErrorKind
from agent.membership.keyring import Keyring
from agent.membership.messages import (
    AckResp,
    ErrResp,
    NodeState,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
)
from agent.membership.serf_messages import SerfPushPull, decode_serf_message
from agent.membership.stream import StreamDecoder, StreamMessage, decode_stream, encode_stream

from .wire_support import captures

RING = Keyring([bytes(range(32))], random_bytes=lambda n: b"\x07" * n)
PP = PushPull(
    nodes=tuple(
        PushNodeState(f"n{i}", b"\x7f\0\0\1", 7946 + i, b"\xff\x80", i, NodeState.ALIVE)
        for i in range(5)
    ),
    user_state=b"\x02" + b"serf-state" * 30,
    join=True,
)
MESSAGES: list[StreamMessage] = [
    Ping(seq_no=9, node="s1"),
    AckResp(seq_no=9),
    ErrResp(error="Encryption is configured but remote state is not encrypted"),
    UserMsg(payload=b"\x03event"),
    UserMsg(payload=b""),
    PP,
    PushPull(),
]


def feed_bytewise(dec: StreamDecoder, data: bytes) -> StreamMessage:
    """Feed one byte at a time; the message must appear exactly at the last byte."""
    for i in range(len(data)):
        dec.feed(data[i : i + 1])
        msg = dec.next_message()
        if i < len(data) - 1:
            assert msg is None, f"message completed early at byte {i}/{len(data)}"
        else:
            assert msg is not None, "message not complete after its last byte"
            return msg
    raise AssertionError("empty input")


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("version", [None, 0, 1])
def test_round_trip_bytewise(msg: StreamMessage, compress: bool, version: int | None) -> None:
    ring = RING if version is not None else None
    data = encode_stream(msg, compress=compress, keyring=ring, encryption_version=version or 1)
    dec = StreamDecoder(ring)
    assert feed_bytewise(dec, data) == msg
    assert dec.compressed == compress and dec.encrypted == (ring is not None)
    assert dec.message_type == msg.TYPE
    # Whole-buffer path agrees.
    assert decode_stream(data, ring) == msg


def test_framing_bytes() -> None:
    plain = encode_stream(UserMsg(b"abc"), compress=False)
    assert plain == b"\x08\x81\xaaUserMsgLen\x03abc"
    zipped = encode_stream(Ping(seq_no=1), compress=True)
    assert zipped[0] == 0x09
    sealed = encode_stream(Ping(seq_no=1), keyring=RING)
    assert sealed[0] == 0x0A
    assert int.from_bytes(sealed[1:5], "big") == len(sealed) - 5
    assert sealed[5] == 1  # encryption version 1, like serf


def test_no_eof_needed_and_trailing_bytes_ignored() -> None:
    dec = StreamDecoder()
    dec.feed(encode_stream(PP, compress=False) + b"trailing garbage")
    assert dec.next_message() == PP
    assert dec.done
    dec.feed(b"more")  # ignored once done
    assert dec.next_message() == PP


@pytest.mark.parametrize("compress", [False, True])
def test_truncation_needs_eof_to_become_an_error(compress: bool) -> None:
    data = encode_stream(PP, compress=compress)
    for cut in (1, len(data) // 2, len(data) - 1):
        dec = StreamDecoder()
        dec.feed(data[:cut])
        assert dec.next_message() is None
        dec.feed_eof()
        with pytest.raises(DecodeError) as info:
            dec.next_message()
        assert info.value.kind is ErrorKind.TRUNCATED
        with pytest.raises(DecodeError):  # sticky
            dec.next_message()


def test_eof_before_anything() -> None:
    dec = StreamDecoder()
    dec.feed_eof()
    with pytest.raises(DecodeError) as info:
        dec.next_message()
    assert info.value.kind is ErrorKind.TRUNCATED


def err_kind(data: bytes, ring: Keyring | None = None, **kw: object) -> str:
    dec = StreamDecoder(ring, **kw)  # type: ignore[arg-type]
    dec.feed(data)
    dec.feed_eof()
    with pytest.raises(DecodeError) as info:
        dec.next_message()
    return info.value.kind.value


def test_encryption_policy() -> None:
    sealed = encode_stream(Ping(seq_no=1), keyring=RING)
    assert err_kind(sealed) == "encrypted_no_key"
    assert err_kind(encode_stream(Ping(seq_no=1)), RING) == "not_encrypted"
    relaxed = StreamDecoder(RING, require_encryption=False)
    relaxed.feed(encode_stream(Ping(seq_no=1)))
    assert relaxed.next_message() == Ping(seq_no=1)
    assert err_kind(sealed, Keyring([bytes(16)])) == "decrypt_failed"
    # The 5-byte header is the AAD: a stream blob cannot be replayed with another length.
    tampered = sealed[:4] + bytes([sealed[4] + 1]) + sealed[5:] + b"\x00"
    assert err_kind(tampered, RING) == "decrypt_failed"


def test_oversize_is_refused_from_the_header_alone() -> None:
    dec = StreamDecoder(RING)
    dec.feed(b"\x0a" + (20 * 1024 * 1024 + 1).to_bytes(4, "big"))
    with pytest.raises(DecodeError) as info:
        dec.next_message()  # no need to wait for 20 MiB to arrive
    assert info.value.kind is ErrorKind.TOO_LARGE
    small = StreamDecoder(max_size=100)
    small.feed(b"\x06" + msgpack.packb({"Nodes": 0, "UserStateLen": 101}))
    with pytest.raises(DecodeError) as info:
        small.next_message()
    assert info.value.kind is ErrorKind.TOO_LARGE
    assert err_kind(b"\x06" + msgpack.packb({"Nodes": 10**6}), max_nodes=100) == "too_large"
    flood = StreamDecoder(max_size=1000)
    flood.feed(b"\x06" + msgpack.packb({"Nodes": 5}) + b"\xc0" * 2000)
    with pytest.raises(DecodeError) as info:
        flood.next_message()
    assert info.value.kind is ErrorKind.TOO_LARGE


def test_decompression_bomb_is_bounded() -> None:
    bomb = compress_message(encode_stream(UserMsg(bytes(2_000_000)), compress=False))
    assert err_kind(bomb, max_decompressed=1_000_000) == "too_large"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x63", "unknown_type"),
        (b"\xf4\x03abc", "label_unsupported"),
        (b"\x03" + encode_message(Suspect())[1:], "unexpected_type"),
        (b"\x07\x00", "unexpected_type"),
        (compress_message(compress_message(b"\x0b\x80")), "unexpected_type"),
        (compress_message(b"\x0a\x00"), "unexpected_type"),
        (b"\x09" + msgpack.packb({"Algo": 0, "Buf": b"\x00\x03\x02"}), "empty"),
        (b"\x09" + msgpack.packb({"Algo": 3, "Buf": b""}), "bad_compression"),
        (b"\x00\xc1", "bad_msgpack"),
        (b"\x06" + msgpack.packb({"Nodes": -1}), "bad_field"),
        (b"\x08" + msgpack.packb({"UserMsgLen": -5}), "bad_field"),
        (b"\x00\xdd\xff\xff\xff\xff", "bad_msgpack"),
    ],
)
def test_bad_streams_are_classified(data: bytes, kind: str) -> None:
    assert err_kind(data) == kind


def test_encrypted_body_must_not_nest_encryption() -> None:
    inner = b"\x0a" + bytes(4)
    header = b"\x0a" + (29 + len(inner)).to_bytes(4, "big")
    data = header + RING.encrypt(inner, header)
    assert err_kind(data, RING) == "unexpected_type"
    header = b"\x0a" + (29).to_bytes(4, "big")
    assert err_kind(header + RING.encrypt(b"", header), RING) == "empty"


def test_encoder_refusals() -> None:
    with pytest.raises(EncodeError):
        encode_stream(Suspect())  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        encode_push_pull_body(PushPull(nodes=(PushNodeState(name="x", vsn=b"\x01\x02"),)))


# ------------------------------------------------------------------ real serf streams
@pytest.mark.parametrize("kind", ["plain", "encrypted"])
def test_real_serf_streams_bytewise(kind: str) -> None:
    cap = captures(kind)
    ring = Keyring.from_base64([cap["key"]]) if kind == "encrypted" else None
    ack = feed_bytewise(StreamDecoder(ring), bytes.fromhex(cap["tcp_ack"]))
    assert ack == AckResp(seq_no=9)
    dec = StreamDecoder(ring)
    pp = feed_bytewise(dec, bytes.fromhex(cap["tcp_pushpull_from_serf_join"]))
    assert dec.compressed and dec.encrypted == (ring is not None)
    assert isinstance(pp, PushPull) and pp.join
    assert [n.name for n in pp.nodes] == ["s1"]
    assert pp.nodes[0].vsn == bytes([1, 5, 2, 2, 5, 5]) and pp.nodes[0].meta == b"\xff\x80"
    serf = decode_serf_message(pp.user_state)
    assert isinstance(serf, SerfPushPull)
    assert len(serf.events) == 512 and "s1" in serf.status_ltimes
    if ring is None:
        for name in ("tcp_ack", "tcp_pushpull_from_serf_join"):
            raw = bytes.fromhex(cap[name])
            assert encode_stream(decode_stream(raw)) == raw, name
