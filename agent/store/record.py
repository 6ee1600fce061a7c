"""Record framing for the store's log and snapshot files (pure: bytes in, records out).

A frame is ``[u32 length][u32 crc][body]``, little-endian, where ``body`` is msgpack of
``[seq, kind, payload]`` and ``crc`` is CRC-32 (``zlib.crc32``, IEEE polynomial) over the
four length bytes and then the body.

Why CRC-32 rather than CRC-32C: ``zlib.crc32`` is in the standard library and runs in C
(with the ARMv8 CRC instructions on a Pi 3/4/5 when zlib is built for them), while
CRC-32C needs a third-party extension. Both detect every burst error of 32 bits or less
and every odd number of flipped bits in a record this size; CRC-32C's better Hamming
distance on long messages does not matter for records of a few hundred bytes. The CRC
covers the length too, so a flipped length cannot make a shorter valid-looking record.

The decoder never raises for damaged bytes: it walks a buffer and stops at the first
frame that is torn (runs past the end), has an impossible length, fails its CRC, or
whose body is not a well-formed record. Everything from that frame's start on is
"damage". A fault that is not damage (out of memory, a bug) propagates instead.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, NamedTuple

import msgpack

HEADER = struct.Struct("<II")
HEADER_SIZE = HEADER.size
MAX_BODY = 16 * 1024 * 1024  # a larger length is corruption, never a real record

KIND_DELTA = 0  # payload: bytes (an encoded CRDT delta, opaque to the store)
KIND_META = 1  # payload: dict[str, Any] (node metadata changes: last write wins per key)
KIND_SNAPSHOT = 2  # payload: [segment, meta, state bytes] (only in snapshot files)
KINDS = (KIND_DELTA, KIND_META, KIND_SNAPSHOT)


class Record(NamedTuple):
    seq: int  # position in the log, strictly increasing within a store's lifetime
    kind: int
    payload: Any


def encode(record: Record) -> bytes:
    """One frame for ``record``."""
    body = msgpack.packb([record.seq, record.kind, record.payload], use_bin_type=True)
    if len(body) > MAX_BODY:
        raise ValueError(f"record body of {len(body)} bytes exceeds {MAX_BODY}")
    length = struct.pack("<I", len(body))
    crc = zlib.crc32(body, zlib.crc32(length))
    return length + struct.pack("<I", crc) + body


def _valid(o: Any) -> Record | None:
    if type(o) is not list or len(o) != 3:
        return None
    seq, kind, payload = o
    if type(seq) is not int or seq < 0 or kind not in KINDS or type(kind) is not int:
        return None
    if kind == KIND_DELTA and type(payload) is not bytes:
        return None
    if kind == KIND_META and (
        type(payload) is not dict or not all(type(k) is str for k in payload)
    ):
        return None
    if kind == KIND_SNAPSHOT and (
        type(payload) is not list
        or len(payload) != 3
        or type(payload[0]) is not int
        or type(payload[1]) is not dict
        or type(payload[2]) is not bytes
    ):
        return None
    return Record(seq, kind, payload)


def decode_one(buf: bytes | memoryview, offset: int) -> tuple[Record, int] | None:
    """The record framed at ``offset`` and the offset after it; None if it is damaged."""
    end = len(buf)
    if offset + HEADER_SIZE > end:
        return None
    length, crc = HEADER.unpack_from(buf, offset)
    if length == 0 or length > MAX_BODY or offset + HEADER_SIZE + length > end:
        return None
    body = bytes(buf[offset + HEADER_SIZE : offset + HEADER_SIZE + length])
    if zlib.crc32(body, zlib.crc32(bytes(buf[offset : offset + 4]))) != crc:
        return None
    try:
        o = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        # What malformed msgpack raises (TypeError: an unhashable map key, allowed in by
        # strict_map_key=False). Nothing else is damage: a MemoryError or a bug read as
        # damage would make the store cut valid records off its log.
        return None
    rec = _valid(o)
    if rec is None:
        return None
    return rec, offset + HEADER_SIZE + length


def decode(buf: bytes | memoryview) -> tuple[list[Record], int | None]:
    """Every record up to the first damaged frame, and the offset where the damage starts
    (None when the whole buffer is valid records). Never raises for damaged bytes."""
    out: list[Record] = []
    offset = 0
    end = len(buf)
    while offset < end:
        got = decode_one(buf, offset)
        if got is None:
            return out, offset
        rec, offset = got
        out.append(rec)
    return out, None


def frame_ends(buf: bytes | memoryview) -> list[int]:
    """The end offset of each valid frame, in order (for tests and tools)."""
    ends = []
    offset = 0
    while (got := decode_one(buf, offset)) is not None:
        offset = got[1]
        ends.append(offset)
    return ends
