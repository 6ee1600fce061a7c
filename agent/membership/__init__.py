"""memberlist 0.2.2 / Serf 0.9.4 wire codecs, sans-I/O.

Everything here is pure: bytes in, values out (and back). No sockets, clocks or
sleeps, so the gossip state machine can be tested deterministically and the same
code serves the UDP and TCP paths. Decoders raise only :class:`DecodeError`.
"""

from __future__ import annotations

from .codec import PacketResult, decode_message, decode_packet, encode_message, encode_packet
from .errors import DecodeError, EncodeError, ErrorKind
from .keyring import Keyring, generate_key
from .messages import (
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
    PushPullHeader,
    Suspect,
    UserMsg,
    UserMsgHeader,
    ip_from_wire,
    ip_to_wire,
)
from .meta import MetaTooLarge, decode_tags, encode_tags
from .stream import StreamDecoder, StreamMessage, decode_stream, encode_stream

__all__ = [
    "DEFAULT_VSN",
    "AckResp",
    "Alive",
    "Compress",
    "Dead",
    "DecodeError",
    "EncodeError",
    "ErrResp",
    "ErrorKind",
    "IndirectPingReq",
    "Keyring",
    "Message",
    "MessageType",
    "MetaTooLarge",
    "NackResp",
    "NodeState",
    "PacketResult",
    "Ping",
    "PushNodeState",
    "PushPull",
    "PushPullHeader",
    "StreamDecoder",
    "StreamMessage",
    "Suspect",
    "UserMsg",
    "UserMsgHeader",
    "decode_message",
    "decode_packet",
    "decode_stream",
    "decode_tags",
    "encode_message",
    "encode_packet",
    "encode_stream",
    "encode_tags",
    "generate_key",
    "ip_from_wire",
    "ip_to_wire",
]
