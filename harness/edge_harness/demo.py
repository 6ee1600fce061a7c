"""`edge-agent demo`: a real agent checking a small origin farm that the demo serves itself.

Nothing is faked on the agent's side: it is the same Agent that `edge-agent run`
starts, with its API, /metrics, status page and (mock) LEDs. Some origins flap on
purpose so transitions can be watched live. Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from typing import Any

from agent.shell.config import parse_config
from agent.shell.runtime import Agent
from edge_harness.farm import Farm, start_farm

# id -> farm behaviour; the flap periods differ so transitions keep coming
BEHAVIOURS = {
    "www": "up",
    "api": "up",
    "images": "flap:24",
    "checkout": "flap:40",
    "search": "slow:0.35",
    "reports": "wrongbody",
    "legacy": "down",
}

COLOURS = {"up": "\033[32m", "down": "\033[31m", "unknown": "\033[33m"}
RESET = "\033[0m"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(farm: Farm, api_port: int, data_dir: str) -> dict[str, Any]:
    origins: list[dict[str, Any]] = []
    for oid in BEHAVIOURS:
        o: dict[str, Any] = {"id": oid, "url": farm.url(oid), "interval": "2s", "timeout": "1s"}
        if oid == "reports":
            o["expect_body"] = "ok"
        origins.append(o)
    origins.append({"id": "farm-tcp", "url": f"tcp://127.0.0.1:{farm.port}", "interval": "3s"})
    origins.append({"id": "closed-tcp", "url": f"tcp://127.0.0.1:{_free_port()}", "interval": "3s"})
    return {
        "node": {"name": "demo", "data_dir": data_dir, "tags": {"site": "demo"}},
        "cluster": {"discover": False, "bind": "127.0.0.1:0"},
        "api": {"listen": f"127.0.0.1:{api_port}"},
        "origin": origins,
    }


def _render(agent: Agent, url: str, tty: bool) -> str:
    lines = [
        f"edge-agent demo — node {agent.node_name}: {agent.health.status}, {agent.views.summary()}",
        f"status page: {url}/   API: {url}/v1/origins   metrics: {url}/metrics",
        f"LEDs: {agent.leds.describe()}",
        "",
        f"{'ORIGIN':<12} {'VERDICT':<8} {'LATENCY':>8}  LAST CHECK",
    ]
    for o in agent.views.origins():
        obs = o["observations"][0] if o["observations"] else {}
        lat = obs.get("latency_ms")
        verdict = o["verdict"]
        shown = f"{COLOURS.get(verdict, '')}{verdict:<8}{RESET}" if tty else f"{verdict:<8}"
        lat_s = "" if lat is None else f"{lat:.0f}ms"
        lines.append(f"{o['id']:<12} {shown} {lat_s:>8}  {obs.get('reason', '')}")
    lines += ["", "recent transitions:"]
    for t in agent.views.transitions()[-6:]:
        at = time.strftime("%H:%M:%S", time.localtime(t["at"] or 0))
        lines.append(f"  {at}  {t['origin']:<12} {t['from']} -> {t['to']}  ({t['reason']})")
    lines += ["", "Ctrl-C stops the demo."]
    return "\n".join(lines)


async def _screen(agent: Agent, url: str) -> None:
    tty = sys.stdout.isatty()
    last = 0.0  # the time of the last transition printed (the kept list is bounded)
    while True:
        if tty:
            sys.stdout.write("\033[H\033[2J" + _render(agent, url, tty) + "\n")
            sys.stdout.flush()
        else:  # a pipe or a log: print transitions as they happen
            for t in agent.views.transitions():
                if t["at"] > last:
                    print(f"{t['origin']}: {t['from']} -> {t['to']} ({t['reason']})", flush=True)
                    last = t["at"]
        await asyncio.sleep(1.0)


async def _demo(api_port: int) -> None:
    farm = await start_farm(behaviours=BEHAVIOURS, count=0)
    with tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as data_dir:
        cfg = parse_config(demo_config(farm, api_port, data_dir), "<demo>")
        agent = Agent(cfg)
        url = f"http://127.0.0.1:{api_port}"
        print(f"edge-agent demo: origin farm on 127.0.0.1:{farm.port}; status page {url}/")
        screen = asyncio.create_task(_screen(agent, url))
        try:
            await agent.run()
        finally:
            screen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await screen
            await farm.close()
    print("edge-agent demo: stopped cleanly")


def run_demo(api_port: int = 8080) -> int:
    from agent.shell.systemd import setup_logging

    # root can build a real fleet in network namespaces (harness/edge_harness/fleet_demo.py);
    # EDGE_AGENT_DEMO=single keeps the one-node loopback demo even then
    if os.environ.get("EDGE_AGENT_DEMO") != "single":
        from edge_harness.fleet import missing_prerequisites

        if not missing_prerequisites():
            from edge_harness.fleet_demo import run_fleet_demo

            return run_fleet_demo()
    if not _port_free(api_port):
        new = _free_port()
        print(f"edge-agent demo: port {api_port} is taken; using {new}")
        api_port = new
    setup_logging("error")  # the screen shows transitions; errors still surface
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(api_port))
    return 0
