"""Serf tags <-> memberlist node Meta (serf.go encodeTags/decodeTags, protocol >= 3).

Meta is ``0xFF`` + msgpack ``map[string]string``. Anything else (including empty)
is Serf's pre-v3 form and means ``{"role": <meta as string>}``, which is why a
member with no meta shows up as ``role=``. Decoding never fails: like Serf we keep
whatever entries decoded before any damage, because tags are advisory and a peer's
broken meta must not make its alive message unusable.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgpack

from .errors import EncodeError
from .gostruct import MAX_CONTAINER, encode_str_map, go_bytes, go_str, packb
from .messages import META_MAX_SIZE

__all__ = ["TAG_MAGIC", "MetaTooLarge", "decode_tags", "encode_tags"]

TAG_MAGIC = 0xFF


class MetaTooLarge(EncodeError):
    """Encoded tags exceed memberlist's 512-byte MetaMaxSize (Serf refuses these too)."""


def encode_tags(tags: Mapping[str, str], max_size: int = META_MAX_SIZE) -> bytes:
    """``0xFF`` + msgpack map, keys sorted so the bytes are reproducible."""
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise EncodeError("tag keys and values must be str")
    meta = bytes((TAG_MAGIC,)) + packb(encode_str_map({k: go_bytes(v) for k, v in tags.items()}))
    if len(meta) > max_size:
        raise MetaTooLarge(
            f"encoded tags are {len(meta)} bytes; memberlist allows at most {max_size}"
        )
    return meta


def decode_tags(meta: bytes) -> dict[str, str]:
    """Tags from a peer's Meta; never raises (garbage gives the entries read so far)."""
    if not meta or meta[0] != TAG_MAGIC:
        return {"role": go_str(bytes(meta))}
    body = bytes(meta[1:])
    tags: dict[str, str] = {}
    limit = max(16, min(len(body), MAX_CONTAINER))
    unpacker = msgpack.Unpacker(
        raw=True,
        max_buffer_size=max(16, len(body)),
        max_array_len=limit,
        max_map_len=limit,
    )
    unpacker.feed(body)
    try:
        count = unpacker.read_map_header()
        for _ in range(count):
            key = unpacker.unpack()
            value = unpacker.unpack()
            if not isinstance(key, bytes):
                break
            if value is None:
                value = b""
            if not isinstance(value, bytes):
                break
            tags[go_str(key)] = go_str(value)
    except Exception:  # Serf logs and keeps what it has; so do we
        pass
    return tags
