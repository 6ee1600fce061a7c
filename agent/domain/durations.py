"""Durations as operators write them ("500ms", "10s", "2m", "1m30s") and as we show them."""

from __future__ import annotations

import functools
import re

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@functools.lru_cache(maxsize=1024)
def parse_duration(text: str) -> float:
    """Parse "500ms", "10s", "2m", "1h", "1m30s" into seconds; raise ValueError otherwise.
    Cached: a fleet uses a few spellings, and every spec a peer sends (100,000 in a big
    catalogue, again at each restore) carries two or three of them."""
    s = text.strip()
    if not s:
        raise ValueError("empty")
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(text)
    return total


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration, for display ("10s", "500ms", "2m")."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    # whole milliseconds and never an exponent ("1e+06s" would not parse back)
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
