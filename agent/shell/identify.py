"""Identify requests that travel through the cluster ("blink the LEDs of node X").

An operator asks any node (``edge-agent identify --node X`` or POST /v1/identify); if
X is another node, the request goes to it as a memberlist user message over TCP. The
message starts with 0x49 ('I'), outside Serf's message types (0..9) and our replication
messages (0x45), then a msgpack map. A malformed one is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

MAGIC = 0x49
MAX_SECONDS = 3600.0


class IdentifyDecodeError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class IdentifyRequest:
    node: str  # who must blink
    seconds: float
    sender: str  # who asked (for the log)


def is_identify(payload: bytes) -> bool:
    return len(payload) > 1 and payload[0] == MAGIC


def encode_identify(req: IdentifyRequest) -> bytes:
    body = {"node": req.node, "seconds": req.seconds, "from": req.sender}
    return bytes([MAGIC]) + msgpack.packb(body, use_bin_type=True)


def decode_identify(payload: bytes) -> IdentifyRequest:
    if not is_identify(payload):
        raise IdentifyDecodeError("not an identify message")
    try:
        body = msgpack.unpackb(payload[1:], raw=False, max_str_len=1024, max_map_len=8)
    except (ValueError, msgpack.UnpackException) as e:  # all that malformed msgpack raises
        raise IdentifyDecodeError(f"identify message is not msgpack: {e}") from None
    if not isinstance(body, dict):
        raise IdentifyDecodeError("identify message is not a map")
    node, seconds, sender = body.get("node"), body.get("seconds"), body.get("from", "")
    if not isinstance(node, str) or not node or not isinstance(sender, str):
        raise IdentifyDecodeError("identify message: bad node or sender")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise IdentifyDecodeError("identify message: seconds is not a number")
    if not 0 < seconds <= MAX_SECONDS:
        raise IdentifyDecodeError(f"identify message: seconds {seconds} is out of range")
    return IdentifyRequest(node, float(seconds), sender)
