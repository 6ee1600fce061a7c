"""The dashboard at GET / in a real headless Chromium, against a real 3-node cluster.

Chromium (Debian's `chromium` package) is driven by chromedriver (Debian's
`chromium-driver` package, started as a child process on a loopback port), spoken to in
the W3C WebDriver HTTP protocol with aiohttp: no selenium, no playwright, no browser
downloads. Both packages are installed by the test setup (scripts/bootstrap.sh); without
them the tests skip, and under CI=true they fail. Each check waits for a condition in the
page's DOM with a deadline; nothing sleeps to synchronise. The phone check resizes the
window until the viewport is 375 CSS px wide. Screenshots (of the viewport) go to
test-output/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.shell.api.app import build_app
from agent.shell.api.events import EventHub
from agent.shell.leds import PATTERNS, LedState, patterns_json
from agent.shell.metrics import Metrics
from tests.conftest import ROOT, AgentProcess, OriginServer, free_port, require, wait_for

OUTPUT = ROOT / "test-output"
LONG_ID = "checkout-service-behind-the-very-long-load-balancer-name"


class WebDriverError(AssertionError):
    """chromedriver answered a command with a W3C WebDriver error."""


class PageError(WebDriverError):
    """Script run in the page threw (WebDriver error code "javascript error")."""


class Browser:
    """One chromedriver session (one headless Chromium with one window), over WebDriver."""

    def __init__(self, http: aiohttp.ClientSession, base: str, session_id: str) -> None:
        self.http = http
        self.base = base  # http://127.0.0.1:<port> of chromedriver
        self.session_id = session_id

    async def command(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60
    ) -> Any:
        """One WebDriver command on this session; returns the answer's ``value``."""
        return await webdriver(
            self.http, method, f"{self.base}/session/{self.session_id}{path}", body, timeout
        )

    async def js(self, expression: str) -> Any:
        """Evaluate in the page; the value comes back as JSON (a promise is awaited).
        A page error fails the test."""
        try:
            return await self.command(
                "POST", "/execute/sync", {"script": f"return (\n{expression}\n);", "args": []}
            )
        except PageError as e:
            raise PageError(f"page error in {expression!r}: {e}") from None

    async def wait(self, expression: str, timeout: float = 15, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy (the page updates itself meanwhile)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.js(expression)
            except PageError as e:  # e.g. the element is not there yet
                last = e
            else:
                if last:
                    return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or expression} (last: {last})")

    async def goto(self, url: str) -> None:
        await self.command("POST", "/url", {"url": url})  # returns once the page has loaded
        await self.wait(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'",
            what=f"{url} loaded",
        )

    async def set_viewport(self, width: int, height: int) -> None:
        """Resize the window so that the page's viewport is ``width`` x ``height`` CSS px."""
        await self.command("POST", "/window/rect", {"width": width, "height": height})
        inner = await self.js("[window.innerWidth, window.innerHeight]")
        rect = {"width": 2 * width - inner[0], "height": 2 * height - inner[1]}
        await self.command("POST", "/window/rect", rect)  # the window's frame added
        await self.wait(
            f"window.innerWidth === {width} && window.innerHeight === {height}",
            what=f"a {width}x{height} viewport",
        )

    async def screenshot(self, path: Path) -> None:
        png = await self.command("GET", "/screenshot")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(png))


