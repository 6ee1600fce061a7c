"""The Alertmanager poster (agent/shell/alertmanager.py) against a real HTTP server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from agent.shell import alertmanager as am
from agent.shell.alert_rules import Alert
from agent.shell.config import AlertmanagerConfig


def alert(origin: str, ends: float) -> Alert:
    return Alert((("alertname", "X"), ("origin", origin)), (("node", "a"),), 100.0, ends)


async def wait_for(cond: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_posts_batches_retries_failures_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(am, "RETRY_DELAYS", (0.05, 0.05))
    posts: list[Any] = []
    answers = [500, 200, 503, 503, 503]

    async def handler(request: web.Request) -> web.Response:
        posts.append((request.path, request.content_type, json.loads(await request.read())))
        return web.Response(status=answers.pop(0) if answers else 200)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/am/api/v2/alerts", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        sender = am.AlertmanagerSender((AlertmanagerConfig(f"http://127.0.0.1:{port}/am", 2.0),))
        sender.start()
        try:
            sender.send([alert("a", 200.0), alert("b", 200.0)])
            await wait_for(lambda: sender.counts["delivered"] == 1)
            # the first POST failed (500) and was retried with the same batch
            assert [p[0] for p in posts] == ["/am/api/v2/alerts"] * 2
            assert posts[0][1] == "application/json"
            assert posts[0][2] == posts[1][2]
            assert [a["labels"]["origin"] for a in posts[1][2]] == ["a", "b"]
            assert posts[1][2][0]["endsAt"] == "1970-01-01T00:03:20.000Z"
            sender.send([alert("c", 300.0)])  # 503 three times: given up after 2 retries
            await wait_for(lambda: sender.counts["failed"] == 1)
            assert sender.counts["retried"] == 3 and sender.pending == 0
            registry = CollectorRegistry()
            registry.register(am.AlertmanagerCollector(sender))
            text = generate_latest(registry).decode()
            assert 'edge_agent_alertmanager_posts_total{result="delivered"} 1.0' in text
            assert 'edge_agent_alertmanager_posts_total{result="failed"} 1.0' in text
            assert 'edge_agent_alertmanager_posts_total{result="retried"} 3.0' in text
            assert "edge_agent_alertmanager_queued_alerts 0.0" in text
            assert "_created" not in text
        finally:
            await sender.stop()
            await runner.cleanup()

    asyncio.run(main())


def test_unreachable_alertmanager_never_raises_and_stop_counts_the_unsent() -> None:
    async def main() -> None:
        # port 9 on loopback: nothing listens (connection refused at once)
        sender = am.AlertmanagerSender((AlertmanagerConfig("http://127.0.0.1:9", 1.0),))
        sender.start()
        sender.send([alert("a", 1.0)])
        await wait_for(lambda: sender.counts["retried"] >= 1)
        sender.send([alert("b", 1.0)])
        await sender.stop()
        assert sender.counts["shutdown"] == 2 and sender.pending == 0

    asyncio.run(main())


def test_no_alertmanager_is_a_disabled_sender() -> None:
    sender = am.AlertmanagerSender(())
    assert not sender.enabled
    sender.send([alert("a", 1.0)])
    assert sender.pending == 0
