"""A batch of origin specs, validated as one: every element is checked before anything is
applied, and one bad element rejects the whole batch.

An operator importing a catalogue of thousands of origins must not end up with half of
it applied and the rest to find by hand: ``parse_batch`` returns every spec, or raises
``BatchError`` listing each bad element by its index, its id (when it has a readable
one) and the key that is wrong, with the same messages the config file gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent.domain.origin import OriginSpec, read_origin
from agent.domain.values import show

MAX_BATCH = 100_000  # origins in one request: the catalogue's design size
MAX_ERRORS = 1000  # element errors listed in one answer (the count says how many more)

_PROBLEM = re.compile(r"^origins\[(\d+)\](?:\.([A-Za-z_]+))?: ")


@dataclass(frozen=True, slots=True)
class ElementError:
    """What is wrong with one element of a batch."""

    index: int
    id: str | None  # the element's id when it is a string, else None
    key: str | None  # the key at fault; None when the element itself is wrong
    message: str  # e.g. "origins[7].interval: '0s' must be longer than 0"

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "key": self.key, "message": self.message}


class BatchError(Exception):
    """The batch is rejected as a whole; ``errors`` names every bad element (up to
    MAX_ERRORS of them; ``count`` is how many there are in all)."""

    def __init__(self, message: str, errors: list[ElementError], count: int) -> None:
        super().__init__(message)
        self.errors = errors
        self.count = count

    def as_dict(self) -> dict[str, Any]:
        return {"error": str(self), "errors": [e.as_dict() for e in self.errors]}


def parse_batch(items: Any) -> list[OriginSpec]:
    """Every element of ``items`` (a JSON array of origin objects) as a spec, or
    BatchError. Ids must be unique within the batch: with one given twice, which spec
    was meant is a guess, so the later one is refused."""
    if not isinstance(items, list):
        raise BatchError(f"the body must be a JSON array of origins, not {show(items)}", [], 0)
    if len(items) > MAX_BATCH:
        raise BatchError(
            f"{len(items):,} origins in one request; at most {MAX_BATCH:,} (split the batch)",
            [],
            0,
        )
    specs: list[OriginSpec] = []
    errors: list[ElementError] = []
    count = 0
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        oid = item.get("id") if isinstance(item, dict) else None
        oid = oid if isinstance(oid, str) else None
        problems: list[str] = []
        spec = read_origin(problems, i, item)
        if spec is not None and spec.id in first:
            problems.append(f"origin[{i}].id: {show(spec.id)} is also origins[{first[spec.id]}]")
            spec = None
        if spec is not None:
            first[spec.id] = i
            specs.append(spec)
            continue
        for p in problems:
            count += 1
            if len(errors) < MAX_ERRORS:
                errors.append(_element_error(i, oid, p))
    if count:
        bad = len({e.index for e in errors})
        what = (
            f"{bad:,} of {len(items):,} origins are invalid"
            if count == len(errors)
            else (f"{count:,} problems in the batch (the first {len(errors):,} are listed)")
        )
        raise BatchError(f"{what}; nothing was applied", errors, count)
    return specs


def _element_error(index: int, oid: str | None, problem: str) -> ElementError:
    message = problem.replace("origin[", "origins[", 1).replace(
        "is not a table", "is not a JSON object", 1
    )
    m = _PROBLEM.match(message)
    key = m.group(2) if m else None
    return ElementError(index, oid, key, message)


__all__ = ["MAX_BATCH", "BatchError", "ElementError", "parse_batch"]
