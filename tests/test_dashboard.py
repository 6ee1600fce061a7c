"""The dashboard at GET / in a real headless Chromium, against a real 3-node cluster.

Chromium (Debian's `chromium` package) is driven by chromedriver (Debian's
`chromium-driver` package, started as a child process on a loopback port), spoken to in
the W3C WebDriver HTTP protocol with aiohttp: no selenium, no playwright, no browser
downloads. Both packages are installed by the test setup (scripts/bootstrap.sh); without
them the tests skip, and under CI=true they fail. Each check waits for a condition in the
page's DOM with a deadline; nothing sleeps to synchronise. The phone check resizes the
window until the viewport is 375 CSS px wide. Screenshots (of the viewport) go to the
artifacts directory, $EDGE_AGENT_ARTIFACTS or else .ci/artifacts/ (ignored by git), for a
person (or CI, which keeps them) to look at; each test prints where.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.shell.api.app import build_app
from agent.shell.api.events import EventHub
from agent.shell.leds import PATTERNS, RGB_PATTERNS, LedState, patterns_json
from agent.shell.metrics import Metrics
from tests.conftest import ROOT, AgentProcess, OriginServer, free_port, require, wait_for

OUTPUT = Path(os.environ.get("EDGE_AGENT_ARTIFACTS") or ROOT / ".ci" / "artifacts")
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
          const rows = [...document.querySelectorAll('#members tr[data-name]')];
          const m = Object.fromEntries(rows.map(tr => [tr.dataset.name, tr.dataset.state]));
          return Object.keys(m).length === 3 && Object.values(m).every(s => s === 'alive') && m;
        })()""",
        what="three alive members",
    )
    assert sorted(members) == ["pi-a", "pi-b", "pi-c"]
    assert await browser.js("document.querySelector('#members td.me').textContent") == "pi-a"
    assert await browser.js("document.getElementById('node').textContent") == "pi-a"

    # origins with verdicts, owners and latency, as the API has them (once the cluster
    # has settled: an origin handed to a node that has not checked it yet is unknown)
    deadline = time.monotonic() + 20
    while True:
        api = {o["id"]: o for o in a.get("/v1/origins")[1]}
        rows = await browser.js(
            """[...document.querySelectorAll('#origins tr')].map(tr => ({
                 id: tr.dataset.id, verdict: tr.querySelector('.verdict').textContent,
                 owners: tr.querySelector('.owners').textContent,
                 latency: tr.querySelector('.latency').textContent}))"""
        )
        shown = {r["id"]: (r["verdict"], r["owners"]) for r in rows}
        if shown == {i: ("up", ", ".join(o["owners"])) for i, o in api.items()}:
            break
        assert time.monotonic() < deadline, (shown, api)
        await asyncio.sleep(0.1)
    assert [r["id"] for r in rows] == sorted(api)
    for r in rows:
        assert r["owners"] and r["latency"].endswith("ms"), r  # exact, or a peer's band

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
        self.series: dict[str, dict[str, Any]] = {}  # /v1/history's origins

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

    def history_view(self, ids: Sequence[str]) -> dict[str, Any]:
        return {
            "node": self.health["node"],
            "step": 60.0,
            "points": 60,
            "end": time.time(),
            "origins": {i: self.series[i] for i in ids if i in self.series},
            "elsewhere": {},
        }

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


def at_site(a: AgentProcess, site: str) -> AgentProcess:
    """Give the node a [node] site (its failure domain, gossiped as the member tag)."""
    text = a.config.read_text()
    a.config.write_text(text.replace("[node]\n", f'[node]\nsite = "{site}"\n', 1))
    return a


