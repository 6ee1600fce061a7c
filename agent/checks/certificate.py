"""A certificate's notAfter, read straight from its DER bytes.

The TLS check reports when an origin's certificate expires. That needs one field of
the X.509 structure, so it is read here with a few lines of DER walking instead of a
full X.509 library (``cryptography`` costs about 8 MiB of RSS per node, a second copy
of OpenSSL beside the one ``ssl`` already has). The path to the field is fixed by
RFC 5280 4.1::

    Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER,
                                  signature SEQUENCE, issuer SEQUENCE,
                                  validity SEQUENCE { notBefore Time, notAfter Time }, ... }
    Time ::= UTCTime "YYMMDDHHMMSSZ" | GeneralizedTime "YYYYMMDDHHMMSSZ"

Anything that does not have that shape gives None: the certificate came from a TLS
handshake that already succeeded, so a parse failure only means "expiry unknown".
"""

from __future__ import annotations

import calendar

__all__ = ["not_after"]

_SEQUENCE = 0x30
_INTEGER = 0x02
_VERSION = 0xA0  # [0] EXPLICIT, constructed
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18


class _Malformed(ValueError):
    pass


def _element(der: bytes, i: int, end: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``i``."""
    if i + 2 > end:
        raise _Malformed("truncated header")
    tag, length = der[i], der[i + 1]
    i += 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4 or i + size > end:
            raise _Malformed("bad length")
        length = int.from_bytes(der[i : i + size], "big")
        i += size
    if i + length > end:
        raise _Malformed("contents run past their parent")
    return tag, i, i + length


def _expect(der: bytes, i: int, end: int, tag: int) -> tuple[int, int]:
    got, start, stop = _element(der, i, end)
    if got != tag:
        raise _Malformed(f"tag {got:#x} where {tag:#x} belongs")
    return start, stop


def _time(tag: int, text: bytes) -> float:
    if tag == _UTC_TIME and len(text) == 13:
        yy = int(text[0:2])
        year, rest = (1900 + yy if yy >= 50 else 2000 + yy), text[2:]  # RFC 5280 4.1.2.5.1
    elif tag == _GENERALIZED_TIME and len(text) == 15:
        year, rest = int(text[0:4]), text[4:]
    else:
        raise _Malformed("not an RFC 5280 time")
    if not rest[:-1].isdigit() or rest[-1:] != b"Z":
        raise _Malformed("not an RFC 5280 time")
    month, day, hour, minute, second = (int(rest[k : k + 2]) for k in range(0, 10, 2))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise _Malformed("time out of range")
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def not_after(der: bytes) -> float | None:
    """The end of the certificate's validity as a POSIX timestamp, or None if unreadable."""
    try:
        start, end = _expect(der, 0, len(der), _SEQUENCE)  # Certificate
        i, end = _expect(der, start, end, _SEQUENCE)  # TBSCertificate
        tag, _, stop = _element(der, i, end)
        if tag == _VERSION:
            i = stop
        i = _expect(der, i, end, _INTEGER)[1]  # serialNumber
        i = _expect(der, i, end, _SEQUENCE)[1]  # signature
        i = _expect(der, i, end, _SEQUENCE)[1]  # issuer
        i, validity_end = _expect(der, i, end, _SEQUENCE)  # validity
        i = _element(der, i, validity_end)[2]  # notBefore
        tag, start, stop = _element(der, i, validity_end)
        return _time(tag, der[start:stop])
    except (_Malformed, ValueError, IndexError):
        return None
