"""Just enough of Serf 0.9.4's message layer (serf/messages.go) to live in a Serf cluster.

Serf rides on memberlist user messages: first byte is the Serf type, then a
go-msgpack struct. We need to *send* join/leave intents (so ``serf members``
shows us as ``left`` rather than ``failed`` when we leave) and Serf's push/pull user
state, and to *recognise* everything else so it can be ignored without noise.
Unknown or undecodable Serf messages are harmless to drop: Serf itself only logs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .errors import DecodeError, EncodeError, ErrorKind
from .gostruct import (
    GoField,
    GoStruct,
    Kind,
    decode_list,
    decode_str_map,
    decode_value,
    encode_str_map,
    go_bytes,
    packb,
    unpack_one,
)

__all__ = [
    "JoinIntent",
    "LeaveIntent",
    "OtherSerfMessage",
    "SerfMessage",
    "SerfMessageType",
    "SerfPushPull",
    "UserEvent",
    "UserEvents",
    "decode_serf_message",
    "encode_serf_message",
]


class SerfMessageType(IntEnum):
    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5
    CONFLICT_RESPONSE = 6
    KEY_REQUEST = 7
    KEY_RESPONSE = 8
    RELAY = 9


@dataclass(frozen=True, slots=True)
class JoinIntent:
    """messageJoin: ties a node to a Lamport time so later leave intents order after it."""

    ltime: int = 0
    node: str = ""


@dataclass(frozen=True, slots=True)
class LeaveIntent:
    """messageLeave: broadcast before memberlist's dead-by-self so Serf shows ``left``."""

    ltime: int = 0
    node: str = ""
    prune: bool = False


