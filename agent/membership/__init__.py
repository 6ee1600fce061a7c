"""Gossip membership: memberlist 0.2.2 / Serf 0.9.4 on the wire, SWIM + Lifeguard inside.

This is the package's front door: other packages import these names from
``agent.membership``, never its modules. The layers behind it, innermost first:

* codecs (codec, stream, serf_messages, meta, gostruct, lzw, keyring): pure, bytes in,
  values out; decoders raise only ``DecodeError``;
* the SWIM/Lifeguard core (protocol.Membership): messages, timers and ``now`` in;
* the packet layer and stream exchanges (packet, stream_exchange): whole datagrams and
  stream bytes, with compound, CRC, compression and encryption;
* ``GossipEndpoint``: core + packet layer as one sans-I/O node (bytes, timers, events);
* ``MembershipNode``: the thin asyncio adapter that runs an endpoint on real sockets.

Names are loaded on first use (PEP 562): ``from agent.membership import Settings`` (the
config parser does) costs only the settings module, not the protocol and asyncio, and
the AES-GCM binding (agent/membership/aesgcm.py, ctypes over the libcrypto that ``ssl``
already maps) is loaded only when a Keyring is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.membership.aesgcm import CryptoUnavailable
    from agent.membership.broadcast_queue import Broadcast
    from agent.membership.counters import Counters
    from agent.membership.endpoint import GossipEndpoint
    from agent.membership.errors import DecodeError, EncodeError
    from agent.membership.gostruct import packb, unpack_one
    from agent.membership.keyring import Keyring, generate_key
    from agent.membership.member import Member
    from agent.membership.messages import NodeState, PushPull, ip_from_wire
    from agent.membership.meta import DAMAGE, decode_tags, encode_tags
    from agent.membership.protocol import (
        ENCRYPTION_OVERHEAD,
        Event,
        HealthScore,
        IncarnationChanged,
        JoinResult,
        LeaveDone,
        MemberEvent,
        NameConflict,
        Rejected,
        RemoteState,
        StreamDone,
        UserMessage,
        max_broadcast,
    )
    from agent.membership.refusals import PEER_REFUSALS
    from agent.membership.serf_intents import SerfClock
    from agent.membership.serf_messages import SerfMessageType, SerfPushPull, encode_serf_message
    from agent.membership.settings import Settings, push_pull_scale
    from agent.membership.stream import StreamDecoder, encode_stream
    from agent.membership.stream_exchange import InboundStream, OutboundStream
    from agent.membership.transport import MembershipNode

_WHERE: dict[str, str] = {
    "max_broadcast": "agent.membership.protocol",
    "ENCRYPTION_OVERHEAD": "agent.membership.protocol",
    "DAMAGE": "agent.membership.meta",
    "Broadcast": "agent.membership.broadcast_queue",
    "Counters": "agent.membership.counters",
    "GossipEndpoint": "agent.membership.endpoint",
    "DecodeError": "agent.membership.errors",
    "EncodeError": "agent.membership.errors",
    "packb": "agent.membership.gostruct",
    "unpack_one": "agent.membership.gostruct",
    "CryptoUnavailable": "agent.membership.aesgcm",
    "Keyring": "agent.membership.keyring",
    "generate_key": "agent.membership.keyring",
    "Member": "agent.membership.member",
    "NodeState": "agent.membership.messages",
    "PushPull": "agent.membership.messages",
    "ip_from_wire": "agent.membership.messages",
    "decode_tags": "agent.membership.meta",
    "encode_tags": "agent.membership.meta",
    "Event": "agent.membership.protocol",
    "IncarnationChanged": "agent.membership.protocol",
    "JoinResult": "agent.membership.protocol",
    "LeaveDone": "agent.membership.protocol",
    "MemberEvent": "agent.membership.protocol",
    "HealthScore": "agent.membership.protocol",
    "NameConflict": "agent.membership.protocol",
    "Rejected": "agent.membership.protocol",
    "PEER_REFUSALS": "agent.membership.refusals",
    "RemoteState": "agent.membership.protocol",
    "StreamDone": "agent.membership.protocol",
    "UserMessage": "agent.membership.protocol",
    "SerfClock": "agent.membership.serf_intents",
    "SerfMessageType": "agent.membership.serf_messages",
    "SerfPushPull": "agent.membership.serf_messages",
    "encode_serf_message": "agent.membership.serf_messages",
    "Settings": "agent.membership.settings",
    "push_pull_scale": "agent.membership.settings",
    "StreamDecoder": "agent.membership.stream",
    "encode_stream": "agent.membership.stream",
    "InboundStream": "agent.membership.stream_exchange",
    "OutboundStream": "agent.membership.stream_exchange",
    "MembershipNode": "agent.membership.transport",
}

__all__ = [
    "DAMAGE",
    "ENCRYPTION_OVERHEAD",
    "PEER_REFUSALS",
    "Broadcast",
    "Counters",
    "CryptoUnavailable",
    "DecodeError",
    "EncodeError",
    "Event",
    "GossipEndpoint",
    "HealthScore",
    "InboundStream",
    "IncarnationChanged",
    "JoinResult",
    "Keyring",
    "LeaveDone",
    "Member",
    "MemberEvent",
    "MembershipNode",
    "NameConflict",
    "NodeState",
    "OutboundStream",
    "PushPull",
    "Rejected",
    "RemoteState",
    "SerfClock",
    "SerfMessageType",
    "SerfPushPull",
    "Settings",
    "StreamDecoder",
    "StreamDone",
    "UserMessage",
    "decode_tags",
    "encode_serf_message",
    "encode_stream",
    "encode_tags",
    "generate_key",
    "ip_from_wire",
    "max_broadcast",
    "packb",
    "push_pull_scale",
    "unpack_one",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use, then cache the value here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
