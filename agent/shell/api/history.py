"""GET /v1/history: the last hour of check latency, a page of origins at a time.

The dashboard draws its sparklines from it, for the origins of the page it shows
(``?ids=a,b,c``); a script pages through every origin with ``?limit=&after=`` as it does
through /v1/origins (the same sorted ids, the same ``Link`` header). Each origin's
series is built in Python on the loop (30 µs on the x86 test machine, some 10x that on
a Pi Zero 2 W), so an answer holds at most MAX_IDS: 15 ms here, never a catalogue's worth.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from agent.domain import ORIGIN_ID_RE
from agent.shell.api.listing import BadQuery, parse_query, window

MAX_IDS = 500  # origins per answer, asked by id or paged


class HistoryBackend(Protocol):
    def origin_ids(self) -> Sequence[str]: ...
    def history_view(self, ids: Sequence[str]) -> dict[str, Any]: ...


def parse_ids(query: Mapping[str, str]) -> list[str] | None:
    """``ids``: a comma list of origin ids (None when not given); BadQuery names why not."""
    raw = query.get("ids")
    if raw is None:
        return None
    ids = list(dict.fromkeys(i for i in raw.split(",") if i))
    if not ids:
        raise BadQuery("ids", "give one or more origin ids, separated by commas")
    if len(ids) > MAX_IDS:
        raise BadQuery("ids", f"{len(ids):,} ids: at most {MAX_IDS:,} at a time")
    bad = next((i for i in ids if not ORIGIN_ID_RE.match(i)), None)
    if bad is not None:
        raise BadQuery("ids", f"{bad[:80]!r} is not an id (letters, digits, '.', '_', '-')")
    return ids


def history_handler(
    backend: HistoryBackend, refuse: Callable[[str], web.Response]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler; ``refuse(message)`` answers a bad query (400, counted)."""

    async def history(request: web.Request) -> web.Response:
        try:
            ids = parse_ids(request.query)
            q = parse_query(request.query)
            if q.limit is not None and q.limit > MAX_IDS:
                raise BadQuery("limit", f"{q.limit} is out of range (1..{MAX_IDS:,} here)")
        except BadQuery as e:
            return refuse(str(e))
        headers = {}
        if ids is None:
            q = dataclasses.replace(q, limit=q.limit or MAX_IDS)
            ids, more = window(backend.origin_ids(), q)
            if more:
                headers["Link"] = q.next_link(request.path, ids[-1])
        text = json.dumps(backend.history_view(ids), separators=(",", ":"))
        return web.Response(text=text, content_type="application/json", headers=headers)

    return history
