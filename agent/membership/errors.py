"""The one exception type the wire decoders raise, plus the encoder's refusal type.

Decoding hostile network input must never surface a stray ``KeyError`` or
``struct.error`` to the caller: every failure becomes a :class:`DecodeError` whose
``kind`` is a short, stable string that can be used directly as a metrics label.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DecodeError", "EncodeError", "ErrorKind"]


class ErrorKind(StrEnum):
    """Machine-usable failure classes; the values are stable metric label values."""

    EMPTY = "empty"
    TRUNCATED = "truncated"
    BAD_CRC = "bad_crc"
    BAD_MSGPACK = "bad_msgpack"
    BAD_FIELD = "bad_field"
    UNKNOWN_TYPE = "unknown_type"
    UNEXPECTED_TYPE = "unexpected_type"
    LABEL_UNSUPPORTED = "label_unsupported"
    DECRYPT_FAILED = "decrypt_failed"
    NOT_ENCRYPTED = "not_encrypted"
    ENCRYPTED_NO_KEY = "encrypted_no_key"
    BAD_COMPRESSION = "bad_compression"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    SHORT_VSN = "short_vsn"


class DecodeError(Exception):
    """Input could not be decoded; ``kind`` says why in one word, ``reason`` in a sentence."""

    def __init__(self, kind: ErrorKind, reason: str = "") -> None:
        super().__init__(f"{kind.value}: {reason}" if reason else kind.value)
        self.kind: ErrorKind = kind
        self.reason: str = reason

    def __eq__(self, other: object) -> bool:
        # Value equality makes problem lists easy to assert on in tests.
        if not isinstance(other, DecodeError):
            return NotImplemented
        return self.kind == other.kind and self.reason == other.reason

    def __hash__(self) -> int:
        return hash((self.kind, self.reason))

    def __reduce__(self) -> tuple[type[DecodeError], tuple[ErrorKind, str]]:
        return (type(self), (self.kind, self.reason))


class EncodeError(ValueError):
    """We refuse to put this on the wire (out-of-range field, oversize meta, short Vsn...)."""
