"""One node's Alertmanager path end to end, in-process, against Debian's real Alertmanager:
the firing alert is re-sent on the cadence (made 1 s here) without a second notification,
its ``startsAt`` stays the transition's, and ``up`` resolves it at once.

The fleet-wide properties (every owner sends, a partition) are in test_alertmanager_fleet.py.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.shell import runtime
from agent.shell.config import parse_config
from agent.shell.runtime import Agent
from edge_harness import alertmanager
from edge_harness.alertmanager import Alertmanager
from tests.conftest import async_wait_for, free_port, require


class Web:
    """A loopback aiohttp server: the origin ``/o`` (200 or 500) and a webhook receiver
    ``/hook`` recording Alertmanager's notifications."""

    def __init__(self) -> None:
        self.down = False
        self.hooks: list[dict[str, Any]] = []
        self.port = 0

    async def start(self) -> None:
        async def origin(_: web.Request) -> web.Response:
            return web.Response(status=500 if self.down else 200, text="x")

        async def hook(request: web.Request) -> web.Response:
            self.hooks.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/o", origin)
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def notes(self) -> list[tuple[str, str]]:
        return [(h["status"], a["labels"]["origin"]) for h in self.hooks for a in h["alerts"]]


@pytest.fixture
async def server() -> AsyncIterator[Web]:
    w = Web()
    await w.start()
    yield w
    await w.runner.cleanup()


async def test_resent_on_the_cadence_notified_once_resolved_at_once(
    server: Web, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(alertmanager.available(), "Debian package prometheus-alertmanager")
    monkeypatch.setattr(runtime, "ALERT_TICK", 0.2)
    am_port = free_port()
    am = Alertmanager(
        tmp_path / "am", f"http://127.0.0.1:{server.port}/hook", listen=("127.0.0.1", am_port)
    )
    await asyncio.to_thread(am.start)
    text = (
        f'[node]\nname = "solo"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[api]\nlisten = "127.0.0.1:0"\n'
        f'[cluster]\ndiscover = false\nbind = "127.0.0.1:{free_port()}"\n[leds]\nenabled = false\n'
        f'[[origin]]\nid = "web"\nurl = "http://127.0.0.1:{server.port}/o"\n'
        'interval = "300ms"\nrise = 1\nfall = 1\n'
        f'[[alertmanager]]\nurl = "http://127.0.0.1:{am_port}"\n'
    )
    agent = Agent(parse_config(tomllib.loads(text), "solo.toml"))
    agent.alert_rules.resend = 1.0

    def posts() -> float:
        return agent.alertmanager.counts["delivered"]

    async def alerts() -> list[dict[str, Any]]:
        return await asyncio.to_thread(am.alerts)

    try:
        await agent.start()
        await async_wait_for(lambda: agent.coordinator.verdict("web") == "up", 15, "web up")
        server.down = True
        await async_wait_for(lambda: server.notes() == [("firing", "web")], 20, "firing")
        (first,) = await alerts()
        assert first["labels"] == {
            "alertname": "EdgeAgentOriginDown",
            "cluster": "edge",
            "origin": "web",
            "severity": "critical",
        }
        assert first["annotations"]["node"] == "solo"
        sent = posts()
        await async_wait_for(lambda: posts() >= sent + 3, 10, "three re-sends")
        (later,) = await alerts()
        assert later["startsAt"] == first["startsAt"]  # the transition's, not the re-send's
        assert later["endsAt"] > first["endsAt"]  # each copy carries a new validity
        assert server.notes() == [("firing", "web")]  # re-sends notify nobody again
        server.down = False
        await async_wait_for(
            lambda: server.notes() == [("firing", "web"), ("resolved", "web")], 20, "resolved"
        )
        assert await alerts() == []  # resolved at once, not after a timeout
    finally:
        await agent.stop()
        await asyncio.to_thread(am.stop)
