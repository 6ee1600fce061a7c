"""memberlist 0.2.2 message types as plain immutable values.

Field names follow Go's (``SeqNo`` -> ``seq_no``) so the Go source reads across.
Addresses stay raw ``bytes`` exactly as on the wire (4-byte IPv4 or 16-byte IPv6 /
v4-mapped) so that re-encoding is byte-exact; use :func:`ip_from_wire` /
:func:`ip_to_wire` at the edges. Go strings may hold any bytes; decoded strings use
surrogateescape so they round-trip losslessly.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

__all__ = [
    "DEFAULT_VSN",
    "MAX_PUSH_STATE_BYTES",
    "META_MAX_SIZE",
    "AckResp",
    "Alive",
    "Compress",
    "Dead",
    "ErrResp",
    "IndirectPingReq",
    "Message",
    "MessageType",
    "NackResp",
    "NodeState",
    "Ping",
    "PushNodeState",
    "PushPull",
    "PushPullHeader",
    "Suspect",
    "UserMsg",
    "UserMsgHeader",
    "Vsn",
    "ip_from_wire",
    "ip_to_wire",
    "vsn_problem",
]

#: [pmin, pmax, pcur, dmin, dmax, dcur] exactly as a Debian ``serf agent`` advertises it:
#: memberlist protocol 1..5 speaking 2, Serf delegate protocol 2..5 speaking 5.
DEFAULT_VSN = bytes([1, 5, 2, 2, 5, 5])
#: memberlist refuses to read an encrypted stream longer than this (net.go maxPushStateBytes).
MAX_PUSH_STATE_BYTES = 20 * 1024 * 1024
#: memberlist MetaMaxSize: Serf panics locally when its own tags exceed it.
META_MAX_SIZE = 512
LZW_ALGO = 0


class MessageType(IntEnum):
    """First byte of every memberlist message (net.go ``messageType``)."""

    PING = 0
    INDIRECT_PING = 1
    ACK_RESP = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK_RESP = 11
    HAS_CRC = 12
    ERR = 13
    #: memberlist >= 0.3.0 label header; recognised only so we can reject it by name.
    HAS_LABEL = 244


class NodeState(IntEnum):
    """memberlist NodeStateType as carried in push/pull."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class Vsn:
    """The six version bytes, named; only meaningful when exactly 6 bytes arrived."""

    pmin: int
    pmax: int
    pcur: int
    dmin: int
    dmax: int
    dcur: int

    @classmethod
    def parse(cls, raw: bytes) -> Vsn | None:
        """None unless ``raw`` has at least 6 bytes (Go ignores anything past the sixth)."""
        if len(raw) < 6:
            return None
        return cls(raw[0], raw[1], raw[2], raw[3], raw[4], raw[5])

    def to_bytes(self) -> bytes:
        return bytes([self.pmin, self.pmax, self.pcur, self.dmin, self.dmax, self.dcur])


def vsn_problem(raw: bytes) -> str | None:
    """Why a Vsn is unsafe to act on or to relay, or None when it is fine.

    ``short_vsn`` (1..5 bytes) crashes serf 0.9.4 (index out of range in aliveNode);
    ``no_vsn`` (empty) makes every later push/pull with a serf agent fail verifyProtocol.
    """
    if not raw:
        return "no_vsn"
    if len(raw) < 6:
        return "short_vsn"
    return None


