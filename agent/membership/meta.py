"""Serf tags <-> memberlist node Meta (serf.go encodeTags/decodeTags, protocol >= 3).

Meta is ``0xFF`` + msgpack ``map[string]string``. Anything else (including empty)
is Serf's pre-v3 form and means ``{"role": <meta as string>}``, which is why a
member with no meta shows up as ``role=``. Decoding never fails on damaged bytes: like
Serf we log the damage and keep whatever entries decoded before it, because tags are
advisory and a peer's broken meta must not make its alive message unusable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgpack

from .errors import EncodeError
from .gostruct import MAX_CONTAINER, MSGPACK_ERRORS, encode_str_map, go_bytes, go_str, packb
from .messages import META_MAX_SIZE

__all__ = ["DAMAGE", "TAG_MAGIC", "MetaDamage", "MetaTooLarge", "decode_tags", "encode_tags"]

log = logging.getLogger(__name__)

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


class MetaDamage:
    """Peers' damaged tag blobs this process has seen: each is logged and counted once.

    Serf logs a meta it cannot decode and keeps the tags read before the damage. We do
    the same, but a member's meta is decoded again on every membership change, so a
    blob is reported the first time only (the last ``remember`` blobs are remembered,
    which bounds the memory a hostile peer can make us spend).
    """

    __slots__ = ("_seen", "count", "remember")

    def __init__(self, remember: int = 256) -> None:
        self.remember = remember
        #: Distinct damaged blobs seen (exported as gossip bad input, kind ``bad_meta``).
        self.count = 0
        self._seen: dict[bytes, None] = {}

    def report(self, meta: bytes, problem: str, kept: int) -> None:
        if meta in self._seen:
            return
        if len(self._seen) >= self.remember:
            del self._seen[next(iter(self._seen))]
        self._seen[meta] = None
        self.count += 1
        log.warning(
            "a peer's tags (meta %s%s) are damaged: %s; keeping the %d tags before it",
            meta[:64].hex(),
            "..." if len(meta) > 64 else "",
            problem,
            kept,
        )


#: The process's one record of damaged metas (decode_tags is a plain function).
DAMAGE = MetaDamage()


def decode_tags(meta: bytes) -> dict[str, str]:
    """Tags from a peer's Meta; never raises for damaged bytes (garbage gives the entries
    read so far, and is logged and counted in :data:`DAMAGE`)."""
    tags, problem = _read_tags(meta)
    if problem is not None:
        DAMAGE.report(bytes(meta), problem, len(tags))
    return tags


def _read_tags(meta: bytes) -> tuple[dict[str, str], str | None]:
    """The tags and what was wrong with the rest (None: nothing)."""
    if not meta or meta[0] != TAG_MAGIC:
        return {"role": go_str(bytes(meta))}, None
    body = bytes(meta[1:])
    tags: dict[str, str] = {}
    if body[:1] == b"\xc0":
        return tags, None  # nil: go-msgpack decodes it to an empty map without error
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
                return tags, f"a key of type {type(key).__name__} is not a string"
            if value is None:
                value = b""
            if not isinstance(value, bytes):
                return tags, f"the value of {go_str(key)!r} is not a string"
            tags[go_str(key)] = go_str(value)
    except msgpack.OutOfData:
        return tags, "cut short"
    except MSGPACK_ERRORS as exc:
        return tags, f"not a msgpack map of strings ({exc})"
    return tags, None
