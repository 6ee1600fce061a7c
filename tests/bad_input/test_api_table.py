"""The API table: bad requests against ONE running agent, each with the exact status, a
fragment of its message and one more count in edge_agent_bad_input_total. Then the agent
still answers /v1/health, and the origins declared before the table are all still there.

The cases share the agent (module scope) and run in the table's order; the last test
checks that nothing was lost, the one before it that no traceback reached the log.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bad_input.support import bad_input_count
from tests.conftest import FLEET_TOKEN, AgentProcess, wait_for

TOKEN = {"Authorization": f"Bearer {FLEET_TOKEN}"}
JSON = {**TOKEN, "Content-Type": "application/json"}
KEEP = ("keep-1", "keep-2", "keep-3")  # declared before the table; must all survive it
SPEC = {"url": "tcp://127.0.0.1:9", "interval": "60s"}
FORM = {**TOKEN, "Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class Req:
    id: str
    method: str
    path: str
    body: bytes | None
    status: int
    says: str  # a fragment of the answer's "error" (or of the text, for non-JSON answers)
    headers: dict[str, str] | None = None  # default: the token and a JSON content type
    #: a lookup of an id the fleet does not know is not bad input: it is counted in
    #: edge_agent_unknown_origin_lookups_total{surface="api"} instead
    lookup: bool = False


def j(v: Any) -> bytes:
    return json.dumps(v).encode()


def put(id: str, body: bytes | Any, status: int, says: str, **kw: Any) -> Req:
    raw = body if isinstance(body, bytes) else j(body)
    return Req(id, "PUT", kw.pop("path", "/v1/origins/x"), raw, status, says, **kw)


def identify(id: str, body: bytes | Any, status: int, says: str, **kw: Any) -> Req:
    raw = body if isinstance(body, bytes) else j(body)
    return Req(id, "POST", "/v1/identify", raw, status, says, **kw)


def typed(ctype: str) -> dict[str, str]:
    return {**TOKEN, "Content-Type": ctype}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def spec(**kw: Any) -> dict[str, Any]:
    return {**SPEC, **kw}


CASES = [
    # --- bodies that are not a JSON object
    put("not-json", b"not json", 400, "body is not JSON: Expecting value"),
    put("json-array", b'[{"url": "tcp://h:1"}]', 400, "body must be a JSON object"),
    put("json-string", b'"tcp://h:1"', 400, "body must be a JSON object"),
    put("json-null", b"null", 400, "body must be a JSON object"),
    put(
        "duplicate-keys",
        b'{"url": "tcp://127.0.0.1:9", "url": "http://evil/"}',
        400,
        "the key 'url' is given twice",
    ),
    put("nested-too-deeply", b"[" * 60000, 400, "nested too deeply"),
    put("not-utf8", b'{"url": "\xff\xfe"}', 400, "body is not JSON"),
    put("raw-nul-in-string", b'{"url": "tcp://h\x00:1"}', 400, "Invalid control character"),
    put("truncated", b'{"url": "tcp://h:1"', 400, "body is not JSON"),
    put("huge-integer", b'{"rise": 1' + b"0" * 5000 + b"}", 400, "body is not JSON: Exceeds"),
    # --- wrong values, each named by its key
    put("escaped-nul-in-url", spec(url="http://h/\u0000"), 400, "control character"),
    put("url-with-space", spec(url="http://exa mple.com/"), 400, "white space"),
    put("url-number", spec(url=5), 400, "body.url: 5 is not a string"),
    put("url-ftp", spec(url="ftp://h/"), 400, "scheme must be http, https or tcp"),
    put("url-missing", {"interval": "10s"}, 400, "body.url: missing"),
    put("tcp-without-port", spec(url="tcp://h"), 400, "tcp:// needs a port"),
    put("ipv6-url-bad", spec(url="http://[::1/"), 400, "body.url"),
    put("interval-zero", spec(interval="0s"), 400, 'body.interval: "0s" must be longer than 0'),
    put("interval-negative", spec(interval="-1s"), 400, 'body.interval: "-1s" is not a duration'),
    put("interval-huge", spec(interval="99999999999999999999999h"), 400, "longer than 365d"),
    put("interval-tiny", spec(interval="0.0001ms"), 400, "shorter than 1ms"),
    put("interval-number", spec(interval=10), 400, 'write a duration, e.g. "10s"'),
    put("interval-nan", b'{"url": "tcp://h:1", "interval": NaN}', 400, "body.interval"),
    put("rise-string", spec(rise="2"), 400, 'body.rise: "2" is not an integer'),
    put("rise-bool", spec(rise=True), 400, "body.rise: true is not an integer"),
    put("rise-huge", spec(rise=10**30), 400, "is out of range (1..100)"),
    put("unknown-key", spec(colour="red"), 400, "body.colour: unknown key"),
    put("id-mismatch", spec(id="y"), 400, "does not match the URL's 'x'"),
    put("headers-string", spec(url="http://h/", headers="X: 1"), 400, "body.headers"),
    put("headers-number", spec(url="http://h/", headers={"X": 1}), 400, "X = 1"),
    put("headers-crlf", spec(url="http://h/", headers={"X": "a\r\nY: b"}), 400, "line break"),
    put("headers-nul", spec(url="http://h/", headers={"X": "a\u0000"}), 400, "line break or NUL"),
    put("headers-bad-name", spec(url="http://h/", headers={"X Y": "1"}), 400, "header name"),
    put("method-delete", spec(url="http://h/", method="DELETE"), 400, "is not one of GET"),
    put("expect-status-text", spec(url="http://h/", expect_status="ok"), 400, "expect_status"),
    put("tcp-with-headers", spec(headers={"X": "1"}), 400, "applies only to http(s) origins"),
    # --- ids in the path
    put("unicode-id", SPEC, 400, "is not a valid id", path="/v1/origins/%C3%A9t%C3%A9"),
    put("encoded-slash-id", SPEC, 400, '"a/b" is not a valid id', path="/v1/origins/a%2Fb"),
    put("encoded-nul-id", SPEC, 400, "is not a valid id", path="/v1/origins/a%00b"),
    put("65-char-id", SPEC, 400, "max 64", path="/v1/origins/" + "a" * 65),
    put("1kb-id", SPEC, 400, "(1024 characters)", path="/v1/origins/" + "a" * 1024),
    put("10kb-id", SPEC, 400, "8190 bytes", path="/v1/origins/" + "a" * 10240),
    put("empty-id", SPEC, 404, "no such path", path="/v1/origins/"),
    Req(
        "get-unknown-id",
        "GET",
        "/v1/origins/nope",
        None,
        404,
        "no origin with id 'nope'",
        lookup=True,
    ),
    Req(
        "get-unicode-id",
        "GET",
        "/v1/origins/%C3%A9",
        None,
        404,
        "no origin with id 'é'",
        lookup=True,
    ),
    Req("delete-unknown-id", "DELETE", "/v1/origins/nope", None, 404, "no origin with id"),
    Req("delete-10kb-id", "DELETE", "/v1/origins/" + "b" * 10240, None, 400, "8190 bytes"),
    # --- content types: the body is read as JSON whatever the type says (curl -d sends
    # application/x-www-form-urlencoded); a body that is not JSON is refused as such
    put("ctype-text-plain", SPEC, 201, "", path="/v1/origins/ct-1", headers=typed("text/plain")),
    put("ctype-none", SPEC, 201, "", path="/v1/origins/ct-2", headers=TOKEN),
    put("ctype-form-json-body", SPEC, 201, "", path="/v1/origins/ct-3", headers=FORM),
    put("ctype-form-body", b"url=tcp://h:1&interval=10s", 400, "body is not JSON", headers=FORM),
    put(
        "ctype-multipart",
        b"--b\r\n\r\nx\r\n--b--\r\n",
        400,
        "body is not JSON",
        headers=typed("multipart/form-data; boundary=b"),
    ),
    put("oversized-body", j(spec(pad="x" * 70_000)), 413, "65,536 bytes a request may carry"),
    # --- the bearer token
    put("no-token", SPEC, 401, "missing or wrong bearer token", headers={}),
    put("wrong-token", SPEC, 401, "missing or wrong bearer token", headers=bearer("nope")),
    put("bearer-without-token", SPEC, 401, "missing or wrong", headers={"Authorization": "Bearer"}),
    put("basic-auth", SPEC, 401, "missing or wrong", headers={"Authorization": "Basic dGVzdA=="}),
    put("token-prefix", SPEC, 401, "missing or wrong", headers=bearer(FLEET_TOKEN[:-1])),
    Req("delete-no-token", "DELETE", "/v1/origins/keep-1", None, 401, "bearer token", headers={}),
    identify("identify-no-token", j({"seconds": 5}), 401, "bearer", headers={}),
    # --- identify bodies
    identify("identify-negative", j({"seconds": -1}), 400, "seconds: -1 is out of range (1..3600)"),
    identify("identify-huge", j({"seconds": 1e308}), 400, "out of range (1..3600)"),
    identify("identify-nan", b'{"seconds": NaN}', 400, "seconds: nan is out of range"),
    identify("identify-string", j({"seconds": "5"}), 400, "seconds: must be a number"),
    identify("identify-bool", j({"seconds": True}), 400, "seconds: must be a number"),
    identify("identify-node-number", j({"node": 5}), 400, "node: must be a node name"),
    identify("identify-node-empty", j({"node": ""}), 400, "node: must be a node name"),
    identify("identify-node-ghost", j({"node": "ghost"}), 404, "no live member named 'ghost'"),
    identify("identify-array", b"[5]", 400, "body must be a JSON object"),
    # --- query strings the API does not take are ignored, however odd
    Req("query-garbage", "GET", "/v1/origins?%ZZ=%00&&=&x", None, 200, ""),
    Req("query-10kb-ok", "GET", "/v1/members?q=" + "z" * 7000, None, 200, ""),
    # --- the latency history's own parameters (ids, a page of at most 500)
    Req("history-bad-id", "GET", "/v1/history?ids=a%2Fb", None, 400, "ids: 'a/b' is not an id"),
    Req("history-no-id", "GET", "/v1/history?ids=,", None, 400, "ids: give one or more"),
    Req("history-501", "GET", "/v1/history?limit=501", None, 400, "limit: 501 is out of range"),
    # --- paths and methods
    Req("unknown-path", "GET", "/nope", None, 404, "no such path"),
    Req("v2-path", "GET", "/v2/health", None, 404, "no such path"),
    Req("dot-dot-path", "GET", "/static/../../agent.toml", None, 404, "no such path"),
    Req(
        "post-health", "POST", "/v1/health", b"{}", 405, "POST is not allowed here (only GET, HEAD)"
    ),
    Req("delete-collection", "DELETE", "/v1/origins", None, 405, "DELETE is not allowed here"),
    Req("patch-origin", "PATCH", "/v1/origins/x", j(SPEC), 405, "PATCH is not allowed here"),
    Req("put-metrics", "PUT", "/metrics", b"", 405, "PUT is not allowed here"),
    Req("get-identify", "GET", "/v1/identify", None, 405, "GET is not allowed here (only POST)"),
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path_factory.mktemp("api-table"), "")
    a.start()
    try:
        a.wait_notify("READY=1", 20)
        wait_for(lambda: a.get("/v1/health")[0] in (200, 503), 10, "the API")
        for oid in KEEP:
            assert a.call("PUT", f"/v1/origins/{oid}", SPEC)[0] == 201
        yield a
    finally:
        a.close()


def send(a: AgentProcess, r: Req) -> tuple[int, str, Any]:
    """(status, content type, decoded answer) for one raw request."""
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    try:
        headers = JSON if r.headers is None else r.headers
        conn.request(r.method, r.path, body=r.body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type", "")
    finally:
        conn.close()
    return resp.status, ctype, json.loads(data) if "json" in ctype else data.decode()


def metrics(a: AgentProcess) -> str:
    status, text = a.get("/metrics")
    assert status == 200
    return str(text)


@pytest.mark.parametrize("r", CASES, ids=lambda r: r.id)
def test_request(agent: AgentProcess, r: Req) -> None:
    page = metrics(agent)
    before, lookups = bad_input_count(page, "api", str(r.status)), unknown_lookups(page)
    status, ctype, answer = send(agent, r)
    assert status == r.status, f"{r.id}: {status} {answer!r:.400}"
    if isinstance(answer, dict) and "error" in answer:
        message = answer["error"]
        assert answer["status"] == status
        assert len(message) < 1000, "an error stays short, whatever the input's size"
    else:
        message = str(answer)
    assert r.says in message, f"{r.says!r} not in {message!r:.400}"
    if status >= 400 and r.path.startswith("/v1"):  # the API's own answers are JSON
        assert "json" in ctype or "8190 bytes" in r.says, ctype
    page = metrics(agent)
    after = bad_input_count(page, "api", str(r.status))
    bad = status >= 400 and not r.lookup
    assert after - before == (1 if bad else 0), "edge_agent_bad_input_total"
    assert unknown_lookups(page) - lookups == (1 if r.lookup else 0), "unknown-origin lookups"


def unknown_lookups(page: str) -> float:
    found = re.search(
        r'^edge_agent_unknown_origin_lookups_total\{surface="api"\} (\S+)$', page, re.M
    )
    return float(found.group(1)) if found else 0.0


def test_no_traceback_in_the_log(agent: AgentProcess) -> None:
    log = agent.stderr()
    assert "Traceback" not in log, log[-3000:]
    assert "ERROR" not in log, log[-3000:]


def test_nothing_lost(agent: AgentProcess) -> None:
    """After the table: the agent answers, and every origin declared before it is there."""
    agent.check_alive()
    status, health = agent.get("/v1/health")
    assert status == 200 and health["status"] in ("ok", "degraded"), health
    status, origins = agent.get("/v1/origins")
    ids = {o["id"] for o in origins}
    assert set(KEEP) <= ids, ids
    assert "x" not in ids, "no bad PUT declared anything"
    assert len(CASES) >= 70


def test_cases_have_unique_ids() -> None:
    assert len({r.id for r in CASES}) == len(CASES)


def test_parse_errors_of_the_http_layer_are_counted_not_logged(tmp_path: Path) -> None:
    """The filter in agent/shell/api/server.py, on its own: no agent needed."""
    import logging

    from aiohttp.http_exceptions import LineTooLong

    from agent.shell.api.server import RequestParseErrors
    from agent.shell.metrics import Metrics

    m = Metrics()
    f = RequestParseErrors(m)
    try:
        raise LineTooLong("line", "8190", "10240")
    except LineTooLong:
        import sys

        rec = logging.LogRecord("aiohttp.server", 40, "", 0, "x", (), sys.exc_info())
    assert f.filter(rec) is False
    plain = logging.LogRecord("aiohttp.server", 40, "", 0, "x", (), None)
    assert f.filter(plain) is True
    assert m.bad_input.labels("api", "400")._value.get() == 1
