"""Converters for values read from untrusted tables: each returns the typed value or
raises ValueError/TypeError, which the reader turns into "X is not <what>"."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from agent.domain.durations import parse_duration

#: a longer string is shown by its start and its length: an error message stays one line,
#: whatever size of value (a 10 KB id) it quotes
SHOW_MAX = 80


def show(v: Any) -> str:
    if isinstance(v, str):
        if len(v) > SHOW_MAX:
            return show(v[:40])[:-1] + f'…" ({len(v)} characters)'
        text = v.replace("\\", "\\\\").replace('"', '\\"')
        if not text.isprintable():  # a NUL or line break would break the message's line
            text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)
        return '"' + text + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        text = "[" + ", ".join(show(x) for x in v[:5]) + (", …]" if len(v) > 5 else "]")
        return text if len(text) <= 60 else "an array"
    return str(v)


class Problem(ValueError):
    """A value of the right kind that is still wrong: the message completes the sentence
    "<value> …" (for example "must be longer than 0"), instead of "is not <what>"."""


#: the longest duration any key takes: a year. Longer is a typo, and a float of seconds
#: that large no longer survives its own text form ("3.6e+26s"), which peers decode.
MAX_DURATION = 365 * 86400.0
#: the finest duration kept: durations travel as text in whole milliseconds
MIN_DURATION = 0.001


def duration(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        raise Problem(f'is a number without a unit: write a duration, e.g. "{v:g}s"')
    if not isinstance(v, str):
        raise TypeError
    d = parse_duration(v)
    if d > MAX_DURATION:
        raise Problem("is longer than 365d, the longest duration the agent takes")
    return d


def positive_duration(v: Any) -> float:
    d = duration(v)
    if d <= 0:
        raise Problem("must be longer than 0")
    if d < MIN_DURATION:
        raise Problem("is shorter than 1ms, the finest duration the agent keeps")
    return d


def str_table(v: Any) -> Mapping[str, str]:
    if not isinstance(v, dict):
        raise TypeError
    for key, value in v.items():
        if not isinstance(value, str):
            raise Problem(f'has {key} = {show(value)}, not a string (quote it: {key} = "…")')
    return MappingProxyType(dict(v))


#: an HTTP header name (RFC 9110 "token")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def header_pairs(v: Any) -> tuple[tuple[str, str], ...]:
    """Headers to send: names that are HTTP tokens, values on one line. A line break in a
    value would smuggle a header of its own into every request (or fail each probe)."""
    table = str_table(v)
    for name, value in table.items():
        if not _HEADER_NAME.fullmatch(name):
            raise Problem(f"has {show(name)}, which is not a header name (letters, digits, '-')")
        if any(c in value for c in "\r\n\0"):
            raise Problem(f"has {name} = {show(value)}: a line break or NUL in a header value")
    return tuple(sorted(table.items()))


def status_list(v: Any) -> tuple[int, ...]:
    """Status codes: integers, or "2xx"-style classes expanded to their 100 codes."""
    items = v if isinstance(v, list) else [v]
    out: list[int] = []
    for it in items:
        if isinstance(it, int) and not isinstance(it, bool) and 100 <= it <= 599:
            out.append(it)
        elif isinstance(it, str) and re.fullmatch(r"[1-5]xx", it):
            base = int(it[0]) * 100
            out.extend(range(base, base + 100))
        else:
            raise ValueError
    if not out:
        raise ValueError
    return tuple(sorted(set(out)))
