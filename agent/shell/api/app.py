"""aiohttp application for the JSON API, /metrics and the dashboard (agent/shell/api/page.py).

The app reads through a small `Backend` protocol, never the runtime's internals,
so the API can be tested against any backend and the runtime can change freely.
Every error is JSON ``{"error": "...", "status": N}``; nothing a client sends
can raise out of a handler.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from agent.domain import MAX_BATCH_BODY
from agent.node import LbAnswer
from agent.shell.api.events import EventHub
from agent.shell.api.history import history_handler
from agent.shell.api.listing import BadQuery, parse_query, stream_json_array, window
from agent.shell.api.page import dashboard_routes
from agent.shell.config import is_loopback
from agent.shell.metrics import Metrics
from agent.shell.prometheus_sd import sd_groups
from agent.shell.views import ORIGIN_FIELDS

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # bytes of a request body: an origin spec is well under 1 KiB
#: seconds a request body may take to arrive once its headers have: a client that sends
#: it a byte at a time (slow loris) is answered 408 instead of holding a connection
BODY_TIMEOUT = 10.0

NO_FLEET_TOKEN = (
    "fleet-wide writes are refused on this node: it has no fleet write token "
    "([api] token_file is not set). Give every node the same token_file (docs/api.md)"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenUnavailable(Exception):
    """[api] token_file is set but cannot be used (missing, unreadable, empty): writes are
    refused with this reason, never as a "wrong token" the client cannot fix."""


class Backend(Protocol):
    metrics: Metrics
    events: EventHub

    def health_view(self) -> dict[str, Any]: ...
    def origin_ids(self) -> Sequence[str]: ...
    def origins_of(
        self, ids: Iterable[str], fields: Collection[str] | None
    ) -> Iterable[dict[str, Any]]: ...
    def origin_view(self, origin_id: str) -> dict[str, Any] | None: ...
    def lb_answer_for(self, origin_id: str) -> LbAnswer | None: ...
    def members_view(self) -> list[dict[str, Any]]: ...
    def transitions_view(self) -> list[dict[str, Any]]: ...
    def history_view(self, ids: Sequence[str]) -> dict[str, Any]: ...
    def api_token(self) -> str | None: ...
    def fleet_write_refusal(self) -> str | None: ...
    async def put_origin(
        self, origin_id: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]: ...
    async def delete_origin(self, origin_id: str) -> tuple[int, dict[str, Any]]: ...
    async def apply_origins(
        self, items: Any, *, replace: bool, dry_run: bool
    ) -> tuple[int, dict[str, Any]]: ...
    def catalogue_page(
        self, after: str | None, limit: int | None
    ) -> tuple[Iterable[dict[str, Any]], str | None]: ...
    def identify(self, node: str | None, seconds: float) -> tuple[int, dict[str, Any]]: ...


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: with a key given twice, which value was meant
    is a guess (Python keeps the last, other parsers the first), so it is refused."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} is given twice")
        out[key] = value
    return out


def _loads(raw: bytes) -> Any:
    return json.loads(raw, object_pairs_hook=_unique_keys)


def _is_batch(request: web.Request) -> bool:
    return request.path == "/v1/origins" and request.method in ("POST", "PUT")


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes ``limit``: never read whole first."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    buf = bytearray()
    while chunk := await request.content.readany():
        buf += chunk
        if len(buf) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(buf))
    return bytes(buf)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message, "status": status}, status)


def is_local(request: web.Request) -> bool:
    """From this host: over the local API socket (AF_UNIX), or from a loopback address."""
    transport = request.transport
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX:
        return True
    peer = transport.get_extra_info("peername")
    return bool(peer) and isinstance(peer, tuple) and is_loopback(str(peer[0]))


def build_app(backend: Backend) -> web.Application:
    metrics = backend.metrics

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status >= 400:
                metrics.bad_input.labels("api", str(e.status)).inc()
                if e.status == 413:
                    limit = MAX_BATCH_BODY if _is_batch(request) else MAX_BODY
                    return error(
                        413, f"the body is larger than the {limit:,} bytes a request may carry"
                    )
                if isinstance(e, web.HTTPMethodNotAllowed):
                    allowed = ", ".join(sorted(e.allowed_methods))
                    return error(405, f"{request.method} is not allowed here (only {allowed})")
                if isinstance(e, web.HTTPNotFound):
                    return error(404, "no such path (the API's paths are in docs/api.md)")
                return error(e.status, e.reason)
            raise
        except Exception:
            log.exception("API handler failed: %s %s", request.method, request.path)
            return error(500, "internal error (logged)")

    async def health(_: web.Request) -> web.Response:
        view = backend.health_view()
        return json_response(view, 200 if view["status"] in ("ok", "degraded") else 503)

    async def origins(request: web.Request) -> web.StreamResponse:
        """Sorted by id; paged by ?limit=&after=, narrowed by ?fields= (listing.py)."""
        try:
            q = parse_query(request.query, fields=ORIGIN_FIELDS)
        except BadQuery as e:
            metrics.bad_input.labels("api", "400").inc()
            return error(400, str(e))
        ids, more = window(backend.origin_ids(), q)
        link = {"Link": q.next_link(request.path, ids[-1])} if more else None
        return await stream_json_array(request, backend.origins_of(ids, q.fields), headers=link)

    unknown_origin = {s: metrics.unknown_origin_lookups.labels(s) for s in ("api", "ready")}

    async def origin(request: web.Request) -> web.Response:
        oid = request.match_info["id"]
        view = backend.origin_view(oid)
        if view is None:  # an id, well formed, that the fleet does not know: not bad input
            unknown_origin["api"].inc()
            return error(404, f"no origin with id {oid!r}")
        return json_response(view)

    ready_answers = {w: metrics.lb_answers.labels("ready", w) for w in ("up", "down")}

    async def ready(request: web.Request) -> web.Response:
        """For load balancers that only speak HTTP checks: 200 ``up`` or 503 ``down: why``,
        by the same policy as the agent-check port (agent/node/lb_answer.py); a short
        text body, no JSON, so that thousands a second cost little."""
        oid = request.match_info["id"]
        answer = backend.lb_answer_for(oid)
        if answer is None:
            unknown_origin["ready"].inc()
            return error(404, f"no origin with id {oid!r}")
        ready_answers[answer.word].inc()
        return web.Response(
            text=answer.http_text() + "\n",
            status=200 if answer.up else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def members(_: web.Request) -> web.Response:
        return json_response(backend.members_view())

    async def prometheus_sd(_: web.Request) -> web.Response:
        """Prometheus HTTP SD: every live member's /metrics address (prometheus_sd.py)."""
        return json_response(sd_groups(backend.members_view()))

    def authorize(request: web.Request, *, fleet_wide: bool) -> web.Response | None:
        """Writes need the fleet's bearer token, from [api] token_file.

        A write that changes fleet-wide state (an origin declared or removed) spreads to
        every node, so every node must ask for the same token: a node with no token refuses
        it, even from this host, or one unprotected node would unprotect the fleet
        (docs/api.md). A write whose effect stays local (identify) is allowed from this host
        without a token (over loopback or the local API socket), as before."""
        try:
            token = backend.api_token()
        except TokenUnavailable as e:
            metrics.bad_input.labels("api", "503").inc()
            return error(503, f"writes are refused here: {e}")
        if token is None:
            if fleet_wide:
                metrics.bad_input.labels("api", "403").inc()
                return error(403, NO_FLEET_TOKEN)
            if is_local(request):
                return None
            metrics.bad_input.labels("api", "403").inc()
            return error(403, "writes from other hosts need [api] token_file to be set")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            metrics.bad_input.labels("api", "401").inc()
            return error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        refusal = backend.fleet_write_refusal() if fleet_wide else None
        if refusal is not None:
            metrics.bad_input.labels("api", "503").inc()
            return error(503, f"writes are refused here: {refusal}")
        return None

    async def read_json(request: web.Request, *, limit: int = MAX_BODY, array: bool = False) -> Any:
        """The request's JSON body (an object; with ``array``, anything: the batch parser
        says what is wrong), or the error response to send instead. A large body is
        parsed off the loop, so gossip keeps its timing while 10 MiB of JSON is read."""
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                raw = await _read_limited(request, limit)
        except TimeoutError:
            metrics.bad_input.labels("api", "408").inc()
            return error(408, f"the body did not arrive within {BODY_TIMEOUT:g} s")
        except web.HTTPRequestEntityTooLarge:
            metrics.bad_input.labels("api", "413").inc()
            return error(413, f"the body is larger than the {limit:,} bytes a request may carry")
        try:
            if not raw.strip():
                body: Any = [] if array else {}
            elif len(raw) > MAX_BODY:
                body = await asyncio.to_thread(_loads, raw)
            else:
                body = _loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            metrics.bad_input.labels("api", "400").inc()
            return error(400, f"body is not JSON: {e}")
        except RecursionError:
            metrics.bad_input.labels("api", "400").inc()
            return error(400, "body is not JSON this agent takes: nested too deeply")
        if array:
            return body
        if not isinstance(body, dict):
            metrics.bad_input.labels("api", "400").inc()
            return error(400, "body must be a JSON object")
        return body

    def answer(status: int, data: dict[str, Any]) -> web.Response:
        if status >= 400:
            metrics.bad_input.labels("api", str(status)).inc()
            if "errors" in data:  # a batch: each bad element, by index, id and key
                return json_response({**data, "status": status}, status)
            return error(status, str(data.get("error", "")))
        return json_response(data, status)

    async def write_body(
        request: web.Request, *, fleet_wide: bool
    ) -> dict[str, Any] | web.Response:
        """An authorized write's JSON body, or the error response to send instead."""
        denied = authorize(request, fleet_wide=fleet_wide)
        return denied if denied is not None else await read_json(request)

    async def put_origin(request: web.Request) -> web.Response:
        body = await write_body(request, fleet_wide=True)
        if isinstance(body, web.Response):
            return body
        return answer(*await backend.put_origin(request.match_info["id"], body))

    async def delete_origin(request: web.Request) -> web.Response:
        denied = authorize(request, fleet_wide=True)
        if denied is not None:
            return denied
        return answer(*await backend.delete_origin(request.match_info["id"]))

    async def apply_origins(request: web.Request) -> web.Response:
        """POST: upsert a batch. PUT: the batch becomes the API-declared set. Both validate
        every element first and apply all or nothing, as one change (docs/api.md)."""
        dry_run = request.query.get("dry_run", "0")
        if dry_run not in ("0", "1", "true", "false"):
            return answer(400, {"error": f"dry_run: {dry_run!r} is not 1 or 0"})
        denied = authorize(request, fleet_wide=True)
        if denied is not None:
            return denied
        items = await read_json(request, limit=MAX_BATCH_BODY, array=True)
        if isinstance(items, web.Response):
            return items
        return answer(
            *await backend.apply_origins(
                items, replace=request.method == "PUT", dry_run=dry_run in ("1", "true")
            )
        )

    async def catalogue(request: web.Request) -> web.StreamResponse:
        """The API-declared set (what PUT /v1/origins takes), paged like /v1/origins."""
        try:
            q = parse_query(request.query)
        except BadQuery as e:
            metrics.bad_input.labels("api", "400").inc()
            return error(400, str(e))
        items, last = backend.catalogue_page(q.after, q.limit)
        link = {"Link": q.next_link(request.path, last)} if last is not None else None
        return await stream_json_array(request, items, headers=link)

    async def transitions(_: web.Request) -> web.Response:
        return json_response(backend.transitions_view())

    async def events(request: web.Request) -> web.StreamResponse:
        return await backend.events.stream(request)

    async def identify(request: web.Request) -> web.Response:
        body = await write_body(request, fleet_wide=False)
        if isinstance(body, web.Response):
            return body
        node = body.get("node")
        seconds = body.get("seconds", 30)
        if node is not None and (not isinstance(node, str) or not node):
            return answer(400, {"error": "node: must be a node name (a string)"})
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            return answer(400, {"error": "seconds: must be a number"})
        if not 1 <= seconds <= 3600:
            return answer(400, {"error": f"seconds: {seconds} is out of range (1..3600)"})
        return answer(*backend.identify(node, float(seconds)))

    async def metrics_h(_: web.Request) -> web.Response:
        resp = web.Response(body=metrics.exposition())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    # each handler reads its body with its own limit (read_json): one origin's 64 KiB,
    # or a batch's 16 MiB
    app = web.Application(middlewares=[errors], client_max_size=MAX_BATCH_BODY)
    app.router.add_routes(dashboard_routes())  # GET /: the dashboard, static files
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/origins", origins)
    app.router.add_post("/v1/origins", apply_origins)
    app.router.add_put("/v1/origins", apply_origins)
    app.router.add_get("/v1/catalogue", catalogue)
    app.router.add_get("/v1/origins/{id}", origin)
    app.router.add_get("/v1/origins/{id}/ready", ready)
    app.router.add_put("/v1/origins/{id}", put_origin)
    app.router.add_delete("/v1/origins/{id}", delete_origin)
    app.router.add_get("/v1/transitions", transitions)
    app.router.add_get("/v1/history", history_handler(backend, lambda m: answer(400, {"error": m})))
    app.router.add_get("/v1/events", events)
    app.router.add_post("/v1/identify", identify)
    app.router.add_get("/v1/members", members)
    app.router.add_get("/v1/sd/prometheus", prometheus_sd)
    app.router.add_get("/metrics", metrics_h)
    return app