def ip_from_wire(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go ``net.IP`` bytes -> address; 16-byte v4-mapped becomes IPv4; other lengths None."""
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    if len(raw) == 16:
        v6 = ipaddress.IPv6Address(raw)
        return v6.ipv4_mapped or v6
    return None


def ip_to_wire(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """Address -> the bytes Go would send: 4 for IPv4 (what serf sends), 16 for IPv6."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.packed


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe; ``node`` lets the target ignore pings meant for a previous owner."""

    TYPE: ClassVar[MessageType] = MessageType.PING
    seq_no: int = 0
    node: str = ""
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class IndirectPingReq:
    """Ask a peer to probe ``target:port`` for us; ``nack`` asks for a nack on timeout."""

    TYPE: ClassVar[MessageType] = MessageType.INDIRECT_PING
    seq_no: int = 0
    target: bytes = b""
    port: int = 0
    node: str = ""
    nack: bool = False
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class AckResp:
    """Probe answer; Serf puts its network coordinate in ``payload``."""

    TYPE: ClassVar[MessageType] = MessageType.ACK_RESP
    seq_no: int = 0
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class NackResp:
    """Indirect probe attempted but the target did not answer in time."""

    TYPE: ClassVar[MessageType] = MessageType.NACK_RESP
    seq_no: int = 0


@dataclass(frozen=True, slots=True)
class ErrResp:
    """Stream-only reply when the receiver could not read our stream."""

    TYPE: ClassVar[MessageType] = MessageType.ERR
    error: str = ""


@dataclass(frozen=True, slots=True)
class Suspect:
    TYPE: ClassVar[MessageType] = MessageType.SUSPECT
    incarnation: int = 0
    node: str = ""
    from_node: str = ""  # Go field ``From``


@dataclass(frozen=True, slots=True)
class Alive:
    """Also the join announcement. ``vsn`` is kept raw so a short one can be flagged."""

    TYPE: ClassVar[MessageType] = MessageType.ALIVE
    incarnation: int = 0
    node: str = ""
    addr: bytes = b""
    port: int = 0
    meta: bytes = b""
    vsn: bytes = DEFAULT_VSN

    @property
    def vsn_problem(self) -> str | None:
        return vsn_problem(self.vsn)


@dataclass(frozen=True, slots=True)
class Dead:
    """``node == from_node`` means a graceful leave (StateLeft)."""

    TYPE: ClassVar[MessageType] = MessageType.DEAD
    incarnation: int = 0
    node: str = ""
    from_node: str = ""  # Go field ``From``


@dataclass(frozen=True, slots=True)
class PushPullHeader:
    TYPE: ClassVar[MessageType] = MessageType.PUSH_PULL
    nodes: int = 0
    user_state_len: int = 0
    join: bool = False


@dataclass(frozen=True, slots=True)
class PushNodeState:
    name: str = ""
    addr: bytes = b""
    port: int = 0
    meta: bytes = b""
    incarnation: int = 0
    #: A NodeState when known; other integers are kept (Go keeps and ignores them).
    state: int = NodeState.ALIVE
    vsn: bytes = DEFAULT_VSN

    @property
    def vsn_problem(self) -> str | None:
        return vsn_problem(self.vsn)


@dataclass(frozen=True, slots=True)
class PushPull:
    """A whole push/pull stream body: header + node states + opaque delegate (Serf) state."""

    TYPE: ClassVar[MessageType] = MessageType.PUSH_PULL
    nodes: tuple[PushNodeState, ...] = ()
    user_state: bytes = b""
    join: bool = False


@dataclass(frozen=True, slots=True)
class UserMsgHeader:
    TYPE: ClassVar[MessageType] = MessageType.USER
    user_msg_len: int = 0


@dataclass(frozen=True, slots=True)
class UserMsg:
    """Delegate (Serf) payload. Packet form is raw bytes; stream form adds a header."""

    TYPE: ClassVar[MessageType] = MessageType.USER
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Compress:
    """Wrapper whose ``buf`` is Go compress/lzw (LSB, 8) output; algo 0 is the only one."""

    TYPE: ClassVar[MessageType] = MessageType.COMPRESS
    algo: int = LZW_ALGO
    buf: bytes = b""


#: Every value :func:`agent.membership.codec.decode_message` can return.
Message = (
    Ping
    | IndirectPingReq
    | AckResp
    | NackResp
    | ErrResp
    | Suspect
    | Alive
    | Dead
    | PushPull
    | UserMsg
    | Compress
)
