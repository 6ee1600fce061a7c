"""Every LED state, produced by the real condition in running agents, read off gpiozero's
mock pins, for the three-LED and the one-RGB-LED layouts.

The agents run in this process (so the test can hand them a MockFactory and read its
pins) on loopback, with real sockets, a real origin server, real files on disk. Each
test creates the condition the way it happens in the field: a seed that never answers,
a damaged peers file, a data directory the store cannot write, an unusable keyring, an
origin that is down (or down for only one of its owners), an identify request through
the API. Nothing calls the LED code directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

from agent.shell.config import parse_config
from agent.shell.leds import COLOURS, OFF, PATTERNS, RGB_COLOURS, RGB_PATTERNS, LedState
from agent.shell.runtime import Agent
from tests.conftest import async_wait_for, free_port

PINS = {"green": 17, "amber": 27, "red": 22}
RGB_PINS = (5, 6, 13)
TOLERANCE = 0.2  # seconds: blink threads on a shared 2-core machine
LAYOUTS = ("three", "rgb")


class Origins:
    """Origins on a loopback aiohttp server: /o/{name} is 200 while up, 500 while down,
    and 500 for checks whose User-Agent starts with a name in ``down_for[name]``."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.down_for: dict[str, set[str]] = {}
        self.port = 0

    async def start(self) -> None:
        async def origin(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            ua = request.headers.get("User-Agent", "").split("/")[0]
            bad = name in self.down or ua in self.down_for.get(name, set())
            return web.Response(status=500 if bad else 200, text="x")

        app = web.Application()
        app.router.add_get("/o/{name}", origin)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/o/{name}"


class Node:
    """An in-process agent with mock LED pins in the given layout."""

    def __init__(self, tmp: Path, name: str, layout: str, extra: str = "", pre: str = "") -> None:
        self.name = name
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.gossip_port = free_port()
        self.layout = layout
        leds = (
            f'[leds]\nlayout = "rgb"\nrgb = [{", ".join(map(str, RGB_PINS))}]\n'
            if layout == "rgb"
            else "[leds]\ngreen = 17\namber = 27\nred = 22\n"
        )
        text = (
            f'[node]\nname = "{name}"\ndata_dir = "{self.dir / "data"}"\n'
            f'[api]\nlisten = "127.0.0.1:0"\n'
            f'[cluster]\ndiscover = false\nbind = "127.0.0.1:{self.gossip_port}"\n{pre}\n'
            f'[checks]\nuser_agent = "{name}"\n{leds}{extra}'
        )
        self.config = parse_config(tomllib.loads(text), f"{name}.toml")
        pin_class = MockPWMPin if layout == "rgb" else MockPin
        self.factory = MockFactory(pin_class=pin_class)
        self.agent = Agent(self.config, pin_factory=self.factory)

    def pins(self) -> dict[str, Any]:
        if self.layout == "rgb":
            return {c: self.factory.pin(n) for c, n in zip("rgb", RGB_PINS, strict=True)}
        return {c: self.factory.pin(PINS[c]) for c in COLOURS}

    def expected(self, state: LedState) -> dict[str, tuple[float, float, float, float]]:
        """Per pin: (value while on, value while off, on time, off time); a solid pattern
        has equal values and zero times."""
        out = {}
        if self.layout == "rgb":
            rgb = RGB_PATTERNS[state]
            for i, c in enumerate("rgb"):
                on = RGB_COLOURS[rgb.colour][i]
                if rgb.pattern.mode == "blink":
                    off = RGB_COLOURS[rgb.off_colour][i]
                    out[c] = (on, off, rgb.pattern.on_time, rgb.pattern.off_time)
                else:
                    out[c] = (on, on, 0.0, 0.0)
        else:
            for c in COLOURS:
                p = PATTERNS[state].get(c, OFF)
                if p.mode == "blink":
                    out[c] = (1.0, 0.0, p.on_time, p.off_time)
                else:
                    v = 1.0 if p.mode == "on" else 0.0
                    out[c] = (v, v, 0.0, 0.0)
        return out

    async def shows(self, state: LedState, timeout: float = 20.0) -> None:
        """Wait until the agent's own LED state is ``state``, then check every pin."""
        await async_wait_for(
            lambda: self.agent.views.health_view()["led"]["state"] == str(state),
            timeout,
            f"{self.name} to show {state} (shows {self.agent.views.health_view()['led']})",
        )
        await assert_pins(self.pins(), self.expected(state), f"{self.name} {state}")

    async def stop(self) -> None:
        await self.agent.stop()
        self.factory.close()


async def assert_pins(pins: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """Solid pins hold their value; blinking pins alternate with the documented times."""
    for p in pins.values():
        p.clear_states()
    blinking = {c for c, e in expected.items() if e[0] != e[1]}
    solid = {c: e[0] for c, e in expected.items() if c not in blinking}
    # the pins follow the state on the loop pass after it changed (refreshes coalesce):
    # wait for that pass, then every solid pin must hold its value
    deadline = time.monotonic() + 2
    while any(float(pins[c].state) != pytest.approx(v) for c, v in solid.items()):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    for c, on in solid.items():
        assert float(pins[c].state) == pytest.approx(on), (what, c, pins[c].state)
    if not blinking:
        return
    deadline = time.monotonic() + 10
    while any(len(pins[c].states) < 4 for c in blinking):
        assert time.monotonic() < deadline, (what, {c: pins[c].states for c in blinking})
        await asyncio.sleep(0.05)
    for c in blinking:
        on, off, t_on, t_off = expected[c]
        changes = pins[c].states[1:4]  # three changes after the clear: whole periods
        values = [float(s.state) for s in changes]
        assert all(v == pytest.approx(on) or v == pytest.approx(off) for v in values), (
            what,
            c,
            values,
        )
        for prev, cur in itertools.pairwise(changes):
            held = t_on if float(prev.state) == pytest.approx(on) else t_off
            assert cur.timestamp == pytest.approx(held, abs=TOLERANCE), (what, c, changes)
    for c in expected:
        if c not in blinking:
            assert len(pins[c].states) == 1, (what, c, pins[c].states)  # never moved


@pytest.fixture
async def origins() -> AsyncIterator[Origins]:
    o = Origins()
    await o.start()
    yield o
    await o.runner.cleanup()


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    made: list[Node] = []

    async def make(
        name: str, layout: str, extra: str = "", pre: str = "", start: bool = True
    ) -> Node:
        n = Node(tmp_path, name, layout, extra, pre)
        made.append(n)
        if start:
            await n.agent.start()
        return n

    yield make
    for n in reversed(made):
        with contextlib.suppress(Exception):
            await n.stop()


def origin_toml(o: Origins, name: str) -> str:
    url = o.url(name)
    return f'[[origin]]\nid = "{name}"\nurl = "{url}"\ninterval = "300ms"\nrise = 1\nfall = 1\n'


async def pair(nodes: Callable[..., Awaitable[Node]], o: Origins, layout: str) -> tuple[Node, Node]:
    a = await nodes("a", layout, origin_toml(o, "web"))
    b = await nodes("b", layout, pre=f'join = ["127.0.0.1:{a.gossip_port}"]')
    await async_wait_for(lambda: a.agent.cluster.peers() == 1, 15, "a and b joined")
    return a, b


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_starting(nodes: Callable[..., Awaitable[Node]], layout: str) -> None:
    n = await nodes("s", layout, start=False)
    task = asyncio.create_task(n.agent.start())
    await asyncio.sleep(0)  # start() runs up to its first await: not READY yet
    assert n.agent.views.health_view()["led"]["state"] == str(LedState.STARTING)
    exp = n.expected(LedState.STARTING)
    for c, p in n.pins().items():  # the first step of the blink: the "on" values
        assert float(p.state) == pytest.approx(exp[c][0]), (c, p.state)
    await task
    assert n.agent.views.health_view()["led"]["state"] != str(LedState.STARTING)


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_searching_while_the_seed_never_answers(
    nodes: Callable[..., Awaitable[Node]], layout: str
) -> None:
    n = await nodes("alone", layout, pre=f'join = ["127.0.0.1:{free_port()}"]')
    await n.shows(LedState.SEARCHING)


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_healthy_some_down_and_disputed(
    nodes: Callable[..., Awaitable[Node]], origins: Origins, layout: str
) -> None:
    a, b = await pair(nodes, origins, layout)
    await a.shows(LedState.HEALTHY)
    origins.down.add("web")
    await a.shows(LedState.SOME_DOWN)
    origins.down.discard("web")
    origins.down_for["web"] = {"b"}  # b's checks fail, a's pass: the owners disagree
    await a.shows(LedState.DISPUTED)
    await b.shows(LedState.DISPUTED)


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_suspected_with_a_damaged_peers_file(
    nodes: Callable[..., Awaitable[Node]], layout: str
) -> None:
    n = await nodes("d", layout, start=False)
    (n.dir / "data").mkdir(parents=True, exist_ok=True)
    (n.dir / "data" / "peers.json").write_bytes(b"\x00not json{")
    await n.agent.start()
    assert any("peers" in r for r in n.agent.views.health_view()["reasons"])
    await n.shows(LedState.SUSPECTED)


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_storage_fault_when_the_store_cannot_be_written(
    nodes: Callable[..., Awaitable[Node]], origins: Origins, layout: str
) -> None:
    n = await nodes("st", layout, origin_toml(origins, "web"), start=False)
    store = n.dir / "data" / "store"
    shutil.rmtree(store)  # someone "cleaned up" the card: a file where the store was
    store.write_text("a file where the store's directory should be\n")
    await n.agent.start()
    await n.shows(LedState.STORAGE_FAULT)
    health = n.agent.views.health_view()
    assert health["status"] == "degraded"
    storage = [r for r in health["reasons"] if r.startswith("storage: ")]
    assert len(storage) == 1 and "storage: storage" not in storage[0], storage
    assert "running from memory" in storage[0]


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_fault_with_an_unusable_keyring(
    nodes: Callable[..., Awaitable[Node]], tmp_path: Path, layout: str
) -> None:
    keyring = tmp_path / "keyring"
    keyring.write_text("this is not a base64 key\n")
    n = await nodes("k", layout, pre=f'keyring_file = "{keyring}"')
    assert n.agent.views.health_view()["status"] == "failing"
    await n.shows(LedState.FAULT)


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_identify_through_another_nodes_api(
    nodes: Callable[..., Awaitable[Node]], origins: Origins, layout: str
) -> None:
    a, b = await pair(nodes, origins, layout)
    assert a.agent.api_url is not None
    async with (
        aiohttp.ClientSession() as s,
        s.post(a.agent.api_url + "/v1/identify", json={"node": "b", "seconds": 30}) as r,
    ):
        assert r.status == 202, await r.text()
    await b.shows(LedState.IDENTIFY)


async def test_an_led_that_cannot_be_driven_is_a_fault_and_the_node_goes_on(
    origins: Origins, tmp_path: Path
) -> None:
    """Another program holds the red LED's pin: the node checks as before, drives the
    LEDs it can, and says in /v1/health (and /metrics) that one LED is missing."""
    from gpiozero import LED

    port = free_port()
    text = (
        f'[node]\nname = "l"\ndata_dir = "{tmp_path / "data"}"\n[api]\nlisten = "127.0.0.1:0"\n'
        f'[cluster]\ndiscover = false\nbind = "127.0.0.1:{port}"\n'
        "[leds]\ngreen = 17\namber = 27\nred = 22\n" + origin_toml(origins, "web")
    )
    factory = MockFactory(pin_class=MockPin)
    other = LED(PINS["red"], pin_factory=factory)  # the pin is taken
    agent = Agent(parse_config(tomllib.loads(text), "l.toml"), pin_factory=factory)
    try:
        await agent.start()
        await async_wait_for(
            lambda: (
                agent.views.origin("web") is not None
                and agent.views.origin("web")["verdict"] == "up"
            ),  # type: ignore[index]
            15,
            "web checked up",
        )
        health = agent.views.health_view()
        leds = [r for r in health["reasons"] if r.startswith("leds: ")]
        assert len(leds) == 1 and "GPIO22 for the red LED" in leds[0], health["reasons"]
        assert health["status"] == "degraded"
        # the LEDs that work go on showing the node's state (not "suspected": the red LED
        # that would blink for it is the broken one)
        await async_wait_for(lambda: health_led(agent) == "healthy", 10, "healthy on the LEDs")
        await async_wait_for(lambda: float(factory.pin(PINS["green"]).state) == 1.0, 5)
        fault = {"what": "leds", "level": "degraded"}
        await async_wait_for(
            lambda: agent.metrics.registry.get_sample_value("edge_agent_fault", fault) == 1.0,
            5,
            "the LED fault in /metrics",
        )
    finally:
        await agent.stop()
        other.close()
        factory.close()


def health_led(agent: Agent) -> str:
    return str(agent.views.health_view()["led"]["state"])


# --- what refreshes the surfaces: changes, not a clock (agent/shell/surfaces.py) ----------


async def test_an_idle_node_refreshes_its_surfaces_only_when_something_changed(
    nodes: Callable[..., Awaitable[Node]],
) -> None:
    """An idle node's LEDs, STATUS line and gauges are pushed when what they show changes,
    not once a second: over a quiet window nothing refreshes, and a change (an identify
    blink starting, and running out) refreshes at once."""
    n = await nodes("quiet", "three")
    agent = n.agent
    await async_wait_for(lambda: agent.coordinator.settled, 10, "the node to settle")
    await n.shows(LedState.HEALTHY)
    runs: list[float] = []
    refresh = agent.surfaces.refresh

    def counted() -> None:
        runs.append(time.monotonic())
        refresh()

    agent.surfaces.refresh = counted  # type: ignore[method-assign]
    quiet_until = time.monotonic() + 3.0  # three refreshes, were they on a 1 s clock
    while time.monotonic() < quiet_until:
        await asyncio.sleep(0.05)
    assert runs == []
    agent._start_identify(1.0, "test")  # as POST /v1/identify does
    await async_wait_for(lambda: agent.leds.state == LedState.IDENTIFY, 0.5, "the blink")
    await async_wait_for(lambda: agent.leds.state == LedState.HEALTHY, 3, "the blink to end")
    await n.shows(LedState.HEALTHY)
    assert len(runs) >= 2


async def test_lifeguards_health_score_reaches_the_leds(
    nodes: Callable[..., Awaitable[Node]], origins: Origins
) -> None:
    """A node whose probes go unanswered raises its Lifeguard health score: its LEDs say
    it is suspected as soon as the score changes, and healthy once it is back to 0."""
    a, _ = await pair(nodes, origins, "three")
    await a.shows(LedState.HEALTHY)
    node = a.agent.cluster.node
    assert node is not None and node.endpoint is not None
    core = node.endpoint.core
    leds = a.agent.leds
    # as probes without the nacks they expected would; at the top of the scale, as the
    # probe interval stretches with it, the acks that bring it down take a while
    core._awareness(core.awareness.max - 1)
    node._pump()  # the transport delivers the core's events, as after any packet
    await async_wait_for(lambda: leds.state == LedState.SUSPECTED, 2, "the LEDs to follow")
    await a.shows(LedState.SUSPECTED)
    core._awareness(-core.awareness.max)  # acks bring it down again
    node._pump()
    await async_wait_for(lambda: leds.state == LedState.HEALTHY, 2, "the LEDs to follow")
    await a.shows(LedState.HEALTHY)


async def test_a_dashboard_gets_the_health_view_as_soon_as_it_listens(
    nodes: Callable[..., Awaitable[Node]],
) -> None:
    """The health view is pushed to /v1/events once a second only while a client listens;
    a client that connects to a quiet node gets it at once, not at the next safety net."""
    n = await nodes("dash", "three")
    assert n.agent.api_url is not None
    async with (
        aiohttp.ClientSession() as s,
        s.get(n.agent.api_url + "/v1/events", timeout=aiohttp.ClientTimeout(total=5)) as r,
    ):
        while True:
            line = await r.content.readline()
            assert line, "the stream ended before a health event"
            if line.startswith(b"event: health"):
                break
