"""The dashboard at GET / in a real headless Chromium, against a real 3-node cluster.

Chromium (Debian's `chromium` package) is driven over the Chrome DevTools Protocol on a
websocket (aiohttp), with no browser downloads. Each check waits for a condition in the
page's DOM with a deadline; nothing sleeps to synchronise. Screenshots go to
test-output/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.api.page import render_status_page
from agent.leds import PATTERNS, LedState
from tests.conftest import ROOT, AgentProcess, OriginServer, free_port, require, wait_for

OUTPUT = ROOT / "test-output"
LONG_ID = "checkout-service-behind-the-very-long-load-balancer-name"


class Browser:
    """One headless Chromium and one page (tab) in it, spoken to over CDP."""

    def __init__(self, proc: subprocess.Popen[bytes], ws: aiohttp.ClientWebSocketResponse):
        self.proc = proc
        self.ws = ws
        self.session: str | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            fut = self._waiting.pop(data.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(data)
        for fut in self._waiting.values():  # the browser went away
            if not fut.done():
                fut.set_exception(ConnectionError("CDP connection closed"))

    async def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            msg["sessionId"] = self.session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = fut
        await self.ws.send_str(json.dumps(msg))
        data = await asyncio.wait_for(fut, timeout)
        if "error" in data:
            raise AssertionError(f"CDP {method}: {data['error']}")
        result: dict[str, Any] = data.get("result", {})
        return result

    async def open_page(self) -> None:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self.session = attached["sessionId"]
        await self.send("Page.enable")
        await self.send("Runtime.enable")

    async def js(self, expression: str) -> Any:
        """Evaluate in the page; the value comes back as JSON. A page error fails the test."""
        r = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in r:
            raise AssertionError(f"page error in {expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait(self, expression: str, timeout: float = 15, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy (the page updates itself meanwhile)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.js(expression)
            except AssertionError as e:  # e.g. the element is not there yet
                last = e
            else:
                if last:
                    return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or expression} (last: {last})")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'",
            what=f"{url} loaded",
        )

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    require(exe is not None, "Debian package chromium (headless browser for the dashboard)")
    assert exe is not None
    port = free_port()
    stderr = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
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
            "--remote-debugging-address=127.0.0.1",
            f"--remote-debugging-port={port}",
            "--window-size=1280,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    http = aiohttp.ClientSession()
    try:
        url = f"http://127.0.0.1:{port}/json/version"
        deadline = time.monotonic() + 30
        ws_url = None
        while ws_url is None:
            assert proc.poll() is None, (tmp_path / "chromium.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "Chromium's DevTools endpoint did not come up"
            try:
                async with http.get(url) as r:
                    ws_url = (await r.json())["webSocketDebuggerUrl"]
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        ws = await http.ws_connect(ws_url, max_msg_size=0)
        b = Browser(proc, ws)
        await b.open_page()
        yield b
        await ws.close()
        b._reader.cancel()
    finally:
        await http.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        stderr.close()


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
        headers={"Content-Type": "application/json"},
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
    await browser.send(
        "Emulation.setDeviceMetricsOverride",
        width=375,
        height=740,
        deviceScaleFactor=2,
        mobile=True,
    )
    await browser.wait(
        "window.innerWidth === 375 && document.documentElement.scrollWidth <= 375",
        what="no horizontal overflow at 375 px",
    )
    assert await browser.js(
        f"document.querySelector('#origins tr[data-id=\"{LONG_ID}\"]').getBoundingClientRect()"
        ".right <= 375"
    )
    await browser.screenshot(OUTPUT / "dashboard-phone.png")


async def test_page_is_safe_with_hostile_names(browser: Browser, tmp_path: Path) -> None:
    """Names go into the page as text, never markup, including in the embedded JSON."""
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
    page = tmp_path / "page.html"
    page.write_text(render_status_page(health, origins))
    await browser.goto(page.as_uri())
    await browser.wait("document.getElementById('node').textContent.length > 0")
    assert await browser.js("document.getElementById('node').textContent") == evil
    assert await browser.js(f"{verdict_in_dom('o1')}") == "down"
    assert await browser.js("document.querySelector('#origins .reason').textContent") == evil
    assert await browser.js("window.__pwned === undefined && !document.querySelector('img')")
    await browser.wait(leds_drawn_as("healthy"), what="healthy LEDs drawn")
