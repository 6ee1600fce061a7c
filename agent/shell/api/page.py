"""The dashboard at GET /: static files from agent/shell/api/static/, served from memory.

The page is plain HTML, CSS and JavaScript with no build step and nothing fetched from
outside the Pi, so it works from a phone on the Pi's network with no internet. The script
fills the page from the JSON API and follows /v1/events. What only Python knows, the LED
states' meanings and blink patterns (:data:`agent.shell.leds.PATTERNS`), is rendered once here as
/static/leds.json; the script draws the LEDs from it, so the drawing blinks as they do.

The files are read once, when the app is built (~34 KB), and sent with explicit content
types (no MIME table: the agent does not load one) and a strong ETag with
``Cache-Control: no-cache``: a browser revalidates on every load (a body-less 304 when
nothing changed), so after an upgrade it never runs an old script against a new agent.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files

from aiohttp import web

from agent.shell.leds import patterns_json

log = logging.getLogger(__name__)

# the page: a script from elsewhere, inline script or markup in a frame cannot run in it
PAGE_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

# path served -> (file in agent/shell/api/static/, Content-Type)
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
LEDS_PATH = "/static/leds.json"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, content_type, hashlib.blake2b(body, digest_size=12).hexdigest())


def load_assets() -> dict[str, Asset | str]:
    """Every path of the dashboard: its asset, or why it cannot be served (a file missing
    from the install is logged and answered 500; the agent itself runs on)."""
    static = files("agent.shell.api") / "static"
    assets: dict[str, Asset | str] = {}
    for path, (name, content_type) in FILES.items():
        try:
            assets[path] = Asset.of(static.joinpath(name).read_bytes(), content_type)
        except OSError as e:
            problem = f"dashboard file {name} missing from the install ({e.strerror or e})"
            log.error("%s: %s is not served", problem, path)
            assets[path] = problem
    assets[LEDS_PATH] = Asset.of(patterns_json().encode(), "application/json")
    return assets


def dashboard_routes() -> list[web.RouteDef]:
    """GET (and HEAD) routes for the page, its script, style and LED table."""
    assets = load_assets()

    def handler(asset: Asset | str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            if isinstance(asset, str):
                raise web.HTTPInternalServerError(reason=asset)
            headers = {
                "Content-Type": asset.content_type,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            }
            if asset.content_type.startswith("text/html"):
                headers["Content-Security-Policy"] = PAGE_POLICY
            fresh = any(e.value == asset.etag for e in request.if_none_match or ())
            resp = web.Response(status=304 if fresh else 200, headers=headers)
            if not fresh:
                resp.body = asset.body
            resp.etag = asset.etag
            return resp

        return serve

    return [web.get(path, handler(asset)) for path, asset in assets.items()]
