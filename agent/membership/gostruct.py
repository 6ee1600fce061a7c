"""Go struct <-> msgpack mapping, reproducing hashicorp/go-msgpack 0.5.5 (``MsgpackHandle{}``).

Why a hand-rolled mapping: memberlist encodes structs as maps keyed by the exact Go
field name, sorted by name, with both ``string`` and ``[]byte`` in the old raw-str
family (never bin, never str8), and nil slices as msgpack nil. Decoding is lenient in
the same ways go-msgpack is (any key order, unknown keys skipped, missing keys and nil
give zero values, a struct may arrive as an array in declaration order, ``[]byte``
accepts str, bin or an array of small ints), so a Python node accepts everything a
Go node accepts.

One deliberate difference: we unpack with ``raw=True`` (addresses and meta are
binary in str clothing), which cannot tell bin from str, so a bin value in a
``string`` field is accepted here although Go rejects it. We never *send* bin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from .errors import DecodeError, EncodeError, ErrorKind

__all__ = [
    "MAX_CONTAINER",
    "MSGPACK_ERRORS",
    "GoField",
    "GoStruct",
    "Kind",
    "decode_list",
    "decode_str_map",
    "decode_value",
    "encode_str_map",
    "go_bytes",
    "go_str",
    "packb",
    "unpack_one",
]


#: What msgpack raises on malformed bytes, and nothing else: its own UnpackException family
#: (OutOfData, FormatError, StackError, BufferFull) and ValueError (incomplete input, a
#: length over a limit, a map key that is not a string, a bad ext or timestamp, ExtraData,
#: UnicodeDecodeError). A TypeError, AttributeError, MemoryError... is a bug or a fault,
#: not a peer's garbage, and must not be dropped and counted as one.
MSGPACK_ERRORS: tuple[type[Exception], ...] = (ValueError, msgpack.UnpackException)

#: Largest msgpack array/map we accept. memberlist structs hold none bigger than 6; Serf's
#: state maps scale with cluster size. Without a cap, a 5-byte array32 header makes the
#: C unpacker preallocate a list of up to 4 billion slots.
MAX_CONTAINER = 65536


class Kind(IntEnum):
    """Go field types that matter on the wire."""

    U8 = 0
    U16 = 1
    U32 = 2
    U64 = 3
    INT = 4  # Go int / int64 (also time.Duration)
    BOOL = 5
    STR = 6
    BYTES = 7  # []byte, []uint8, net.IP


_RANGES: dict[Kind, tuple[int, int]] = {
    Kind.U8: (0, 0xFF),
    Kind.U16: (0, 0xFFFF),
    Kind.U32: (0, 0xFFFF_FFFF),
    Kind.U64: (0, 0xFFFF_FFFF_FFFF_FFFF),
    Kind.INT: (-(1 << 63), (1 << 63) - 1),
}

_ZERO: dict[Kind, object] = {
    Kind.U8: 0,
    Kind.U16: 0,
    Kind.U32: 0,
    Kind.U64: 0,
    Kind.INT: 0,
    Kind.BOOL: False,
    Kind.STR: "",
    Kind.BYTES: b"",
}


def go_str(raw: bytes) -> str:
    """Go strings are arbitrary bytes; surrogateescape keeps them lossless in a Python str."""
    return raw.decode("utf-8", "surrogateescape")


def go_bytes(text: str) -> bytes:
    """Inverse of :func:`go_str`."""
    return text.encode("utf-8", "surrogateescape")


def packb(obj: object) -> bytes:
    """msgpack exactly as go-msgpack writes it: raw str family for str *and* bytes."""
    out = msgpack.packb(obj, use_bin_type=False)
    assert isinstance(out, bytes)
    return out


def unpack_one(data: bytes) -> Any:
    """Decode the first msgpack object in ``data`` and ignore any trailing bytes, as Go does.

    ``unpackb`` bounds container lengths by the buffer size, so hostile length
    headers cannot make it preallocate more than the input justifies.
    """
    limit = min(len(data), MAX_CONTAINER)
    try:
        return msgpack.unpackb(data, raw=True, max_array_len=limit, max_map_len=limit)
    except msgpack.ExtraData as extra:
        return extra.unpacked
    except MSGPACK_ERRORS as exc:
        raise _bad_msgpack(exc, len(data)) from None


def _bad_msgpack(exc: Exception, size: int) -> DecodeError:
    if isinstance(exc, msgpack.OutOfData) or "incomplete" in str(exc):
        return DecodeError(ErrorKind.TRUNCATED, f"msgpack object cut short ({size} bytes)")
    return DecodeError(ErrorKind.BAD_MSGPACK, f"{type(exc).__name__}: {exc}"[:120])


@dataclass(frozen=True, slots=True)
class GoField:
    """One Go struct field: its wire name, our attribute name, its type, ``omitempty``."""

    go_name: str
    attr: str
    kind: Kind
    omitempty: bool = False


class GoStruct:
    """A Go struct schema: declaration order for arrays, sorted order for encoding."""

    __slots__ = ("_by_key", "_sorted", "fields", "name", "zero")

    def __init__(self, name: str, fields: Iterable[GoField]) -> None:
        self.name = name
        self.fields: tuple[GoField, ...] = tuple(fields)
        self._sorted = tuple(sorted(self.fields, key=lambda f: f.go_name.encode()))
        self._by_key = {f.go_name.encode(): f for f in self.fields}
        self.zero: dict[str, object] = {f.attr: _ZERO[f.kind] for f in self.fields}

    # -- encoding ---------------------------------------------------------------
    def to_wire(self, obj: object) -> dict[str, object]:
        """Map ready for :func:`packb`; raises EncodeError for values Go could not hold."""
        out: dict[str, object] = {}
        for f in self._sorted:
            value = getattr(obj, f.attr)
            wire = _encode_value(value, f, self.name)
            if f.omitempty and (wire is None or wire == 0 or wire == b"" or wire is False):
                continue
            out[f.go_name] = wire
        return out

    def encode(self, obj: object) -> bytes:
        return packb(self.to_wire(obj))

    # -- decoding ---------------------------------------------------------------
    def from_wire(self, obj: object) -> dict[str, Any]:
        """Attribute values (zero-filled) from a decoded msgpack map, array or nil."""
        values = dict(self.zero)
        if obj is None:
            return values
        if isinstance(obj, dict):
            for key, raw in obj.items():
                f = self._by_key.get(key) if isinstance(key, bytes) else None
                if f is not None:
                    values[f.attr] = decode_value(raw, f.kind, self.name, f.go_name)
            return values
        if isinstance(obj, list):
            for f, raw in zip(self.fields, obj, strict=False):
                values[f.attr] = decode_value(raw, f.kind, self.name, f.go_name)
            return values
        raise DecodeError(
            ErrorKind.BAD_FIELD, f"{self.name}: expected map, got {type(obj).__name__}"
        )


def _encode_value(value: object, f: GoField, struct: str) -> object:
    kind = f.kind
    if kind is Kind.STR:
        if isinstance(value, str):
            return go_bytes(value)
        if isinstance(value, bytes):
            return value
    elif kind is Kind.BYTES:
        if isinstance(value, (bytes, bytearray, memoryview)):
            b = bytes(value)
            return b if b else None  # Go nil slice -> msgpack nil
    elif kind is Kind.BOOL:
        if isinstance(value, bool):
            return value
    elif isinstance(value, int) and not isinstance(value, bool):
        lo, hi = _RANGES[kind]
        if lo <= value <= hi:
            return int(value)
        raise EncodeError(f"{struct}.{f.go_name}={value} out of range for {kind.name}")
    raise EncodeError(f"{struct}.{f.go_name}: bad value {value!r} for {kind.name}")


def decode_value(raw: object, kind: Kind, struct: str, field: str) -> Any:
    """Coerce one decoded msgpack value into the Go field type, like go-msgpack would."""
    if raw is None:
        return _ZERO[kind]
    if kind is Kind.STR:
        if isinstance(raw, bytes):
            return go_str(raw)
    elif kind is Kind.BYTES:
        if isinstance(raw, bytes):
            return raw
        if isinstance(raw, list) and all(type(x) is int and 0 <= x <= 0xFF for x in raw):
            return bytes(raw)  # go-msgpack fills []byte from an array too
    elif kind is Kind.BOOL:
        if isinstance(raw, bool):
            return raw
        if type(raw) is int and raw in (0, 1):  # go-msgpack: fixint 0/1 are bools
            return bool(raw)
    elif type(raw) is int:
        lo, hi = _RANGES[kind]
        if lo <= raw <= hi:
            return raw
        raise DecodeError(ErrorKind.BAD_FIELD, f"{struct}.{field}: {raw} overflows {kind.name}")
    raise DecodeError(
        ErrorKind.BAD_FIELD, f"{struct}.{field}: {type(raw).__name__} is not {kind.name}"
    )


def decode_str_map(raw: object, value_kind: Kind, where: str) -> dict[str, Any]:
    """A Go ``map[string]T``: nil is empty, keys must be strings."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DecodeError(ErrorKind.BAD_FIELD, f"{where}: expected map")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, bytes):
            raise DecodeError(ErrorKind.BAD_FIELD, f"{where}: non-string key")
        out[go_str(key)] = decode_value(value, value_kind, where, "value")
    return out


def decode_list(raw: object, where: str) -> list[Any]:
    """A Go slice: nil is empty; anything but an array is an error."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DecodeError(ErrorKind.BAD_FIELD, f"{where}: expected array")
    return raw


def encode_str_map(values: Mapping[str, object]) -> dict[bytes, object]:
    """Go map keys come out in random order; we sort them so output is reproducible."""
    return {go_bytes(k): values[k] for k in sorted(values)}