@dataclass(frozen=True, slots=True)
class UserEvent:
    name: str = ""
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class UserEvents:
    """Events Serf saw at one Lamport time (one slot of its event buffer)."""

    ltime: int = 0
    events: tuple[UserEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class SerfPushPull:
    """messagePushPull: Serf's delegate state carried in memberlist push/pull."""

    ltime: int = 0
    status_ltimes: Mapping[str, int] = field(default_factory=dict)
    left_members: tuple[str, ...] = ()
    event_ltime: int = 0
    #: Serf sends its whole 512-slot ring buffer; empty slots are None.
    events: tuple[UserEvents | None, ...] = ()
    query_ltime: int = 0


@dataclass(frozen=True, slots=True)
class OtherSerfMessage:
    """A Serf message we do not interpret (events, queries, key ops, relays, unknown)."""

    type: int
    body: bytes


SerfMessage = JoinIntent | LeaveIntent | SerfPushPull | OtherSerfMessage

_LTIME = Kind.U64  # LamportTime is uint64
JOIN = GoStruct(
    "messageJoin", [GoField("LTime", "ltime", _LTIME), GoField("Node", "node", Kind.STR)]
)
LEAVE = GoStruct(
    "messageLeave",
    [
        GoField("LTime", "ltime", _LTIME),
        GoField("Node", "node", Kind.STR),
        GoField("Prune", "prune", Kind.BOOL),
    ],
)
_USER_EVENT = GoStruct(
    "userEvent", [GoField("Name", "name", Kind.STR), GoField("Payload", "payload", Kind.BYTES)]
)
_PP = "messagePushPull"


def encode_serf_message(msg: JoinIntent | LeaveIntent | SerfPushPull) -> bytes:
    """Serf type byte + go-msgpack body: the payload of a memberlist user message."""
    if isinstance(msg, JoinIntent):
        return bytes((SerfMessageType.JOIN,)) + JOIN.encode(msg)
    if isinstance(msg, LeaveIntent):
        return bytes((SerfMessageType.LEAVE,)) + LEAVE.encode(msg)
    if isinstance(msg, SerfPushPull):
        return bytes((SerfMessageType.PUSH_PULL,)) + packb(_push_pull_to_wire(msg))
    raise EncodeError(f"cannot encode {type(msg).__name__} as a Serf message")


def _u64(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
        raise EncodeError(f"{what}={value!r} is not a uint64 Lamport time")
    return value


def _push_pull_to_wire(msg: SerfPushPull) -> dict[str, object]:
    events: list[object] = []
    for slot in msg.events:
        if slot is None:
            events.append(None)
            continue
        evs = [{"Name": go_bytes(e.name), "Payload": bytes(e.payload) or None} for e in slot.events]
        events.append({"Events": evs or None, "LTime": _u64(slot.ltime, "Events.LTime")})
    # Keys in go-msgpack's sorted order; LeftMembers is a non-nil slice in Serf (90).
    return {
        "EventLTime": _u64(msg.event_ltime, "EventLTime"),
        "Events": events,
        "LTime": _u64(msg.ltime, "LTime"),
        "LeftMembers": [go_bytes(n) for n in msg.left_members],
        "QueryLTime": _u64(msg.query_ltime, "QueryLTime"),
        "StatusLTimes": encode_str_map(
            {k: _u64(v, "StatusLTimes") for k, v in msg.status_ltimes.items()}
        ),
    }


def _struct_fields(raw: object, where: str) -> dict[bytes, object]:
    """A struct as a {field: value} dict from map, nil, or (declaration-order) array."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {k: v for k, v in raw.items() if isinstance(k, bytes)}
    raise DecodeError(ErrorKind.BAD_FIELD, f"{where}: expected map")


def _push_pull_from_wire(raw: object) -> SerfPushPull:
    if isinstance(raw, list):  # struct-as-array, declaration order
        names = [b"LTime", b"StatusLTimes", b"LeftMembers", b"EventLTime", b"Events", b"QueryLTime"]
        raw = dict(zip(names, raw, strict=False))
    f = _struct_fields(raw, _PP)
    events: list[UserEvents | None] = []
    for slot in decode_list(f.get(b"Events"), f"{_PP}.Events"):
        if slot is None:
            events.append(None)
            continue
        if isinstance(slot, list):
            slot = dict(zip([b"LTime", b"Events"], slot, strict=False))
        sf = _struct_fields(slot, "userEvents")
        evs = tuple(
            UserEvent(**_USER_EVENT.from_wire(e))
            for e in decode_list(sf.get(b"Events"), "userEvents.Events")
        )
        events.append(
            UserEvents(decode_value(sf.get(b"LTime"), _LTIME, "userEvents", "LTime"), evs)
        )
    left = tuple(
        decode_value(n, Kind.STR, _PP, "LeftMembers")
        for n in decode_list(f.get(b"LeftMembers"), f"{_PP}.LeftMembers")
    )

    def lt(name: bytes) -> Any:
        return decode_value(f.get(name), _LTIME, _PP, name.decode())

    return SerfPushPull(
        ltime=lt(b"LTime"),
        status_ltimes=decode_str_map(f.get(b"StatusLTimes"), _LTIME, f"{_PP}.StatusLTimes"),
        left_members=left,
        event_ltime=lt(b"EventLTime"),
        events=tuple(events),
        query_ltime=lt(b"QueryLTime"),
    )


def decode_serf_message(buf: bytes) -> SerfMessage:
    """Classify a memberlist user-message payload; decode the kinds we act on.

    Raises DecodeError for an empty buffer or a malformed join/leave/push-pull; every
    other type comes back as :class:`OtherSerfMessage` without being parsed.
    """
    if not buf:
        raise DecodeError(ErrorKind.EMPTY, "empty Serf message")
    t = buf[0]
    body = bytes(buf[1:])
    if t == SerfMessageType.JOIN:
        return JoinIntent(**JOIN.from_wire(unpack_one(body)))
    if t == SerfMessageType.LEAVE:
        return LeaveIntent(**LEAVE.from_wire(unpack_one(body)))
    if t == SerfMessageType.PUSH_PULL:
        return _push_pull_from_wire(unpack_one(body))
    return OtherSerfMessage(type=SerfMessageType(t) if t <= 9 else t, body=body)