async def webdriver(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    timeout: float = 60,
) -> Any:
    """Send one W3C WebDriver command; a WebDriver error raises."""
    async with http.request(
        method, url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as r:
        text = await r.text()
    try:
        answer = json.loads(text)
    except ValueError:
        answer = text
    value = answer.get("value") if isinstance(answer, dict) else None
    if r.status != 200:
        error = value if isinstance(value, dict) else {"message": answer}
        cls = PageError if error.get("error") == "javascript error" else WebDriverError
        raise cls(f"{method} {url}: HTTP {r.status} {error.get('error')}: {error.get('message')}")
    return value


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    require(chromium is not None, "Debian package chromium (headless browser for the dashboard)")
    driver = shutil.which("chromedriver")
    require(driver is not None, "Debian package chromium-driver (chromedriver, drives chromium)")
    assert chromium is not None and driver is not None
    port = free_port()
    log_path = tmp_path / "chromedriver.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [driver, f"--port={port}"],  # listens on loopback only
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    http = aiohttp.ClientSession()
    session_id: str | None = None
    chromium_pid: int | None = None
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "chromedriver did not come up"
            try:
                status = await webdriver(http, "GET", f"{base}/status", timeout=5)
            except (aiohttp.ClientError, TimeoutError):
                status = None
            if status and status.get("ready"):
                break
            await asyncio.sleep(0.05)
        options = {
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",  # root in CI: Chromium's sandbox refuses to run as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={tmp_path / 'chromium-profile'}",
                "--window-size=1280,1000",
            ],
        }
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        try:
            created = await webdriver(http, "POST", f"{base}/session", caps)
        except WebDriverError as e:
            raise AssertionError(f"{e}\n{log_path.read_text(errors='replace')}") from None
        session_id = created["sessionId"]
        chromium_pid = created["capabilities"].get("goog:processID")
        yield Browser(http, base, session_id)
    finally:
        try:
            if session_id is not None:  # ends Chromium
                await webdriver(http, "DELETE", f"{base}/session/{session_id}", timeout=30)
                chromium_pid = None
        finally:
            await http.close()
            _stop(proc)
            log.close()
            if chromium_pid is not None:  # the session could not be ended: end its Chromium
                with contextlib.suppress(ProcessLookupError):
                    os.kill(chromium_pid, signal.SIGKILL)


def cluster_of_three(
    agent_process: Callable[..., AgentProcess], origins: OriginServer
) -> list[AgentProcess]:
    cfg = "".join(
        f'[[origin]]\nid = "{oid}"\nurl = "{origins.url(oid)}"\ninterval = "300ms"\n'
        f'timeout = "250ms"\nrise = 1\nfall = 1\n'
        for oid in ("shop", "blog", LONG_ID)
    )
    first = agent_process(cfg, name="pi-a").start()
    nodes = [first]
    for name in ("pi-b", "pi-c"):
        join = f'join = ["127.0.0.1:{first.gossip_port}"]'
        nodes.append(agent_process(cfg, name=name, cluster=join).start())
    for a in nodes:
        a.wait_notify("READY=1", 30)
    wait_for(
        lambda: all(a.get("/v1/health")[1]["cluster"]["peers"] == 2 for a in nodes),
        30,
        "a cluster of three",
    )
    return nodes


def leds_drawn_as(state: str) -> str:
    """JS: the page draws ``state`` on its three LEDs, each as PATTERNS says (a blinking one
    runs its CSS animation)."""
    return f"""(() => {{
      const box = document.getElementById('leds');
      if (box.dataset.state !== {json.dumps(state)}) return false;
      const want = {json.dumps({s.value: {c: p.mode for c, p in PATTERNS[s].items()} for s in LedState})}[box.dataset.state];
      return [...box.querySelectorAll('.led')].every(led => {{
        const mode = want[led.dataset.colour] || 'off';
        const anim = getComputedStyle(led).animationName;
        return led.dataset.mode === mode && (mode === 'blink') === anim.startsWith('blink-');
      }}) && document.getElementById('meaning').textContent.length > 0;
    }})()"""  # noqa: E501


def verdict_in_dom(oid: str) -> str:
    return (
        f"(document.querySelector('#origins tr[data-id=\"{oid}\"] td.verdict') || {{}}).textContent"
    )


