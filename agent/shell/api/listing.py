"""Paged and streamed JSON listings: ``?limit=&after=&fields=`` and a chunked JSON array.

A listing of 100,000 origins must not be one 30 MB string built in one go while the
event loop (gossip, checks, every other request) waits, nor one sort of every id per
request. So a listing is a window of ids taken by bisection from a list kept sorted
elsewhere (agent/shell/origin_index.py), its items are built lazily, and the answer is
written a few hundred items at a time with the loop free in between. Without ``limit``
the whole array is streamed the same way. Shared by GET /v1/origins and GET /v1/catalogue.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from bisect import bisect_right
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from agent.domain import ORIGIN_ID_RE

log = logging.getLogger(__name__)

MAX_LIMIT = 10_000
#: items per write: big enough that the per-write cost vanishes, small enough that one
#: chunk's building (a few ms at 500 full origin views) never holds the loop for long
CHUNK = 500


class BadQuery(ValueError):
    """A listing parameter the API refuses; ``param`` names it, the message says why."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What a listing asks for. ``limit`` None: everything after ``after``; ``fields``
    None: every field (else the asked ones, in the order given, "id" always first)."""

    limit: int | None = None
    after: str | None = None
    fields: tuple[str, ...] | None = None

    def next_link(self, path: str, last_id: str) -> str:
        """The Link header of a page after which more remain (RFC 8288)."""
        query = f"after={quote(last_id, safe='')}&limit={self.limit}"
        if self.fields is not None:
            query += "&fields=" + ",".join(quote(f, safe="") for f in self.fields)
        return f'<{path}?{query}>; rel="next"'


def _one(query: Mapping[str, str], name: str) -> str | None:
    getall = getattr(query, "getall", None)
    values = getall(name, []) if getall is not None else [query[name]] if name in query else []
    if len(values) > 1:
        raise BadQuery(name, "given more than once")
    return values[0] if values else None


def parse_query(query: Mapping[str, str], *, fields: Collection[str] | None = None) -> ListQuery:
    """``limit``, ``after`` and (when ``fields`` lists the keys an item may have)
    ``fields`` from a request's query; other parameters are ignored, as everywhere in
    the API. BadQuery names the parameter and what was expected."""
    limit = None
    raw = _one(query, "limit")
    if raw is not None:
        if not raw.isascii() or not raw.isdigit():
            raise BadQuery("limit", f"{raw[:40]!r} is not a whole number (1..{MAX_LIMIT:,})")
        if len(raw) > 6 or not 1 <= int(raw) <= MAX_LIMIT:
            raise BadQuery("limit", f"{raw[:40]} is out of range (1..{MAX_LIMIT:,})")
        limit = int(raw)
    after = _one(query, "after")
    if after is not None and not ORIGIN_ID_RE.match(after):
        raise BadQuery(
            "after",
            f"{after[:80]!r} is not an id (letters, digits, '.', '_', '-'; max 64): "
            "give the last id of the page before",
        )
    chosen = None
    raw = _one(query, "fields") if fields is not None else None
    if raw is not None and fields is not None:
        names = raw.split(",")
        unknown = [n for n in names if n not in fields]
        if unknown:
            known = ", ".join(fields)
            raise BadQuery("fields", f"{unknown[0][:40]!r} is not a field (one of: {known})")
        chosen = tuple(dict.fromkeys(["id", *names]))
    return ListQuery(limit, after, chosen)


def window(sorted_ids: Sequence[str], q: ListQuery) -> tuple[list[str], bool]:
    """The ids of one page from a sorted sequence, by bisection (no sort, no scan), and
    whether more remain after it. A copy: the page holds still while it is written."""
    start = 0 if q.after is None else bisect_right(sorted_ids, q.after)
    if q.limit is None:
        return list(sorted_ids[start:]), False
    end = start + q.limit
    return list(sorted_ids[start:end]), end < len(sorted_ids)


async def stream_json_array(
    request: web.Request,
    items: Iterable[dict[str, Any]],
    *,
    headers: Mapping[str, str] | None = None,
    chunk: int = CHUNK,
) -> web.StreamResponse:
    """Answer 200 with ``items`` as one JSON array, written ``chunk`` items at a time;
    the loop runs other work between chunks, so neither the whole text nor the time to
    build it is ever held at once. ``items`` may be a generator building each lazily.

    The status is sent before the items are built, so a failure while building one
    cannot become an error answer: it is logged and the connection is cut, and the
    client sees a truncated array (never a valid-looking short one)."""
    resp = web.StreamResponse(status=200, headers=headers)
    resp.content_type = "application/json"
    await resp.prepare(request)
    if request.method == "HEAD":  # the headers only: a body here would corrupt the stream
        await resp.write_eof()
        return resp
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    it = iter(items)
    sep = b"["
    try:
        while True:
            part = [dumps(item) for item in itertools.islice(it, chunk)]
            if not part:
                break
            await resp.write(sep + ",".join(part).encode())
            sep = b","
            await asyncio.sleep(0)  # the next chunk is built on a later loop pass
        await resp.write(b"[]" if sep == b"[" else b"]")
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away: nothing to tell it, nothing to log
    except Exception:
        log.exception("a streamed listing failed: %s %s", request.method, request.path_qs)
        if request.transport is not None:
            request.transport.close()
    return resp
