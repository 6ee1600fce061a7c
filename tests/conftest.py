"""Shared test helpers: free ports, deadline waits, and a real `edge-agent run` process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"

T = TypeVar("T")


# The image boot test needs a built image and minutes of QEMU: opt-in, and then a
# missing image fails (EDGE_AGENT_IMAGE_TEST=1 or `make image-test`; docs/image.md).
collect_ignore = [] if os.environ.get("EDGE_AGENT_IMAGE_TEST") == "1" else ["image"]


#: The write token AgentProcess gives every test node, as a fleet shares one token
FLEET_TOKEN = "test-fleet-token"


def require(condition: bool, what: str) -> None:
    """Skip when a prerequisite is missing; under CI=true a missing prerequisite fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing prerequisite under CI: {what}")
    pytest.skip(f"missing prerequisite: {what}")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free on loopback now, never one this process handed out before: the
    kernel may give the same ephemeral port to two binds in a row (CI once gave an
    agent's API and gossip the same port, and the node never became ready)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for(fn: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll fn until it returns something truthy, or fail after the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # the condition may raise while the system comes up
            last_exc = e
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


async def async_wait_for(
    fn: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
            status = r.status
            ctype = r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        body, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
    if "json" in ctype:
        return status, json.loads(body)
    return status, body.decode()


class AgentProcess:
    """`edge-agent run` as a child process with its own config, API port and NOTIFY_SOCKET."""

    def __init__(
        self,
        tmp: Path,
        config_text: str,
        env: dict[str, str] | None = None,
        name: str = "test-node",
        cluster: str = "",
        token: str | None = FLEET_TOKEN,
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.name = name
        # the fleet write token (None: a node without one, which refuses fleet-wide writes)
        self.token = token
        self.token_file = tmp / "fleet-token"
        if token is not None:
            self.token_file.write_text(token + "\n")
        self.cluster = cluster  # extra lines for the [cluster] table (join = [...], ...)
        self.port = free_port()
        self.gossip_port = free_port()
        self.config = tmp / "agent.toml"
        self.notify_path = Path(tempfile.mkdtemp(prefix="ea-notify-")) / "sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.1)
        self.messages: list[str] = []
        # Read the socket all the time, as PID 1 does: sd_notify blocks (holding the GIL,
        # in systemd-python) once ten datagrams wait unread, which would freeze the agent
        self._lock = threading.Lock()
        self._reading = True
        self._reader = threading.Thread(target=self._read_notify, daemon=True)
        self._reader.start()
        self.write_config(config_text)
        self.stderr_path = tmp / "stderr.log"
        # this checkout's agent package, not the one the venv was installed from
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.env = {
            **os.environ,
            "PYTHONPATH": pythonpath,
            "NOTIFY_SOCKET": str(self.notify_path),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, text: str) -> None:
        header = (
            f'[node]\nname = "{self.name}"\ndata_dir = "{self.tmp / "data"}"\n'
            f'[api]\nlisten = "127.0.0.1:{self.port}"\n'
            + (f'token_file = "{self.token_file}"\n' if self.token is not None else "")
            + f'[cluster]\ndiscover = false\nbind = "127.0.0.1:{self.gossip_port}"\n'
            f"{self.cluster}\n"
        )
        self.config.write_text(header + text)

    def start(self) -> AgentProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.shell.cli", "run", "--config", str(self.config)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_path.open("wb"),
            cwd=self.tmp,
        )
        return self

    def _read_notify(self) -> None:
        while self._reading:
            try:
                data = self.notify.recv(4096)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return  # closed
            with self._lock:
                self.messages.extend(data.decode().splitlines())

    def recv_notify(self) -> list[str]:
        """Every line the agent has sent to its notify socket so far."""
        with self._lock:
            return list(self.messages)

    def wait_notify(self, line: str, timeout: float = 15.0) -> None:
        def seen() -> bool:
            self.check_alive()
            return line in self.recv_notify()

        wait_for(seen, timeout, f"sd_notify {line!r}")

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.stderr()}")

    def get(self, path: str) -> tuple[int, Any]:
        return http_get(self.url + path)

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header a write to this node needs (none without a token)."""
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """A request (JSON body) with this node's write token unless ``headers`` are given."""
        data = None if body is None else json.dumps(body).encode()
        hdrs = dict(self.auth if headers is None else headers)
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reading = False
        self._reader.join(1.0)
        self.notify.close()


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    made: list[AgentProcess] = []

    def make(
        config_text: str = "",
        env: dict[str, str] | None = None,
        name: str = "test-node",
        cluster: str = "",
        token: str | None = FLEET_TOKEN,
    ) -> AgentProcess:
        a = AgentProcess(tmp_path / f"agent{len(made)}", config_text, env, name, cluster, token)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


class ThreadedApp:
    """A real aiohttp application on 127.0.0.1:<free port>, served from its own thread
    and event loop, so synchronous tests can run it beside the processes they start."""

    def __init__(self, app: Any) -> None:
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        self.port = 0

        async def serve() -> None:
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        assert self.port

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class OriginServer(ThreadedApp):
    """A real aiohttp server on 127.0.0.1, in its own thread, whose answers a test controls.

    GET /o/{name} answers 200 "ok" while the name is up, 500 while it is down.
    """

    def __init__(self) -> None:
        from aiohttp import web

        self.down: set[str] = set()
        self.hits: dict[str, int] = {}

        async def handle(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.hits[name] = self.hits.get(name, 0) + 1
            if name in self.down:
                return web.Response(status=500, text="down")
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/o/{name}", handle)
        super().__init__(app)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/o/{name}"


@pytest.fixture
def origin_server() -> Iterator[OriginServer]:
    srv = OriginServer()
    yield srv
    srv.close()
