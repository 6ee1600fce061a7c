"""Converters for values read from untrusted tables: each returns the typed value or
raises ValueError/TypeError, which the reader turns into "X is not <what>"."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from agent.domain.durations import parse_duration


def show(v: Any) -> str:
    if isinstance(v, str):
        return '"' + v.replace('"', '\\"') + '"'
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


def duration(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        raise Problem(f'is a number without a unit: write a duration, e.g. "{v:g}s"')
    if not isinstance(v, str):
        raise TypeError
    return parse_duration(v)


def positive_duration(v: Any) -> float:
    d = duration(v)
    if d <= 0:
        raise Problem("must be longer than 0")
    return d


def str_table(v: Any) -> Mapping[str, str]:
    if not isinstance(v, dict):
        raise TypeError
    for key, value in v.items():
        if not isinstance(value, str):
            raise Problem(f'has {key} = {show(value)}, not a string (quote it: {key} = "…")')
    return MappingProxyType(dict(v))


def header_pairs(v: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(str_table(v).items()))


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
