"""Debian's real HAProxy in front of origins on loopback, routing by the verdict of a
3-node cluster of real `edge-agent run` processes through agent-check (issue 18).

One setup per module (``lb`` fixture), because a cluster, four origins, a HAProxy and a
load generator take seconds to bring up: the tests in a module run in file order, and
each starts by waiting until every origin is in service and receiving traffic.

- Origins: edge_harness.port_origins, four on ports of their own, served with the load
  generator from one event loop in a thread (LoopThread). Each counts its traffic (any
  path but /check/...) with arrival times, and can answer 500 or close connections.
- The fleet: three AgentProcess nodes (tests/conftest.py) joined through node 0, each
  with ``[lb] agent_listen``; the origins are PUT through node 0's API with a short
  interval, fall and rise (INTERVAL, FALL, RISE).
- HAProxy: the backend is what `edge-agent haproxy-config` prints (so real HAProxy
  parses the command's output), every server asking node 0's agent port every
  AGENT_INTER, inside a config with a frontend and a stats socket (edge_harness.haproxy).
  Its regular check is `check` alone: a TCP connect, which an origin answering 500 or
  closing connections still passes; only the agent's verdict takes a server out.
- The load: an aiohttp client sending RATE requests a second through the frontend.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from edge_harness import haproxy
from edge_harness.haproxy import HAProxy
from edge_harness.port_origins import PortOrigins
from tests.conftest import ROOT, AgentProcess, free_port, require, wait_for

T = TypeVar("T")

NODES = 3
ORIGINS = 4
INTERVAL = 1.0  # the origins' check interval, s
JITTER = 1.1  # checks are jittered by up to +10% (docs/config.md)
FALL = 2
RISE = 2  # = FALL, so recovery has the same bound as failure
AGENT_INTER = 1.0  # HAProxy's agent-inter, s
BACKEND = "origins"
RATE = 40.0  # requests a second through HAProxy's frontend, round-robin over 4 origins

#: the issue's bound from a failure (or recovery) to HAProxy routing by it: the owners
#: see `fall` failures in a row (interval x fall, jittered), the node HAProxy asks learns
#: it, HAProxy asks within agent-inter; 2 s for replication, scheduling and in-flight
#: requests
BOUND = INTERVAL * JITTER * max(FALL, RISE) + AGENT_INTER + 2.0


def require_haproxy() -> None:
    require(haproxy.available(), "Debian package haproxy (/usr/sbin/haproxy)")


class LoopThread:
    """An asyncio event loop in a daemon thread, for what the synchronous tests keep
    running in the background (the origins and the load generator)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Load:
    """Requests at a steady rate through HAProxy's frontend (at most 50 in flight)."""

    url: str
    rate: float
    sent: int = 0
    answered: Counter[int] = field(default_factory=Counter)  # by status
    errors: int = 0
    last_error: str = ""

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(50)
        pending: set[asyncio.Task[None]] = set()
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            start = loop.time()
            while not stop.is_set():
                due = start + self.sent / self.rate
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                    continue
                if limit.locked():  # 50 in flight: HAProxy is stuck, skip this one
                    self.sent += 1
                    self.errors += 1
                    self.last_error = "50 requests in flight"
                    continue
                self.sent += 1
                task = asyncio.create_task(self._one(session, limit))
                pending.add(task)
                task.add_done_callback(pending.discard)
            for task in list(pending):
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _one(self, session: aiohttp.ClientSession, limit: asyncio.Semaphore) -> None:
        async with limit:
            try:
                async with session.get(self.url) as r:
                    await r.read()
                    self.answered[r.status] += 1
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                self.errors += 1
                self.last_error = repr(e)