def get_with_headers(url: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def sparkline_of(oid: str) -> str:
    """JS: the row's sparkline as drawn, and the series the page drew it from."""
    return f"""(() => {{
      const tr = document.querySelector('#origins tr[data-id={json.dumps(oid)}]');
      const svg = tr && tr.querySelector('svg.spark');
      if (!svg) return null;
      return {{points: Number(svg.dataset.points), last: svg.dataset.last,
               failed: Number(svg.dataset.failed),
               lines: svg.querySelectorAll('polyline').length,
               marks: svg.querySelectorAll('rect.failed').length,
               series: sparks.origins[{json.dumps(oid)}]}};
    }})()"""


async def test_dashboard_draws_history_timeline_sites_and_leds(
    agent_process: Callable[..., AgentProcess],
    origin_server: OriginServer,
    browser: Browser,
) -> None:
    """The drawings, from a real 3-node cluster in 2 sites and real checks: latency
    sparklines, the timeline of a real failure, the members by site, the LEDs; a
    screenshot is kept as an artifact."""
    ids = ("shop", "blog", "api", "cdn", "auth")
    cfg = "".join(
        f'[[origin]]\nid = "{oid}"\nurl = "{origin_server.url(oid)}"\ninterval = "300ms"\n'
        f'timeout = "250ms"\nrise = 1\nfall = 1\n'
        for oid in ids
    )
    # pi-c alone in its site owns every origin (an owner from each of 2 sites); pi-a and
    # pi-b share the others: pi-a checks some origins, and some are checked elsewhere
    a = at_site(agent_process(cfg, name="pi-a"), "south").start()
    join = f'join = ["127.0.0.1:{a.gossip_port}"]'
    nodes = [a] + [
        at_site(agent_process(cfg, name=name, cluster=join), site).start()
        for name, site in (("pi-b", "south"), ("pi-c", "north"))
    ]
    for n in nodes:
        n.wait_notify("READY=1", 30)
    wait_for(
        lambda: all(n.get("/v1/health")[1]["cluster"]["peers"] == 2 for n in nodes),
        30,
        "a cluster of three",
    )

    def settled() -> bool:  # every origin up, and pi-b has taken its share from pi-a
        got = a.get("/v1/origins")[1]
        return {o["verdict"] for o in got} == {"up"} and not all(o["mine"] for o in got)

    wait_for(settled, 30, "every origin up, shared between the sites' nodes")
    views = {o["id"]: o for o in a.get("/v1/origins")[1]}
    mine = sorted(i for i, o in views.items() if o["mine"])
    others = sorted(i for i, o in views.items() if not o["mine"])
    assert mine and others, views

    # the history API: this node's checks as a series, the others' owners named
    status, _, h = get_with_headers(a.url + "/v1/history?ids=" + ",".join(ids))
    assert status == 200 and h["node"] == "pi-a" and h["points"] == 60 and h["step"] == 60
    assert set(h["origins"]) == set(mine), h
    for s in h["origins"].values():
        assert len(s["ms"]) == 60 and isinstance(s["ms"][-1], int) and 0 <= s["ms"][-1] < 250
    assert {i: sorted(o) for i, o in h["elsewhere"].items()} == {
        i: sorted(views[i]["owners"]) for i in others
    }
    assert abs(h["end"] - time.time()) <= 61
    status, headers, page = get_with_headers(a.url + "/v1/history?limit=2")
    assert status == 200 and 'rel="next"' in headers["Link"], headers
    assert set(page["origins"]) | set(page["elsewhere"]) <= set(sorted(ids)[:2])
    status, _, err = get_with_headers(a.url + "/v1/history?ids=a/b")
    assert status == 400 and err["error"].startswith("ids:"), err

    await browser.goto(a.url + "/")

    # members grouped by site, each with its state
    sites = await browser.wait(
        """(() => {
          const out = {};
          for (const s of document.querySelectorAll('#members section.site')) {
            out[s.dataset.site] = [...s.querySelectorAll('tr[data-name]')]
              .map(tr => tr.dataset.name + ':' + tr.dataset.state);
          }
          return Object.values(out).flat().length === 3
            && Object.values(out).flat().every(m => m.endsWith(':alive')) && out;
        })()""",
        what="three alive members in their sites",
    )
    assert sites == {"north": ["pi-c:alive"], "south": ["pi-a:alive", "pi-b:alive"]}
    assert (
        await browser.js(
            "document.querySelectorAll('#members section.site[data-site=\"south\"] .dots .alive')"
            ".length"
        )
        == 2
    )

    # a sparkline per origin this node checks, from its real checks; the others name
    # their owners
    target = mine[0]
    drawn = await browser.wait(
        f"(s => s && s.points >= 1 && s)({sparkline_of(target)})", what="a sparkline drawn"
    )
    series = drawn["series"]
    values = [v for v in series["ms"] if v is not None]
    assert drawn["points"] == len(values) >= 1 and drawn["lines"] >= 1
    assert drawn["last"] == str(values[-1]) and drawn["failed"] == 0 == drawn["marks"]
    _, _, now = get_with_headers(a.url + f"/v1/history?ids={target}")
    api_values = [v for v in now["origins"][target]["ms"] if v is not None]
    assert len(api_values) >= len(values)  # the same minutes, or a newer one since
    for oid in others:  # named, each linked to its own dashboard (the member tag api)
        cell = await browser.wait(
            f"""(td => td && td.textContent.startsWith('on ') && {{text: td.textContent,
                 links: [...td.querySelectorAll('a')].map(x => x.href)}})(
                 document.querySelector('#origins tr[data-id="{oid}"] .spark-cell'))""",
            what=f"who checks {oid}",
        )
        owners = views[oid]["owners"]
        assert cell["text"] == "on " + ", ".join(owners), cell
        want = [n.url + "/" for o in owners for n in nodes if n.name == o]
        assert cell["links"] == want, cell

    # the LEDs, drawn as health says they are lit
    state = a.get("/v1/health")[1]["led"]["state"]
    await browser.wait(leds_drawn_as(state), what=f"the LEDs drawn as {state}")

    # a real origin fails: the timeline marks the transition near "now", the sparkline
    # marks the failed minute, the LEDs follow
    origin_server.down.add(target)
    wait_for(lambda: a.get(f"/v1/origins/{target}")[1]["verdict"] == "down", 20, "down")
    mark = await browser.wait(
        f"""(() => {{
          const svg = document.getElementById('timeline');
          const m = svg.querySelector(
            'line.mark[data-origin={json.dumps(target)}][data-to="down"]');
          return m && {{x: Number(m.getAttribute('x1')), width: Number(svg.getAttribute('width')),
                        at: Number(m.dataset.at), rows: Number(svg.dataset.rows)}};
        }})()""",
        20,
        "the down transition on the timeline",
    )
    assert mark["rows"] >= 1 and mark["x"] > 0.85 * mark["width"], mark  # now is at the right
    assert abs(mark["at"] - time.time()) < 30
    api_t = [t for t in a.get("/v1/transitions")[1] if t["origin"] == target and t["to"] == "down"]
    assert api_t and abs(api_t[-1]["at"] - mark["at"]) < 0.01
    failed = await browser.wait(
        f"(s => s && s.failed >= 1 && s)({sparkline_of(target)})", 20, "the failure drawn"
    )
    assert failed["marks"] == failed["failed"] and failed["series"]["failed"]
    state = a.get("/v1/health")[1]["led"]["state"]
    await browser.wait(leds_drawn_as(state), what=f"the LEDs drawn as {state}")
    assert state == "some-down", state  # pi-a checks it: amber, as the Pi would show

    shot = OUTPUT / "dashboard-history.png"
    await browser.screenshot(shot)
    print(f"\nscreenshot: {shot}")
    assert shot.stat().st_size > 1000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    origin_server.down.discard(target)
    await browser.wait(
        f"!!document.querySelector('#timeline line.mark[data-origin={json.dumps(target)}]"
        '[data-to="up"]\')',
        20,
        "the recovery on the timeline",
    )


async def test_a_catalogue_of_100000_is_shown_a_page_at_a_time(browser: Browser) -> None:
    """100,000 origins: the page draws one page of them (and their sparklines), and
    pages on by id; the DOM stays small."""
    n = 100_000
    origins = [
        {
            "id": f"o{i:06d}",
            "verdict": "up" if i % 1000 else "down",
            "owners": ["pi-x"],
            "mine": True,
            "observations": [],
        }
        for i in range(n)
    ]
    backend = FixedBackend({**HEALTHY, "origins": {"up": n - 100, "down": 100}}, origins)
    backend.series = {
        "o000001": {"ms": [None] * 50 + list(range(10, 20)), "failed": [55]},
    }
    async with serving(backend) as url:
        await browser.goto(url + "/")
        await browser.wait(
            "document.querySelectorAll('#origins tr').length === 50", what="one page"
        )
        spark = await browser.wait(
            f"(s => s && s)({sparkline_of('o000001')})", what="the sparkline of o000001"
        )
        assert spark["points"] == 10 and spark["last"] == "19" and spark["failed"] == 1
        info = await browser.js("document.getElementById('page-info').textContent")
        assert re.fullmatch("1\u201350 of 100.?000", info), info
        await browser.js("document.getElementById('next').click()")
        await browser.wait(
            "document.querySelector('#origins tr').dataset.id === 'o000050'", what="page 2"
        )
        assert await browser.js("document.querySelectorAll('svg').length") < 200
        await browser.screenshot(OUTPUT / "dashboard-100000.png")
        # a filter walks the catalogue for a page's worth: the 100 down ones
        await browser.js("document.getElementById('only-bad').click()")
        await browser.wait(
            "(rows => rows.length === 50 && rows.every(tr => tr.dataset.verdict === 'down'))"
            "([...document.querySelectorAll('#origins tr')])",
            30,
            "a page of down origins",
        )
        assert await browser.js("document.querySelector('#origins tr').dataset.id") == "o000000"


async def test_an_rgb_led_is_drawn_as_one_led_in_its_colours(browser: Browser) -> None:
    """A node with one RGB LED (its pins read back as r, g, b): one LED is drawn, in the
    state's colours and rhythm as agent/shell/leds.py's RGB_PATTERNS has them."""
    rgb = RGB_PATTERNS[LedState.IMPAIRED]  # red blinking, amber between the blinks
    health = {
        **HEALTHY,
        "led": {
            "state": "impaired",
            "meaning": "x",
            "pins": {"r": 1.0, "g": 0.0, "b": 0.0},
            "kind": "gpio",
        },
    }
    async with serving(FixedBackend(health, [])) as url:
        await browser.goto(url + "/")
        drawn = await browser.wait(
            """(() => {
              const box = document.getElementById('leds');
              const leds = [...box.querySelectorAll('.led')];
              return box.dataset.layout === 'rgb' && leds.length === 1 && {
                rgb: leds[0].dataset.rgb, mode: leds[0].dataset.mode,
                anim: getComputedStyle(leds[0]).animationName,
                kind: document.getElementById('led-kind').textContent};
            })()""",
            what="one RGB LED drawn",
        )
    assert drawn["rgb"] == f"{rgb.colour}/{rgb.off_colour}" and drawn["mode"] == "blink"
    assert drawn["anim"].startswith("rgb-blink-"), drawn
    assert drawn["kind"] == ""  # real LEDs: nothing to excuse


async def test_history_refuses_bad_queries() -> None:
    """GET /v1/history: ids or a page, of 500 at most; a bad query is a 400 naming it."""
    backend = FixedBackend(HEALTHY, [{"id": f"o{i}", "verdict": "up"} for i in range(3)])
    backend.series = {"o1": {"ms": [None] * 59 + [5], "failed": []}}
    async with serving(backend) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/v1/history?ids=o1,o2") as r:
            assert r.status == 200
            assert (await r.json())["origins"] == {"o1": {"ms": [None] * 59 + [5], "failed": []}}
        async with http.get(url + "/v1/history?limit=1&after=o0") as r:
            assert (
                r.status == 200
                and r.headers["Link"] == '</v1/history?after=o1&limit=1>; rel="next"'
            )
            assert set((await r.json())["origins"]) == {"o1"}
        for query, param in (
            ("ids=", "ids"),
            ("ids=a/b", "ids"),
            ("ids=" + ",".join(f"x{i}" for i in range(501)), "ids"),
            ("limit=501", "limit"),
            ("limit=0", "limit"),
            ("after=a/b", "after"),
        ):
            async with http.get(url + "/v1/history?" + query) as r:
                body = await r.json()
                assert r.status == 400 and body["error"].startswith(param + ":"), (query, body)
