"""Go ``compress/lzw`` with Order=LSB, litWidth=8, byte-identical to Go 1.19.

memberlist compresses with it and there is no Python stdlib equivalent. Details
that matter for byte-exactness with Go (writer.go / reader.go):

* codes 0-255 literals, 256 clear, 257 EOF; first new code is 258;
* codes start 9 bits wide; the writer widens *after* assigning a code once the
  next code number reaches 2**width ("no early change"), the reader mirrors it;
* when the writer's next code would be 4095 it emits a clear code (at 12 bits)
  instead of assigning it, so a Go stream never defines code 4095;
* every stream starts with a clear code, ends with EOF, then the bit buffer is
  flushed to a whole byte; an empty input is just clear + EOF (3 bytes).

Per-code Python loops are unavoidable here; everything else is table lookups. A sender
keeps the compressed form only when it is smaller (memberlist does), and most gossip
packets are not: ``least_size`` proves that for most of them without running the loop.
"""

from __future__ import annotations

from itertools import pairwise

from .errors import DecodeError, ErrorKind

__all__ = ["compress", "compress_within", "decompress", "least_size"]

_CLEAR = 256
_EOF = 257
_MAX_CODE = 4095  # 1<<12 - 1
_MAX_WIDTH = 12


def least_size(data: bytes) -> int:
    """A lower bound on ``len(compress(data))``, from the input's distinct byte pairs.

    Every phrase LZW emits beyond its first byte copies an earlier stretch of the input
    (a table entry is a phrase plus the next byte), so each of its byte pairs occurred
    at an earlier position too. Phrases do not overlap, so ``n - codes``, the bytes
    saved, is at most the positions whose pair occurred earlier: ``n - 1 - distinct``.
    Hence at least ``distinct + 1`` codes, plus the leading clear and the EOF, each at
    least 9 bits wide. A few microseconds, against ~0.2 µs a byte for ``compress``.
    """
    n = len(data)
    if n < 2:
        return 3  # clear + (a literal) + EOF: at least 18 bits
    distinct = len(set(pairwise(data)))
    return (9 * (distinct + 3) + 7) // 8


def compress(data: bytes) -> bytes:
    """LZW-encode ``data`` exactly as Go's ``lzw.NewWriter(w, lzw.LSB, 8)`` + Close does."""
    if not data:
        # Close() on an unused writer: clear then EOF, both 9 bits -> 18 bits -> 3 bytes.
        bits = _CLEAR | (_EOF << 9)
        return bytes((bits & 0xFF, (bits >> 8) & 0xFF, (bits >> 16) & 0xFF))
    codes = _phrases(data, len(data) + 1)
    assert codes is not None  # never more codes than input bytes
    return _pack(codes)


def compress_within(data: bytes, max_size: int) -> bytes | None:
    """``compress(data)`` if it is at most ``max_size`` bytes, else None, given up as soon
    as the codes so far (at least 9 bits each, with the clear and EOF) cannot fit."""
    if not data:
        return compress(data) if max_size >= 3 else None
    codes = _phrases(data, (8 * max_size) // 9 - 2)
    if codes is None:
        return None
    out = _pack(codes)
    return out if len(out) <= max_size else None


def _phrases(data: bytes, limit: int) -> list[int] | None:
    """The code of each phrase of ``data`` in order (the clear codes a full table brings
    are the packer's: they fall at fixed counts), or None once they are more than
    ``limit``. The per-byte loop: one table lookup a byte, nothing else."""
    table: dict[int, int] = {}
    get = table.get
    codes: list[int] = []
    emit = codes.append
    hi = _EOF  # last assigned code
    code = data[0]
    for x in data[1:]:
        key = (code << 8) | x
        t = get(key)
        if t is not None:
            code = t
            continue
        emit(code)
        if len(codes) >= limit:  # with the pending code, more than the limit
            return None
        code = x
        hi += 1
        if hi == _MAX_CODE:  # the writer clears instead of assigning 4095
            hi = _EOF
            table.clear()
            continue
        table[key] = hi
    emit(code)
    return codes


def _pack(codes: list[int]) -> bytes:
    """The bit stream for ``codes``: a clear first; codes 9 bits wide, widened *after*
    assigning once the next code reaches 2**width; a clear (back to 9 bits) where the next
    code would be 4095; then EOF and the last partial byte."""
    out = bytearray()
    bits = _CLEAR
    nbits = 9
    width = 9
    hi = _EOF
    overflow = 512
    for code in codes:
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == _MAX_CODE:
            bits |= _CLEAR << nbits
            nbits += width
            width = 9
            hi = _EOF
            overflow = 512
    bits |= _EOF << nbits
    nbits += width
    while nbits > 0:
        out.append(bits & 0xFF)
        bits >>= 8
        nbits -= 8
    return bytes(out)


def decompress(data: bytes, max_output: int) -> bytes:
    """Decode a Go LZW stream; raise DecodeError instead of exceeding ``max_output`` bytes.

    Mirrors Go's reader: data need not start with a clear code, bytes after the EOF
    code are ignored, a missing EOF is an error (io.ErrUnexpectedEOF), a code above
    the next free one is "invalid code", and once 4096 codes exist the table freezes.
    """
    # table[c] is the full expansion of code c (bounded by max_output in total).
    table: list[bytes] = [bytes((i,)) for i in range(256)] + [b""] * (4096 - 256)
    out: list[bytes] = []
    total = 0
    width = 9
    hi = _EOF  # next code to define
    overflow = 512
    last = -1  # -1: no previous code (after start/clear or when the table is frozen)
    bits = 0
    nbits = 0
    pos = 0
    n = len(data)
    while True:
        while nbits < width:
            if pos >= n:
                raise DecodeError(ErrorKind.BAD_COMPRESSION, "lzw: unexpected EOF")
            bits |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        nbits -= width

        if code < _CLEAR:
            entry = table[code]
            if last >= 0:
                table[hi] = table[last] + entry
        elif code == _CLEAR:
            width = 9
            hi = _EOF
            overflow = 512
            last = -1
            continue
        elif code == _EOF:
            return b"".join(out)
        elif code <= hi:
            if code == hi and last >= 0:
                prev = table[last]
                entry = prev + prev[:1]
            else:
                entry = table[code]
            if last >= 0:
                table[hi] = table[last] + entry[:1]
        else:
            raise DecodeError(ErrorKind.BAD_COMPRESSION, "lzw: invalid code")

        total += len(entry)
        if total > max_output:
            raise DecodeError(ErrorKind.TOO_LARGE, f"decompressed size exceeds {max_output}")
        out.append(entry)
        last = code
        hi += 1
        if hi >= overflow:
            if width == _MAX_WIDTH:
                last = -1
                hi -= 1
            else:
                width += 1
                overflow <<= 1