async def test_dashboard_shows_the_cluster_and_follows_it_live(
    agent_process: Callable[..., AgentProcess],
    origin_server: OriginServer,
    browser: Browser,
) -> None:
    nodes = cluster_of_three(agent_process, origin_server)
    a = nodes[0]
    wait_for(
        lambda: {o["verdict"] for o in a.get("/v1/origins")[1]} == {"up"}, 20, "every origin up"
    )
    await browser.goto(a.url + "/")

    # members, with this node marked
    members = await browser.wait(
        """(() => {
          const rows = [...document.querySelectorAll('#members tr')];
          const m = Object.fromEntries(rows.map(tr => [tr.dataset.name, tr.dataset.state]));
          return Object.keys(m).length === 3 && Object.values(m).every(s => s === 'alive') && m;
        })()""",
        what="three alive members",
    )
    assert sorted(members) == ["pi-a", "pi-b", "pi-c"]
    assert await browser.js("document.querySelector('#members td.me').textContent") == "pi-a"
    assert await browser.js("document.getElementById('node').textContent") == "pi-a"

    # origins with verdicts, owners and latency, as the API has them
    api = {o["id"]: o for o in a.get("/v1/origins")[1]}
    await browser.wait(f"{verdict_in_dom('shop')} === 'up'", what="shop up in the page")
    rows = await browser.js(
        """[...document.querySelectorAll('#origins tr')].map(tr => ({
             id: tr.dataset.id, verdict: tr.querySelector('.verdict').textContent,
             owners: tr.querySelector('.owners').textContent,
             latency: tr.querySelector('.latency').textContent}))"""
    )
    assert [r["id"] for r in rows] == sorted(api)
    for r in rows:
        assert r["verdict"] == "up"
        assert r["owners"] == ", ".join(api[r["id"]]["owners"]) and r["owners"]
        assert r["latency"].endswith("ms"), r  # an exact latency, or a band from a peer

    # this node's LEDs, drawn from the patterns, agree with its health
    _, health = a.get("/v1/health")
    await browser.wait(leds_drawn_as(health["led"]["state"]), what="the LEDs drawn")
    await browser.wait("document.getElementById('conn').textContent === 'live'", what="live")
    await browser.screenshot(OUTPUT / "dashboard-up.png")

    # an origin goes down: the page follows without a reload
    await browser.js("window.__same_page = 42")
    origin_server.down.add("shop")
    await browser.wait(f"{verdict_in_dom('shop')} === 'down'", 20, "shop down, live")
    await browser.wait(
        '!!document.querySelector(\'#transitions li[data-origin="shop"][data-to="down"]\')',
        what="the down transition listed",
    )
    await browser.wait(
        "/[1-9][0-9]* down/.test(document.getElementById('c-origins').textContent)",
        what="the counts updated",
    )
    state = a.get("/v1/health")[1]["led"]["state"]
    await browser.wait(leds_drawn_as(state), what=f"LEDs drawn as {state}")
    await browser.screenshot(OUTPUT / "dashboard-down.png")

    origin_server.down.discard("shop")
    await browser.wait(f"{verdict_in_dom('shop')} === 'up'", 20, "shop up again, live")
    await browser.wait(
        '!!document.querySelector(\'#transitions li[data-origin="shop"][data-to="up"]\')',
        what="the up transition listed",
    )
    assert await browser.js("window.__same_page") == 42  # never reloaded

    # a member leaves: its state changes in the page
    nodes[2].stop()
    await browser.wait(
        "['left','dead','suspect'].includes("
        "document.querySelector('#members tr[data-name=\"pi-c\"]').dataset.state)",
        30,
        "pi-c no longer alive",
    )
    assert await browser.js("window.__same_page") == 42

    # identify: the page shows it (and the LEDs as health says) without a reload
    req = urllib.request.Request(
        a.url + "/v1/identify",
        data=json.dumps({"seconds": 60}).encode(),
        headers={"Content-Type": "application/json", **a.auth},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 202
    await browser.wait(
        "/^blinking, [0-9]+ s left$/.test(document.getElementById('c-identify').textContent)",
        what="identify shown",
    )
    state = a.get("/v1/health")[1]["led"]["state"]
    await browser.wait(leds_drawn_as(state), what=f"LEDs drawn as {state}")
    assert await browser.js("window.__same_page") == 42

    # a phone: everything fits the screen's width
    await browser.set_viewport(375, 740)
    await browser.wait(
        "window.innerWidth === 375 && document.documentElement.scrollWidth <= 375",
        what="no horizontal overflow at 375 px",
    )
    assert await browser.js(
        f"document.querySelector('#origins tr[data-id=\"{LONG_ID}\"]').getBoundingClientRect()"
        ".right <= 375"
    )
    await browser.screenshot(OUTPUT / "dashboard-phone.png")


class FixedBackend:
    """The API's Backend protocol over fixed documents: the page as any agent serves it,
    with the data a test chooses."""

    def __init__(self, health: dict[str, Any], origins: list[dict[str, Any]]) -> None:
        self.metrics = Metrics()
        self.events = EventHub()
        self.health = health
        self.origins = origins

    def health_view(self) -> dict[str, Any]:
        return self.health

    def origin_ids(self) -> list[str]:
        return sorted(o["id"] for o in self.origins)

    def origins_of(
        self, ids: Iterable[str], fields: Collection[str] | None
    ) -> Iterator[dict[str, Any]]:
        by_id = {o["id"]: o for o in self.origins}
        for oid in ids:
            o = by_id[oid]
            yield o if fields is None else {k: v for k, v in o.items() if k in fields}

    def origin_view(self, origin_id: str) -> dict[str, Any] | None:
        return next((o for o in self.origins if o["id"] == origin_id), None)

    def members_view(self) -> list[dict[str, Any]]:
        me = {"name": self.health["node"], "addr": "127.0.0.1", "port": 7946}
        return [{**me, "state": "alive", "incarnation": 1, "tags": {}}]

    def transitions_view(self) -> list[dict[str, Any]]:
        return []

    def api_token(self) -> str | None:
        return None

    async def put_origin(self, origin_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 405, {"error": "read-only"}

    async def delete_origin(self, origin_id: str) -> tuple[int, dict[str, Any]]:
        return 405, {"error": "read-only"}

    def identify(self, node: str | None, seconds: float) -> tuple[int, dict[str, Any]]:
        return 405, {"error": "read-only"}


@contextlib.asynccontextmanager
async def serving(backend: FixedBackend) -> AsyncIterator[str]:
    """The real API app (build_app) on a loopback port; yields its base URL."""
    runner = web.AppRunner(build_app(backend))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        backend.events.close()
        await runner.cleanup()


HEALTHY: dict[str, Any] = {
    "node": "pi-x",
    "status": "ok",
    "reasons": [],
    "summary": "",
    "led": {"state": "healthy", "meaning": "x"},
}


async def test_static_files_are_served_with_their_types_and_revalidated() -> None:
    """The page, its script, style and LED table: right Content-Type, no-cache with an ETag
    (a repeat load is a body-less 304), nothing from outside the Pi."""
    want = {
        "/": "text/html; charset=utf-8",
        "/static/dashboard.js": "text/javascript; charset=utf-8",
        "/static/dashboard.css": "text/css; charset=utf-8",
        "/static/leds.json": "application/json",
    }
    async with serving(FixedBackend(HEALTHY, [])) as url, aiohttp.ClientSession() as http:
        for path, content_type in want.items():
            async with http.get(url + path) as r:
                body = await r.read()
                assert r.status == 200, path
                assert r.headers["Content-Type"] == content_type, path
                assert r.headers["Cache-Control"] == "no-cache", path
                assert r.headers["X-Content-Type-Options"] == "nosniff", path
                etag = r.headers["ETag"]
            assert body, path
            async with http.get(url + path, headers={"If-None-Match": etag}) as r:
                assert r.status == 304, path
                assert await r.read() == b""
                assert r.headers["ETag"] == etag
            async with http.head(url + path) as r:
                assert r.status == 200 and r.headers["Content-Type"] == content_type
        async with http.get(url + "/") as r:
            page = await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        assert '<script src="/static/dashboard.js">' in page
        assert 'href="/static/dashboard.css"' in page
        assert "http://" not in page and "https://" not in page  # no CDN: works offline
        async with http.get(url + "/static/leds.json") as r:
            assert await r.json() == json.loads(patterns_json())
        async with http.get(url + "/static/nothing.js") as r:
            assert r.status == 404


async def test_page_is_safe_with_hostile_names(browser: Browser) -> None:
    """Names from the API go into the page as text, never markup."""
    evil = "</script><img src=x onerror=window.__pwned=1>"
    health = {
        "node": evil,
        "status": "ok",
        "reasons": [evil],
        "summary": "",
        "led": {"state": "healthy", "meaning": "x"},
    }
    origins = [
        {
            "id": "o1",
            "spec": {"url": evil},
            "verdict": "down",
            "owners": [evil],
            "mine": True,
            "observations": [{"observer": evil, "status": "down", "reason": evil}],
        }
    ]
    async with serving(FixedBackend(health, origins)) as url:
        await browser.goto(url + "/")
        await browser.wait("document.getElementById('node').textContent.length > 0")
        assert await browser.js("document.getElementById('node').textContent") == evil
        assert await browser.js("document.title") == "edge-agent " + evil
        await browser.wait(f"{verdict_in_dom('o1')} === 'down'", what="o1 in the page")
        assert await browser.js("document.querySelector('#origins .reason').textContent") == evil
        assert await browser.js("window.__pwned === undefined && !document.querySelector('img')")
        await browser.wait(leds_drawn_as("healthy"), what="healthy LEDs drawn")