class Lb:
    """The running setup: origins, nodes, HAProxy and the load (module docstring)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = LoopThread()
        self.origins = self.loop.run(PortOrigins().start(ORIGINS))
        self.nodes: list[AgentProcess] = []
        self.agent_ports = [free_port() for _ in range(NODES)]
        self.hap: HAProxy | None = None
        self.port = 0  # HAProxy's frontend
        self.load: Load | None = None
        self._stop: asyncio.Event | None = None
        self._load_done: Any = None

    # --- bring-up ----------------------------------------------------------------------

    def start_cluster(self) -> None:
        for i in range(NODES):
            join = "" if i == 0 else f'join = ["127.0.0.1:{self.nodes[0].gossip_port}"]'
            config = f'[lb]\nagent_listen = "127.0.0.1:{self.agent_ports[i]}"\n'
            node = AgentProcess(self.tmp / f"n{i}", config, name=f"n{i}", cluster=join)
            self.nodes.append(node.start())
        for node in self.nodes:
            node.wait_notify("READY=1", 30)
        wait_for(
            lambda: all(
                n.get("/v1/health")[1]["cluster"]["peers"] == NODES - 1 for n in self.nodes
            ),
            30,
            "every node sees the other two",
        )
        for i in range(ORIGINS):
            spec = {
                "url": self.origins.url(i, "/check/fleet"),
                "address": self.origins.address(i),
                "interval": f"{INTERVAL:g}s",
                "fall": FALL,
                "rise": RISE,
            }
            status, body = self.nodes[0].call("PUT", f"/v1/origins/{self.id(i)}", spec)
            assert status == 201, body
        for i in range(ORIGINS):
            wait_for(
                lambda i=i: all(self.verdict(n, i) == "up" for n in self.nodes),
                30,
                f"{self.id(i)} up on every node",
            )

    def backend(self) -> str:
        """The backend, as `edge-agent haproxy-config` prints it from node 0."""
        node = self.nodes[0]
        argv = [sys.executable, "-m", "agent.shell.cli", "haproxy-config", "--api", node.url]
        argv += ["--backend", BACKEND, "--agent-addr", "127.0.0.1"]
        argv += ["--agent-port", str(self.agent_ports[0]), "--inter", f"{AGENT_INTER:g}s"]
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, cwd=ROOT, env=node.env
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("    server ") == ORIGINS, out.stdout
        return out.stdout

    def start_haproxy(self) -> None:
        self.port = free_port()
        sections = (
            f"frontend www\n    bind 127.0.0.1:{self.port}\n    default_backend {BACKEND}\n\n"
            # the regular check: a TCP connect every 2 s (no `option httpchk`), which an
            # origin answering 500 or closing connections passes
            + self.backend().replace(
                f"backend {BACKEND}\n",
                f"backend {BACKEND}\n    balance roundrobin\n"
                "    default-server inter 2s fall 3 rise 2\n",
            )
        )
        self.hap = HAProxy(self.tmp / "haproxy", sections).start()

    def start_load(self) -> None:
        self.load = Load(f"http://127.0.0.1:{self.port}/traffic", RATE)
        self._stop = self.loop.run(new_event())
        self._load_done = asyncio.run_coroutine_threadsafe(
            self.load.run(self._stop), self.loop.loop
        )

    # --- reading -----------------------------------------------------------------------

    @staticmethod
    def id(i: int) -> str:
        return f"o{i}"

    def verdict(self, node: AgentProcess, i: int) -> str | None:
        status, body = node.get(f"/v1/origins/{self.id(i)}")
        return body["verdict"] if status == 200 else None

    def statuses(self) -> dict[str, str]:
        assert self.hap is not None
        return self.hap.statuses(BACKEND)

    def diagnostics(self) -> str:
        assert self.hap is not None and self.load is not None
        counts = ", ".join(
            f"{self.id(o.index)}: {len(o.traffic)} requests, last at "
            f"{(time.monotonic() - o.traffic[-1]) if o.traffic else float('nan'):.1f} s ago, "
            f"mode {o.mode}"
            for o in self.origins.origins
        )
        load = self.load
        return (
            f"origins: {counts}\nload: sent {load.sent}, answered {dict(load.answered)}, "
            f"errors {load.errors} ({load.last_error})\n{self.hap.diagnostics(BACKEND)}"
        )

    def wait_all_serving(self, since: float, what: str, timeout: float = 30.0) -> None:
        """Every origin UP in HAProxy and receiving traffic after ``since``."""

        def serving() -> bool:
            assert self.hap is not None
            self.hap.check_alive()
            st = self.statuses()
            return all(st.get(self.id(i)) == "UP" for i in range(ORIGINS)) and all(
                o.traffic_since(since) >= 3 for o in self.origins.origins
            )

        try:
            wait_for(serving, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnostics()}") from None

    # --- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        if self._stop is not None:
            self.loop.loop.call_soon_threadsafe(self._stop.set)
            try:
                self._load_done.result(15)
            except Exception as e:  # the load's failure must not hide the teardown
                print(f"load generator: {e!r}")
        if self.hap is not None:
            self.hap.stop()
        for node in self.nodes:
            node.close()
        self.loop.run(self.origins.close())
        self.loop.close()


async def new_event() -> asyncio.Event:
    """An Event made on the loop that waits on it (LoopThread.run(new_event()))."""
    return asyncio.Event()


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lb]:
    require_haproxy()
    setup = Lb(tmp_path_factory.mktemp("lb"))
    try:
        setup.start_cluster()
        setup.start_haproxy()
        setup.start_load()
        yield setup
    finally:
        if setup.hap is not None:
            print(setup.hap.tail(40))
        for node in setup.nodes:
            tail = node.stderr()[-3000:]
            if tail:
                print(f"----- {node.name} stderr tail -----\n{tail}")
        setup.close()
