"""Serf tags in node Meta and the Serf user-message layer."""

from __future__ import annotations

import logging

import msgpack
import pytest

from agent.membership import meta
from agent.membership.errors import DecodeError, EncodeError, ErrorKind
from agent.membership.meta import MetaTooLarge, decode_tags, encode_tags
from agent.membership.serf_messages import (
    JoinIntent,
    LeaveIntent,
    OtherSerfMessage,
    SerfMessageType,
    SerfPushPull,
    UserEvent,
    UserEvents,
    decode_serf_message,
    encode_serf_message,
)


def test_tags_match_serf_bytes() -> None:
    assert encode_tags({}) == bytes.fromhex("ff80")
    # Serf's map order is random; ours is sorted. Both decode the same.
    assert encode_tags({"role": "web", "dc": "x"}) == bytes.fromhex(
        "ff82a26463a178a4726f6c65a3776562"
    )
    serf_order = bytes.fromhex("ff82a4726f6c65a3776562a26463a178")
    assert decode_tags(serf_order) == {"role": "web", "dc": "x"}


def test_tag_size_limit() -> None:
    ok = {"k": "v" * 505}
    assert len(encode_tags(ok)) == 512
    with pytest.raises(MetaTooLarge) as info:
        encode_tags({"k": "v" * 506})
    assert "512" in str(info.value)
    assert isinstance(info.value, EncodeError)
    with pytest.raises(EncodeError):
        encode_tags({"k": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("meta", "tags"),
    [
        (b"", {"role": ""}),  # what serf shows as role=
        (b"web", {"role": "web"}),  # pre-v3 role-only meta
        (b"\xff", {}),
        (b"\xff\xc0", {}),
        (b"\xff\xc1", {}),
        (b"\xff\x93\x01\x02\x03", {}),
        (b"\xff\x82\xa1a\xa1b\x01\x02", {"a": "b"}),  # keeps what decoded before damage
        (b"\xff\x82\xa1a\xc0\xa1b", {"a": ""}),
        (b"\xff\x81\xa1a\xa2\xc3", {}),
        (b"\xff\xdf\xff\xff\xff\xff", {}),
    ],
)
def test_decode_tags_tolerates_garbage(meta: bytes, tags: dict[str, str]) -> None:
    assert decode_tags(meta) == tags


def test_damaged_meta_is_logged_and_counted_once(caplog: pytest.LogCaptureFixture) -> None:
    """Serf logs a peer's undecodable tags and keeps what it has; we do too, once per
    damaged blob (the same member's meta is decoded again on every membership change)."""
    damaged = b"\xff\x82\xa4zone\xa3lab\x01\x02"  # an int key after one good entry
    before = meta.DAMAGE.count
    with caplog.at_level(logging.WARNING, logger="agent.membership.meta"):
        for _ in range(3):
            assert decode_tags(damaged) == {"zone": "lab"}
        # not damage: nil (Go decodes it to an empty map), pre-v3 meta, good tags
        assert decode_tags(b"\xff\xc0") == {}
        assert decode_tags(b"web") == {"role": "web"}
        assert decode_tags(encode_tags({"a": "b"})) == {"a": "b"}
    assert meta.DAMAGE.count == before + 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "agent.membership.meta"]
    assert len(warnings) == 1 and damaged.hex() in warnings[0], warnings
    assert "key" in warnings[0]  # says what was wrong


def test_tags_round_trip_non_ascii() -> None:
    tags = {"zone": "zürich", "id": "\udcff"}
    assert decode_tags(encode_tags(tags)) == tags


def test_join_and_leave_intents() -> None:
    join = encode_serf_message(JoinIntent(ltime=5, node="py1"))
    assert join == b"\x01\x82\xa5LTime\x05\xa4Node\xa3py1"
    leave = encode_serf_message(LeaveIntent(ltime=6, node="py1"))
    assert leave == b"\x00\x83\xa5LTime\x06\xa4Node\xa3py1\xa5Prune\xc2"
    assert decode_serf_message(join) == JoinIntent(5, "py1")
    assert decode_serf_message(leave) == LeaveIntent(6, "py1", False)
    assert decode_serf_message(b"\x00" + msgpack.packb([7, b"n", True])) == LeaveIntent(
        7, "n", True
    )
    with pytest.raises(EncodeError):
        encode_serf_message(JoinIntent(ltime=-1, node="x"))


def test_push_pull_state_round_trip_and_layout() -> None:
    state = SerfPushPull(
        ltime=3,
        status_ltimes={"b": 1, "a": 2},
        left_members=("gone",),
        event_ltime=4,
        events=(None, UserEvents(2, (UserEvent("deploy", b"v1"),)), None),
        query_ltime=1,
    )
    data = encode_serf_message(state)
    assert data[0] == SerfMessageType.PUSH_PULL
    decoded = decode_serf_message(data)
    assert decoded == state
    raw = msgpack.unpackb(data[1:], raw=True)
    assert list(raw) == [
        b"EventLTime",
        b"Events",
        b"LTime",
        b"LeftMembers",
        b"QueryLTime",
        b"StatusLTimes",
    ]
    assert list(raw[b"StatusLTimes"]) == [b"a", b"b"]
    # Empty state: LeftMembers is an empty array (Serf uses make(...,0)), not nil.
    empty = encode_serf_message(SerfPushPull())
    assert b"\xabLeftMembers\x90" in empty


def test_everything_else_is_classified_not_parsed() -> None:
    for t in (3, 4, 5, 6, 7, 8, 9):
        msg = decode_serf_message(bytes([t]) + b"\xc1garbage")
        assert isinstance(msg, OtherSerfMessage) and msg.type == t
        assert isinstance(msg.type, SerfMessageType)
    odd = decode_serf_message(b"\x63xyz")
    assert isinstance(odd, OtherSerfMessage) and odd.type == 0x63 and odd.body == b"xyz"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        b"\x01\xc1",
        b"\x01" + msgpack.packb({"LTime": -1}),
        b"\x02" + msgpack.packb({"StatusLTimes": [1]}),
        b"\x02" + msgpack.packb({"StatusLTimes": {1: 2}}),
        b"\x02" + msgpack.packb({"Events": [5]}),
        b"\x02" + msgpack.packb({"LeftMembers": 5}),
        b"\x02" + msgpack.packb(7),
    ],
)
def test_bad_serf_messages_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode_serf_message(data)
    assert info.value.kind in {
        ErrorKind.EMPTY,
        ErrorKind.TRUNCATED,
        ErrorKind.BAD_MSGPACK,
        ErrorKind.BAD_FIELD,
    }
