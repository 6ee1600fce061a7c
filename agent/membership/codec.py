"""Encode/decode memberlist 0.2.2 messages and UDP packets, byte-for-byte as Go does.

Sans-I/O: bytes in, values out. Packet layering, outermost first (net.go):

    [encrypt (keyring, AAD none)] [0x0c CRC32-IEEE BE] [0x09 compress] [0x07 compound] msg...

Compound and compress may nest in any order on receive (Go's handleCommand recurses).
:func:`decode_packet` raises :class:`DecodeError` only when the packet as a whole is
unusable (empty, label header, decrypt failure, bad CRC); damage inside it (one bad
compound part, unknown type, truncated parts) is reported in ``problems`` next to the
messages that did decode. Malformed input raises nothing but DecodeError; any other
exception is a bug in this code (or a caller passing the wrong type) and propagates
as itself, never dressed up as malformed input. Decompressed size, nesting depth and
item count are bounded so hostile input cannot blow memory or stack.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from . import lzw
from .errors import DecodeError, EncodeError, ErrorKind
from .gostruct import MAX_CONTAINER, MSGPACK_ERRORS, GoField, GoStruct, Kind, unpack_one
from .keyring import ENCRYPTION_VERSION, Keyring
from .messages import (
    LZW_ALGO,
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
    PushPullHeader,
    Suspect,
    UserMsg,
    UserMsgHeader,
    vsn_problem,
)

__all__ = [
    "MAX_COMPOUND_PARTS",
    "MAX_NESTING",
    "MAX_PACKET_ITEMS",
    "MAX_PUSH_NODES",
    "PACKET_MAX_DECOMPRESSED",
    "PacketResult",
    "add_crc",
    "compress_if_smaller",
    "compress_message",
    "decode_message",
    "decode_packet",
    "decode_push_pull_body",
    "decode_user_msg_body",
    "decompress_buffer",
    "decompress_message",
    "encode_message",
    "encode_packet",
    "encode_push_pull_body",
    "encode_struct",
    "encode_user_msg_body",
    "make_compound",
    "message_from_wire",
    "push_node_state",
    "push_pull_header",
    "split_compound",
    "strip_crc",
    "user_msg_header",
]

#: Total bytes all compress layers of one UDP packet may expand to. Go has no limit;
#: Serf's own packets are <= ~1.4 kB before compression, so this is very generous.
PACKET_MAX_DECOMPRESSED = 256 * 1024
#: Compound/compress nesting depth we follow; Go sends at most compress(compound(...)).
MAX_NESTING = 8
#: Messages + problems collected from one packet before we stop looking.
MAX_PACKET_ITEMS = 2048
#: Node states accepted in one push/pull (a 20 MiB stream of nils would otherwise be
#: millions of objects). Far above any cluster this agent is meant for.
MAX_PUSH_NODES = 16384
#: memberlist 0.2.2 writes the part count as one byte and does not split.
MAX_COMPOUND_PARTS = 255

_F = GoField
PING = GoStruct(
    "ping",
    [
        _F("SeqNo", "seq_no", Kind.U32),
        _F("Node", "node", Kind.STR),
        _F("SourceAddr", "source_addr", Kind.BYTES, omitempty=True),
        _F("SourcePort", "source_port", Kind.U16, omitempty=True),
        _F("SourceNode", "source_node", Kind.STR, omitempty=True),
    ],
)
INDIRECT_PING = GoStruct(
    "indirectPingReq",
    [
        _F("SeqNo", "seq_no", Kind.U32),
        _F("Target", "target", Kind.BYTES),
        _F("Port", "port", Kind.U16),
        _F("Node", "node", Kind.STR),
        _F("Nack", "nack", Kind.BOOL),
        _F("SourceAddr", "source_addr", Kind.BYTES, omitempty=True),
        _F("SourcePort", "source_port", Kind.U16, omitempty=True),
        _F("SourceNode", "source_node", Kind.STR, omitempty=True),
    ],
)
ACK_RESP = GoStruct(
    "ackResp", [_F("SeqNo", "seq_no", Kind.U32), _F("Payload", "payload", Kind.BYTES)]
)
NACK_RESP = GoStruct("nackResp", [_F("SeqNo", "seq_no", Kind.U32)])
ERR_RESP = GoStruct("errResp", [_F("Error", "error", Kind.STR)])
SUSPECT = GoStruct(
    "suspect",
    [
        _F("Incarnation", "incarnation", Kind.U32),
        _F("Node", "node", Kind.STR),
        _F("From", "from_node", Kind.STR),
    ],
)
ALIVE = GoStruct(
    "alive",
    [
        _F("Incarnation", "incarnation", Kind.U32),
        _F("Node", "node", Kind.STR),
        _F("Addr", "addr", Kind.BYTES),
        _F("Port", "port", Kind.U16),
        _F("Meta", "meta", Kind.BYTES),
        _F("Vsn", "vsn", Kind.BYTES),
    ],
)
DEAD = GoStruct(
    "dead",
    [
        _F("Incarnation", "incarnation", Kind.U32),
        _F("Node", "node", Kind.STR),
        _F("From", "from_node", Kind.STR),
    ],
)
PUSH_PULL_HEADER = GoStruct(
    "pushPullHeader",
    [
        _F("Nodes", "nodes", Kind.INT),
        _F("UserStateLen", "user_state_len", Kind.INT),
        _F("Join", "join", Kind.BOOL),
    ],
)
USER_MSG_HEADER = GoStruct("userMsgHeader", [_F("UserMsgLen", "user_msg_len", Kind.INT)])
PUSH_NODE_STATE = GoStruct(
    "pushNodeState",
    [
        _F("Name", "name", Kind.STR),
        _F("Addr", "addr", Kind.BYTES),
        _F("Port", "port", Kind.U16),
        _F("Meta", "meta", Kind.BYTES),
        _F("Incarnation", "incarnation", Kind.U32),
        _F("State", "state", Kind.INT),
        _F("Vsn", "vsn", Kind.BYTES),
    ],
)
COMPRESS = GoStruct("compress", [_F("Algo", "algo", Kind.U8), _F("Buf", "buf", Kind.BYTES)])

_SCHEMAS: dict[type, GoStruct] = {
    Ping: PING,
    IndirectPingReq: INDIRECT_PING,
    AckResp: ACK_RESP,
    NackResp: NACK_RESP,
    ErrResp: ERR_RESP,
    Suspect: SUSPECT,
    Alive: ALIVE,
    Dead: DEAD,
    PushPullHeader: PUSH_PULL_HEADER,
    UserMsgHeader: USER_MSG_HEADER,
    PushNodeState: PUSH_NODE_STATE,
    Compress: COMPRESS,
}
_BY_TYPE: dict[int, tuple[type, GoStruct]] = {
    MessageType.PING: (Ping, PING),
    MessageType.INDIRECT_PING: (IndirectPingReq, INDIRECT_PING),
    MessageType.ACK_RESP: (AckResp, ACK_RESP),
    MessageType.NACK_RESP: (NackResp, NACK_RESP),
    MessageType.ERR: (ErrResp, ERR_RESP),
    MessageType.SUSPECT: (Suspect, SUSPECT),
    MessageType.ALIVE: (Alive, ALIVE),
    MessageType.DEAD: (Dead, DEAD),
    MessageType.COMPRESS: (Compress, COMPRESS),
}
_KNOWN_TYPES = frozenset(int(t) for t in MessageType)
_CRC_HEADER = struct.Struct(">BI")


# --------------------------------------------------------------------------- structs
def encode_struct(obj: object) -> bytes:
    """The msgpack map for one memberlist struct (no type byte)."""
    schema = _SCHEMAS.get(type(obj))
    if schema is None:
        raise EncodeError(f"not a memberlist struct: {type(obj).__name__}")
    if isinstance(obj, (Alive, PushNodeState)):
        problem = vsn_problem(obj.vsn)
        if problem is not None:
            # A 1..5 byte Vsn crashes serf 0.9.4; an empty one breaks its push/pulls.
            raise EncodeError(f"refusing to send {type(obj).__name__} with {problem}")
    return schema.encode(obj)


def _decode_struct(cls: type, schema: GoStruct, raw: object) -> Any:
    values = schema.from_wire(raw)
    if cls is PushNodeState:
        state = values["state"]
        if 0 <= state <= NodeState.LEFT:
            values["state"] = NodeState(state)
    return cls(**values)


# --------------------------------------------------------------------------- messages
def message_from_wire(t: int, raw: object) -> Message:
    """Build a single-struct message of type ``t`` from its decoded msgpack value."""
    entry = _BY_TYPE.get(t)
    if entry is None:
        raise DecodeError(ErrorKind.UNEXPECTED_TYPE, f"type {t} is not a single struct")
    cls, schema = entry
    result: Message = _decode_struct(cls, schema, raw)
    return result


def encode_message(msg: Message) -> bytes:
    """One message with its type byte. ``UserMsg`` is the packet form (raw payload)."""
    if isinstance(msg, UserMsg):
        return bytes((MessageType.USER,)) + bytes(msg.payload)
    if isinstance(msg, PushPull):
        return encode_push_pull_body(msg)
    return bytes((msg.TYPE,)) + encode_struct(msg)


def decode_message(data: bytes) -> Message:
    """Decode one complete message (type byte first). Framing types are refused.

    Lenient like go-msgpack; trailing bytes after the msgpack object are ignored, as
    Go's decoder ignores them. An ``Alive`` with a short Vsn is returned as-is: check
    ``alive.vsn_problem`` (decode_packet drops those for you).
    """
    if not data:
        raise DecodeError(ErrorKind.EMPTY, "empty message")
    t = data[0]
    if t in _BY_TYPE:
        return message_from_wire(t, unpack_one(data[1:]))
    if t == MessageType.USER:
        return UserMsg(bytes(data[1:]))
    if t == MessageType.PUSH_PULL:
        return decode_push_pull_body(data[1:])
    if t == MessageType.HAS_LABEL:
        raise DecodeError(ErrorKind.LABEL_UNSUPPORTED, "label header (memberlist >= 0.3)")
    if t in _KNOWN_TYPES:
        raise DecodeError(ErrorKind.UNEXPECTED_TYPE, f"framing type {t} is not a message")
    raise DecodeError(ErrorKind.UNKNOWN_TYPE, f"message type {t}")


def _unpacker(size: int) -> msgpack.Unpacker:
    # Container limits tied to the input size: no length header can make msgpack
    # preallocate more than the bytes we actually hold could describe.
    n = max(size, 16)
    return msgpack.Unpacker(
        raw=True,
        max_buffer_size=n,
        max_str_len=n,
        max_bin_len=n,
        max_array_len=min(n, MAX_CONTAINER),
        max_map_len=min(n, MAX_CONTAINER),
        max_ext_len=n,
    )


def _next(unpacker: msgpack.Unpacker, what: str) -> Any:
    try:
        return unpacker.unpack()
    except msgpack.OutOfData:
        raise DecodeError(ErrorKind.TRUNCATED, f"{what} cut short") from None
    except MSGPACK_ERRORS as exc:
        raise DecodeError(ErrorKind.BAD_MSGPACK, f"{what}: {type(exc).__name__}") from None


def push_pull_header(raw: object, max_nodes: int) -> PushPullHeader:
    """Validate a decoded header; Go panics on negative Nodes (makeslice), we refuse."""
    header: PushPullHeader = _decode_struct(PushPullHeader, PUSH_PULL_HEADER, raw)
    if header.nodes < 0 or header.user_state_len < 0:
        raise DecodeError(ErrorKind.BAD_FIELD, "negative length in pushPullHeader")
    if header.nodes > max_nodes:
        raise DecodeError(ErrorKind.TOO_LARGE, f"push/pull with {header.nodes} nodes")
    return header


def push_node_state(raw: object) -> PushNodeState:
    state: PushNodeState = _decode_struct(PushNodeState, PUSH_NODE_STATE, raw)
    return state


def decode_push_pull_body(body: bytes, *, max_nodes: int = MAX_PUSH_NODES) -> PushPull:
    """A complete push/pull body (after the 0x06 byte): header, states, user state."""
    unpacker = _unpacker(len(body))
    unpacker.feed(body)
    header = push_pull_header(_next(unpacker, "pushPullHeader"), max_nodes)
    nodes = tuple(push_node_state(_next(unpacker, "pushNodeState")) for _ in range(header.nodes))
    offset = unpacker.tell()
    user_state = bytes(body[offset : offset + header.user_state_len])
    if len(user_state) < header.user_state_len:
        raise DecodeError(
            ErrorKind.TRUNCATED, f"user state {len(user_state)}/{header.user_state_len} bytes"
        )
    return PushPull(nodes=nodes, user_state=user_state, join=header.join)


def encode_push_pull_body(msg: PushPull) -> bytes:
    """``[0x06] header state* user_state`` (uncompressed, unencrypted stream body)."""
    header = PushPullHeader(nodes=len(msg.nodes), user_state_len=len(msg.user_state), join=msg.join)
    out = [bytes((MessageType.PUSH_PULL,)), encode_struct(header)]
    out.extend(encode_struct(n) for n in msg.nodes)
    out.append(bytes(msg.user_state))
    return b"".join(out)


def decode_user_msg_body(body: bytes) -> UserMsg:
    """Stream form of a user message (after the 0x08 byte): header then raw bytes."""
    unpacker = _unpacker(len(body))
    unpacker.feed(body)
    header = user_msg_header(_next(unpacker, "userMsgHeader"))
    offset = unpacker.tell()
    payload = bytes(body[offset : offset + header.user_msg_len])
    if len(payload) < header.user_msg_len:
        raise DecodeError(ErrorKind.TRUNCATED, f"user msg {len(payload)}/{header.user_msg_len}")
    return UserMsg(payload)


def user_msg_header(raw: object) -> UserMsgHeader:
    header: UserMsgHeader = _decode_struct(UserMsgHeader, USER_MSG_HEADER, raw)
    if header.user_msg_len < 0:
        raise DecodeError(ErrorKind.BAD_FIELD, "negative UserMsgLen")
    return header


def encode_user_msg_body(payload: bytes) -> bytes:
    """``[0x08] userMsgHeader payload`` as sendUserMsg writes it on a stream."""
    header = encode_struct(UserMsgHeader(user_msg_len=len(payload)))
    return bytes((MessageType.USER,)) + header + bytes(payload)


# --------------------------------------------------------------------------- framing
def make_compound(parts: Sequence[bytes]) -> bytes:
    """``[0x07][n][len BE16]*n parts``; refuses what Go would mangle or choke on."""
    if len(parts) > MAX_COMPOUND_PARTS:
        raise EncodeError(f"{len(parts)} parts; a compound holds at most 255, split them")
    for p in parts:
        if not p:
            # Go 0.2.2 indexes buf[0] of every part: an empty part panics the receiver.
            raise EncodeError("empty compound part")
        if len(p) > 0xFFFF:
            raise EncodeError(f"compound part of {len(p)} bytes exceeds 65535")
    header = struct.pack(f">BB{len(parts)}H", MessageType.COMPOUND, len(parts), *map(len, parts))
    return header + b"".join(parts)


def split_compound(data: bytes) -> tuple[list[bytes], int]:
    """Parts of a compound message (type byte included) and how many were truncated.

    Like Go, a short buffer keeps the parts that fit and counts the rest as truncated.
    """
    if len(data) < 2 or data[0] != MessageType.COMPOUND:
        raise DecodeError(ErrorKind.TRUNCATED, "missing compound length byte")
    n = data[1]
    if len(data) < 2 + 2 * n:
        raise DecodeError(ErrorKind.TRUNCATED, "truncated compound length table")
    lengths = struct.unpack_from(f">{n}H", data, 2)
    pos = 2 + 2 * n
    parts: list[bytes] = []
    for i, length in enumerate(lengths):
        if pos + length > len(data):
            return parts, n - i
        parts.append(bytes(data[pos : pos + length]))
        pos += length
    return parts, 0


def add_crc(packet: bytes) -> bytes:
    """Prefix ``[0x0c][CRC32-IEEE BE]``; Go adds it only for peers with PMax >= 5."""
    if not packet:
        raise EncodeError("empty packet")  # Go would panic indexing the empty rest
    return _CRC_HEADER.pack(MessageType.HAS_CRC, zlib.crc32(packet)) + bytes(packet)


def strip_crc(packet: bytes) -> tuple[bytes, bool]:
    """Verify and remove a CRC header if present; returns (rest, had_crc)."""
    if len(packet) >= 5 and packet[0] == MessageType.HAS_CRC:
        _, expected = _CRC_HEADER.unpack_from(packet)
        rest = bytes(packet[5:])
        got = zlib.crc32(rest)
        if got != expected:
            raise DecodeError(ErrorKind.BAD_CRC, f"crc {got:08x} != {expected:08x}")
        return rest, True
    if packet and packet[0] == MessageType.HAS_CRC:
        raise DecodeError(ErrorKind.TRUNCATED, "crc header cut short")
    return bytes(packet), False


def compress_message(data: bytes) -> bytes:
    """``[0x09] msgpack(compress{Algo: 0, Buf: lzw(data)})``."""
    if not data:
        raise EncodeError("refusing to compress an empty message")
    return bytes((MessageType.COMPRESS,)) + encode_struct(
        Compress(algo=LZW_ALGO, buf=lzw.compress(bytes(data)))
    )


def _least_overhead() -> int:
    """What ``compress_message`` adds around the LZW stream at the least (the type byte
    and the msgpack map; a longer stream only takes a longer length header)."""
    return len(compress_message(b"x")) - len(lzw.compress(b"x"))


_LEAST_OVERHEAD = _least_overhead()


def compress_if_smaller(data: bytes) -> bytes | None:
    """``compress_message(data)`` when it is shorter than ``data`` (rawSendMsgPacket keeps
    only that), else None. Most gossip packets do not get shorter: that is proved from a
    lower bound on the LZW stream (lzw.least_size) without compressing them, and for
    most others the compressor gives up as soon as its codes cannot fit."""
    most = len(data) - _LEAST_OVERHEAD - 1  # LZW bytes a shorter message can hold
    if lzw.least_size(data) > most:
        return None
    stream = lzw.compress_within(data, most)
    if stream is None:
        return None
    packed = bytes((MessageType.COMPRESS,)) + encode_struct(Compress(algo=LZW_ALGO, buf=stream))
    return packed if len(packed) < len(data) else None


def decompress_message(data: bytes, max_output: int = PACKET_MAX_DECOMPRESSED) -> bytes:
    """Inverse of :func:`compress_message` (type byte included), bounded by ``max_output``."""
    msg = decode_message(data)
    if not isinstance(msg, Compress):
        raise DecodeError(ErrorKind.UNEXPECTED_TYPE, "not a compress message")
    return decompress_buffer(msg, max_output)


def decompress_buffer(msg: Compress, max_output: int) -> bytes:
    if msg.algo != LZW_ALGO:
        raise DecodeError(ErrorKind.BAD_COMPRESSION, f"unknown compression algorithm {msg.algo}")
    return lzw.decompress(msg.buf, max_output)


# --------------------------------------------------------------------------- packets
@dataclass(frozen=True, slots=True)
class PacketResult:
    """What one UDP packet held: the messages, plus what was wrong with the rest of it."""

    messages: tuple[Message, ...]
    problems: tuple[DecodeError, ...] = ()
    encrypted: bool = False
    crc: bool = False


_PACKET_MESSAGE_TYPES = frozenset(
    {
        MessageType.PING,
        MessageType.INDIRECT_PING,
        MessageType.ACK_RESP,
        MessageType.NACK_RESP,
        MessageType.SUSPECT,
        MessageType.ALIVE,
        MessageType.DEAD,
        MessageType.USER,
    }
)


class _Walker:
    """Recursive compound/compress walk with shared budgets for one packet."""

    __slots__ = ("budget", "max_depth", "messages", "overflowed", "problems")

    def __init__(self, budget: int, max_depth: int) -> None:
        self.budget = budget
        self.max_depth = max_depth
        self.messages: list[Message] = []
        self.problems: list[DecodeError] = []
        self.overflowed = False

    def full(self) -> bool:
        """True once the item cap is hit; records a single too_large problem."""
        if len(self.messages) + len(self.problems) < MAX_PACKET_ITEMS:
            return False
        if not self.overflowed:
            self.overflowed = True
            self.problems.append(DecodeError(ErrorKind.TOO_LARGE, "too many items in packet"))
        return True

    def problem(self, err: DecodeError) -> None:
        if not self.full():
            self.problems.append(err)

    def walk(self, buf: bytes, depth: int) -> None:
        if self.full():
            return
        if depth > self.max_depth:
            self.problem(DecodeError(ErrorKind.TOO_DEEP, f"nesting deeper than {self.max_depth}"))
            return
        if not buf:
            # Go 0.2.2 would panic on this (buf[0] of an empty part).
            self.problem(DecodeError(ErrorKind.EMPTY, "empty message"))
            return
        t = buf[0]
        try:
            if t == MessageType.COMPOUND:
                parts, truncated = split_compound(buf)
                for part in parts:
                    self.walk(part, depth + 1)
                    if self.full():
                        return
                if truncated:
                    self.problem(
                        DecodeError(ErrorKind.TRUNCATED, f"{truncated} truncated compound parts")
                    )
            elif t == MessageType.COMPRESS:
                msg = decode_message(buf)
                assert isinstance(msg, Compress)
                inner = decompress_buffer(msg, self.budget)
                self.budget -= len(inner)
                self.walk(inner, depth + 1)
            elif t in _PACKET_MESSAGE_TYPES:
                msg = decode_message(buf)
                if isinstance(msg, Alive) and vsn_problem(msg.vsn) == "short_vsn":
                    raise DecodeError(ErrorKind.SHORT_VSN, f"alive for {msg.node!r}")
                self.messages.append(msg)
            elif t == MessageType.HAS_LABEL:
                raise DecodeError(ErrorKind.LABEL_UNSUPPORTED, "label header")
            elif t in _KNOWN_TYPES:
                raise DecodeError(ErrorKind.UNEXPECTED_TYPE, f"type {t} is not valid in a packet")
            else:
                raise DecodeError(ErrorKind.UNKNOWN_TYPE, f"message type {t}")
        except DecodeError as err:
            self.problem(err)


def decode_packet(
    data: bytes,
    keyring: Keyring | None = None,
    *,
    verify_incoming: bool = True,
    max_decompressed: int = PACKET_MAX_DECOMPRESSED,
    max_depth: int = MAX_NESTING,
) -> PacketResult:
    """Decode a received UDP packet into messages (compound/compress flattened).

    Raises DecodeError only for whole-packet failures. With a keyring the packet must
    decrypt (AAD none) unless ``verify_incoming`` is False (Go's GossipVerifyIncoming),
    in which case an undecryptable packet is read as plaintext.
    """
    if not data:
        raise DecodeError(ErrorKind.EMPTY, "empty packet")
    if data[0] == MessageType.HAS_LABEL:
        raise DecodeError(ErrorKind.LABEL_UNSUPPORTED, "label header (memberlist >= 0.3)")
    encrypted = False
    if keyring is not None:
        try:
            data = keyring.decrypt(data, None)
            encrypted = True
        except DecodeError:
            if verify_incoming:
                raise
    body, had_crc = strip_crc(data)
    if not body:
        raise DecodeError(ErrorKind.EMPTY, "nothing after the crc header")
    walker = _Walker(max_decompressed, max_depth)
    walker.walk(body, 0)
    return PacketResult(
        messages=tuple(walker.messages),
        problems=tuple(walker.problems),
        encrypted=encrypted,
        crc=had_crc,
    )


def encode_packet(
    msgs: Iterable[Message | bytes],
    *,
    compress: bool = False,
    crc: bool = False,
    keyring: Keyring | None = None,
    encryption_version: int = ENCRYPTION_VERSION,
) -> bytes:
    """Build one UDP packet the way rawSendMsgPacket does.

    Items may be messages or already-encoded messages (e.g. queued broadcasts).
    Several become a compound (max 255; split before calling). ``compress`` keeps the
    LZW form only if it is smaller, as Go does. ``crc`` should be set when the peer's
    PMax >= 5. With a keyring the result is encrypted with the primary key, AAD none.
    """
    parts: list[bytes] = []
    for m in msgs:
        if isinstance(m, (bytes, bytearray, memoryview)):
            part = bytes(m)
            if not part:
                raise EncodeError("empty message")
        elif isinstance(m, (PushPull, ErrResp)):
            raise EncodeError(f"{type(m).__name__} is stream-only")
        else:
            part = encode_message(m)
        parts.append(part)
    if not parts:
        raise EncodeError("no messages")
    body = parts[0] if len(parts) == 1 else make_compound(parts)
    if compress and (packed := compress_if_smaller(body)) is not None:
        body = packed
    if crc:
        body = add_crc(body)
    if keyring is not None:
        body = keyring.encrypt(body, None, version=encryption_version)
    return body
