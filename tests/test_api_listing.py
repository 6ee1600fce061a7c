"""GET /v1/origins paged (?limit=&after=), narrowed (?fields=) and streamed (issue 17).

Against a real agent with a few hundred origins declared in its config: the pages a
client walks by following Link rel="next" concatenate to the whole sorted listing,
with no duplicate and no gap, even when an origin is added between two pages; bad
parameters are refused 400 naming the parameter and counted in /metrics. Then the
pieces on their own: stream_json_array's output for 0, 1 and many items, and the
sorted id index (agent/shell/origin_index.py) that pages are bisected from.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.shell.api.listing import (
    MAX_LIMIT,
    BadQuery,
    ListQuery,
    parse_query,
    stream_json_array,
    window,
)
from agent.shell.origin_index import ONE_BY_ONE, SortedIds
from agent.shell.views import ORIGIN_FIELDS
from tests.bad_input.support import bad_input_count
from tests.conftest import AgentProcess, wait_for

# mixed case, digits, '.', '_' and '-': the listing's order is the ids' byte order
ODD_IDS = ["A1", "Z9", "a-b", "a.b", "a_b", "a0", "zz"]
IDS = [f"web-{i:03d}" for i in range(300)] + ODD_IDS
# a closed port: the one check each origin ever gets (interval 365 days) fails at once
URL = "tcp://127.0.0.1:1"


def config() -> str:
    return "".join(f'[[origin]]\nid = "{oid}"\nurl = "{URL}"\ninterval = "365d"\n' for oid in IDS)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path_factory.mktemp("listing"), config())
    a.start()
    try:
        a.wait_notify("READY=1", 30)
        wait_for(lambda: a.get("/v1/health")[0] == 200, 15, "the API")
        yield a
    finally:
        a.close()


def get(a: AgentProcess, path: str) -> tuple[int, Any, dict[str, str]]:
    """(status, decoded JSON, headers) of one GET."""
    try:
        with urllib.request.urlopen(a.url + path, timeout=10) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def next_path(headers: dict[str, str]) -> str | None:
    link = headers.get("Link")
    if link is None:
        return None
    m = re.fullmatch(r'<(/v1/origins\?[^>]*)>; rel="next"', link)
    assert m, link
    return m.group(1)


def walk(a: AgentProcess, first: str) -> list[list[dict[str, Any]]]:
    """Every page from ``first``, following Link rel="next" until there is none."""
    pages = []
    path: str | None = first
    while path is not None:
        status, page, headers = get(a, path)
        assert status == 200, page
        pages.append(page)
        path = next_path(headers)
        assert len(pages) < 1000, "the pages never end"
    return pages


def test_pages_concatenate_to_the_whole_sorted_listing(agent: AgentProcess) -> None:
    status, whole, headers = get(agent, "/v1/origins")
    assert status == 200 and "Link" not in headers
    assert headers["Content-Type"].startswith("application/json")
    ids = [o["id"] for o in whole]
    assert ids == sorted(IDS), "the unpaged answer: every origin, sorted by id"
    pages = walk(agent, "/v1/origins?limit=37")
    assert all(len(p) == 37 for p in pages[:-1]) and 0 < len(pages[-1]) <= 37
    assert len(pages) == -(-len(IDS) // 37)
    assert [o for p in pages for o in p] == whole, "no duplicate, no gap, the same views"


def test_link_header_iff_more_remain(agent: AgentProcess) -> None:
    _, whole, _ = get(agent, "/v1/origins?fields=id")
    ids = [o["id"] for o in whole]
    n = len(ids)
    status, page, headers = get(agent, f"/v1/origins?limit={n}")
    assert status == 200 and len(page) == n and "Link" not in headers
    status, page, headers = get(agent, f"/v1/origins?limit={n - 1}&fields=verdict,id")
    assert [o["id"] for o in page] == ids[:-1]
    assert (
        headers["Link"]
        == f'</v1/origins?after={ids[-2]}&limit={n - 1}&fields=id,verdict>; rel="next"'
    )
    status, page, headers = get(agent, f"/v1/origins?after={ids[-2]}&limit={n - 1}")
    assert [o["id"] for o in page] == ids[-1:] and "Link" not in headers
    status, page, headers = get(agent, f"/v1/origins?after={ids[-1]}&limit=5")
    assert status == 200 and page == [] and "Link" not in headers
    # "after" need not be a listed id (the last one of a page may have been removed since)
    _, page, _ = get(agent, "/v1/origins?after=web-0999&limit=3")
    assert [o["id"] for o in page] == [i for i in ids if i > "web-0999"][:3]
    _, page, _ = get(agent, "/v1/origins?after=web-150")
    assert [o["id"] for o in page] == [i for i in ids if i > "web-150"]


def test_head_answers_the_headers_and_the_connection_stays_usable(agent: AgentProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    try:
        conn.request("HEAD", "/v1/origins?limit=5&fields=id")
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b""
        assert head.getheader("Link", "").endswith('; rel="next"')
        conn.request("GET", "/v1/origins?limit=5&fields=id")  # the same connection
        got = conn.getresponse()
        assert got.status == 200 and len(json.loads(got.read())) == 5
    finally:
        conn.close()


def test_fields_build_only_the_keys_asked_for(agent: AgentProcess) -> None:
    _, whole, _ = get(agent, "/v1/origins")
    assert list(whole[0]) == list(ORIGIN_FIELDS)
    for fields in ("verdict", "id", "observations,spec", "mine,owners,declared_by,verdict"):
        status, page, _ = get(agent, f"/v1/origins?fields={fields}")
        assert status == 200
        want = [f for f in ORIGIN_FIELDS if f == "id" or f in fields.split(",")]
        assert all(sorted(o) == sorted(want) for o in page), (fields, page[0])
        assert page == [{k: o[k] for k in o if k in want} for o in whole], fields


def test_an_origin_added_between_pages_is_listed_once(agent: AgentProcess) -> None:
    _, first, headers = get(agent, "/v1/origins?limit=50&fields=id")
    after = next_path(headers)
    assert after is not None
    last = first[-1]["id"]
    # one sorts after the cursor (the walk must show it), one before (it must not)
    late, early = "web-150a", "A0"
    assert early < last < late
    for oid in (late, early):
        status, body = agent.call("PUT", f"/v1/origins/{oid}", {"url": URL, "interval": "365d"})
        assert status == 201, body
    rest = [o["id"] for p in walk(agent, after) for o in p]
    walked = [o["id"] for o in first] + rest
    assert len(walked) == len(set(walked)), "no duplicate"
    _, now, _ = get(agent, "/v1/origins?fields=id")
    assert walked == [o["id"] for o in now if o["id"] != early], "no gap"
    assert late in rest
    # the origins are checked at once (gained by this node): wait, so the views hold still
    for oid in (late, early):
        wait_for(lambda oid=oid: get(agent, f"/v1/origins/{oid}")[1]["observations"], 10)


BAD = [
    ("limit=0", "limit", "out of range (1..10,000)"),
    ("limit=10001", "limit", "out of range"),
    ("limit=99999999999999999999", "limit", "out of range"),
    ("limit=-1", "limit", "not a whole number"),
    ("limit=ten", "limit", "not a whole number"),
    ("limit=", "limit", "not a whole number"),
    ("limit=1.5", "limit", "not a whole number"),
    ("limit=%D9%A3", "limit", "not a whole number"),  # an Arabic-Indic three
    ("limit=1&limit=2", "limit", "given more than once"),
    ("after=", "after", "is not an id"),
    ("after=a%2Fb", "after", "is not an id"),
    ("after=" + "a" * 65, "after", "is not an id"),
    ("after=a&after=b", "after", "given more than once"),
    ("fields=nope", "fields", "'nope' is not a field (one of: id, spec,"),
    ("fields=", "fields", "'' is not a field"),
    ("fields=id,,verdict", "fields", "'' is not a field"),
    ("fields=Verdict", "fields", "'Verdict' is not a field"),
    ("limit=5&fields=id&fields=verdict", "fields", "given more than once"),
]


@pytest.mark.parametrize(("query", "param", "says"), BAD, ids=[b[0][:30] for b in BAD])
def test_bad_parameters_are_refused_naming_them(
    agent: AgentProcess, query: str, param: str, says: str
) -> None:
    count = lambda: bad_input_count(str(agent.get("/metrics")[1]), "api", "400")  # noqa: E731
    before = count()
    status, body, headers = get(agent, f"/v1/origins?{query}")
    assert status == 400 and body["status"] == 400, body
    assert body["error"].startswith(f"{param}: ") and says in body["error"], body
    assert headers["Content-Type"].startswith("application/json")
    assert count() == before + 1, "counted in edge_agent_bad_input_total"


def test_no_error_logged(agent: AgentProcess) -> None:
    agent.check_alive()
    log = agent.stderr()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


# --- the parts on their own ----------------------------------------------------------------


async def streamed(items: list[dict[str, Any]], chunk: int) -> tuple[bytes, list[int]]:
    """(body, loop passes seen before each item was built) of
    stream_json_array serving ``items`` from a real aiohttp server."""
    passes = 0
    seen: list[int] = []

    async def count_passes() -> None:
        nonlocal passes
        while True:
            passes += 1
            await asyncio.sleep(0)

    def lazily() -> Iterator[dict[str, Any]]:
        for item in items:
            seen.append(passes)
            yield item

    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream_json_array(request, lazily(), chunk=chunk)

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ticker = asyncio.create_task(count_passes())
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as r:
            assert r.status == 200 and r.content_type == "application/json"
            body = await r.read()
    finally:
        ticker.cancel()
        await runner.cleanup()
    return body, seen


@pytest.mark.parametrize("n", [0, 1, 2, 499, 500, 501, 1234])
def test_stream_json_array_is_one_valid_array(n: int) -> None:
    items = [{"id": f"o{i}", "n": i, "s": 'quo"te\\ é \u2028'} for i in range(n)]
    body, seen = asyncio.run(streamed(items, chunk=500))
    assert json.loads(body) == items
    assert body.startswith(b"[") and body.endswith(b"]")
    # the loop ran between chunks: the items of a later chunk were built after more passes
    chunks = [seen[i : i + 500] for i in range(0, n, 500)]
    assert all(len(set(c)) == 1 for c in chunks), "a chunk is built in one go"
    assert all(a[0] < b[0] for a, b in itertools.pairwise(chunks)), seen[::500]


def test_parse_query() -> None:
    assert parse_query({}) == ListQuery()
    q = parse_query(
        {"limit": "10", "after": "web-1", "fields": "verdict,id,verdict"}, fields=ORIGIN_FIELDS
    )
    assert q == ListQuery(10, "web-1", ("id", "verdict"))
    assert (
        q.next_link("/v1/origins", "web-9")
        == '</v1/origins?after=web-9&limit=10&fields=id,verdict>; rel="next"'
    )
    assert parse_query({"limit": str(MAX_LIMIT)}).limit == MAX_LIMIT
    # without a field list (a listing that has none), fields= is ignored like any other
    assert parse_query({"fields": "nope"}) == ListQuery()
    with pytest.raises(BadQuery) as e:
        parse_query({"limit": "0"})
    assert e.value.param == "limit"


def test_window_bisects_a_sorted_list() -> None:
    ids = ["a", "b", "c", "d", "e"]
    assert window(ids, ListQuery()) == (ids, False)
    assert window(ids, ListQuery(limit=2)) == (["a", "b"], True)
    assert window(ids, ListQuery(limit=2, after="b")) == (["c", "d"], True)
    assert window(ids, ListQuery(limit=2, after="c")) == (["d", "e"], False)
    assert window(ids, ListQuery(limit=2, after="bb")) == (["c", "d"], True)
    assert window(ids, ListQuery(limit=9, after="e")) == ([], False)
    assert window([], ListQuery(limit=1)) == ([], False)


def test_sorted_ids_follow_the_live_set_without_sorting_again() -> None:
    live: dict[str, None] = dict.fromkeys(f"o{i:05d}" for i in range(5000))
    index = SortedIds(lambda: live.keys())
    assert index.ids() == sorted(live) and index.rebuilds == 1
    # a few changes: applied one by one
    del live["o00007"]
    live["o00007x"] = None
    live["a"] = None
    index.changed(["o00007", "o00007x", "a", "o00009"])  # o00009: a verdict change only
    assert index.ids() == sorted(live) and index.rebuilds == 1
    # a batch (an apply of 600 new, 200 gone): merged in one pass
    for i in range(200):
        del live[f"o{i * 3:05d}"]
    new = [f"n{i}" for i in range(600)]
    live.update(dict.fromkeys(new))
    index.changed([*new, *(f"o{i * 3:05d}" for i in range(200))])
    assert index.ids() == sorted(live) and index.rebuilds == 1
    assert ONE_BY_ONE < 800
    # a change nobody reported: found by the size check, rebuilt
    live["unreported"] = None
    assert index.ids() == sorted(live) and index.rebuilds == 2
    # reports pile up past a quarter of the list while nobody reads: one sort later
    index.changed(list(live)[:2000])
    assert index.ids() == sorted(live) and index.rebuilds == 3
