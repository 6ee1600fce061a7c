"""aiohttp application for the JSON API and /metrics.

The app reads through a small `Backend` protocol, never the runtime's internals,
so the API can be tested against any backend and the runtime can change freely.
Every error is JSON ``{"error": "...", "status": N}``; nothing a client sends
can raise out of a handler.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.api.page import render_status_page
from agent.metrics import Metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Backend(Protocol):
    metrics: Metrics

    def health_view(self) -> dict[str, Any]: ...
    def origins_view(self) -> list[dict[str, Any]]: ...
    def origin_view(self, origin_id: str) -> dict[str, Any] | None: ...
    def members_view(self) -> list[dict[str, Any]]: ...


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message, "status": status}, status)


def build_app(backend: Backend) -> web.Application:
    metrics = backend.metrics

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status >= 400:
                metrics.bad_input.labels("api", str(e.status)).inc()
                return error(e.status, e.reason)
            raise
        except Exception:
            log.exception("API handler failed: %s %s", request.method, request.path)
            return error(500, "internal error (logged)")

    async def health(_: web.Request) -> web.Response:
        view = backend.health_view()
        return json_response(view, 200 if view["status"] in ("ok", "degraded") else 503)

    async def origins(_: web.Request) -> web.Response:
        return json_response(backend.origins_view())

    async def origin(request: web.Request) -> web.Response:
        oid = request.match_info["id"]
        view = backend.origin_view(oid)
        if view is None:
            return error(404, f"no origin with id {oid!r}")
        return json_response(view)

    async def members(_: web.Request) -> web.Response:
        return json_response(backend.members_view())

    async def metrics_h(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def page(_: web.Request) -> web.Response:
        html = render_status_page(backend.health_view(), backend.origins_view())
        return web.Response(text=html, content_type="text/html")

    app = web.Application(middlewares=[errors], client_max_size=64 * 1024)
    app.router.add_get("/", page)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/origins", origins)
    app.router.add_get("/v1/origins/{id}", origin)
    app.router.add_get("/v1/members", members)
    app.router.add_get("/metrics", metrics_h)
    return app
