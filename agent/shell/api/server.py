"""Serving the API: bind the listen address, and keep trying while it is taken.

A taken port is a standing fault the node reports (health ``failing``, red LED) while it
retries, not a crash: systemd would restart a crashed agent into the same taken port
forever, and the LEDs would say nothing useful. Nor does it hold the node hostage: the
node joins the cluster, checks its origins and sends READY meanwhile, and the API comes
up when the port frees, without a restart.

The same app is also served on a Unix socket ([api] socket, config.api_socket_path), on its
own: when the TCP port is taken the socket still answers, so `edge-agent status` on the
Pi shows the node's health, this fault included. A socket that cannot be bound is its own
``degraded`` fault, "api-socket"; the TCP API and the node go on.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from agent.domain import Health, HostPort
from agent.shell.api.app import Backend, build_app
from agent.shell.metrics import Metrics

log = logging.getLogger(__name__)

RETRY = 2.0
#: seconds a connection may stay idle, or take to send its request's headers: aiohttp's
#: default is an hour, which lets slow or silent clients hold sockets (slow loris)
KEEPALIVE = 30.0


class RequestParseErrors(logging.Filter):
    """aiohttp logs a request it cannot parse (a 10 KB request line, bytes that are not
    HTTP) with a traceback at ERROR, once per request: a client's mistake, not ours. It is
    counted in edge_agent_bad_input_total{source="api",kind="400"} and logged at debug."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self.metrics.bad_input.labels("api", str(exc.code or 400)).inc()
        log.debug("a request that is not HTTP this agent takes: %s", exc.message)
        return False


SOCKET_MODE = 0o660  # the agent's user and group (operators in group edge-agent)


class ApiServer:
    """The aiohttp runner for ``backend`` on ``listen``; ``url`` once it listens."""

    def __init__(
        self,
        backend: Backend,
        listen: HostPort,
        health: Health,
        refresh: Callable[[], None],
        socket_path: Path | None = None,
    ) -> None:
        self.backend = backend
        self.listen = listen
        self.health = health
        self.refresh = refresh  # show a changed fault on the LEDs at once
        self.socket_path = socket_path  # the local API socket; None: none
        self.url: str | None = None
        self.socket: Path | None = None  # once the socket is served
        self._runner: web.AppRunner | None = None
        server_log = logging.getLogger("aiohttp.server")
        for f in list(server_log.filters):  # one per process: the latest agent's metrics
            if isinstance(f, RequestParseErrors):
                server_log.removeFilter(f)
        server_log.addFilter(RequestParseErrors(backend.metrics))

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    async def start(self) -> bool:
        """Bind once; False when the address is taken (health failing, the reason said
        once), and ``run`` keeps trying: the node goes on without its API meanwhile."""
        listen = self.listen
        if self._runner is None:
            runner = web.AppRunner(
                build_app(self.backend),
                access_log=None,
                handle_signals=False,
                keepalive_timeout=KEEPALIVE,
            )
            await runner.setup()
            self._runner = runner
            if self.socket_path is not None:
                await self._start_socket(runner, self.socket_path)
        try:
            site = web.TCPSite(self._runner, listen.host, listen.port, reuse_address=True)
            await site.start()
        except OSError as e:
            # asyncio's text repeats the address; the errno's own words say it all
            reason = f"cannot listen on {listen}: {os.strerror(e.errno) if e.errno else e}"
            if "api" not in self.health.failing:
                log.error("API %s; retrying every %.0fs", reason, RETRY)
            self.health.fail("api", reason)
            self.refresh()
            return False
        self.health.clear("api")
        bound = [a for a in self._runner.addresses if isinstance(a, tuple)]  # not the socket
        port = bound[0][1] if bound else listen.port
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        self.url = f"http://{host}:{port}"
        log.info("API listening on %s", self.url)
        self.refresh()
        return True

    async def _start_socket(self, runner: web.AppRunner, path: Path) -> None:
        """Serve the app on ``path`` too (tried once, at start); a failure is the degraded
        fault "api-socket", said once in the journal."""
        try:
            if path.parent.exists() and not path.parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, str(path.parent))  # not "File exists"
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_socket():
                if _answers(path):
                    raise OSError(f"another process serves {path}")
                path.unlink()  # left by an agent that did not stop cleanly
            await web.UnixSite(runner, str(path)).start()
            os.chmod(path, SOCKET_MODE)
        except (OSError, ValueError) as e:
            code = getattr(e, "errno", None)
            reason = f"cannot serve the API on {path}: {os.strerror(code) if code else e}"
            log.error("%s; the TCP API and the node go on", reason)
            self.health.degrade("api-socket", reason)
            self.refresh()
            return
        self.socket = path
        log.info("API listening on %s", path)

    async def run(self) -> None:
        """Until the API listens: try again every RETRY seconds (a supervised task)."""
        while self.url is None:
            await asyncio.sleep(RETRY)
            await self.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.socket is not None:
            if self.socket.is_socket():
                self.socket.unlink(missing_ok=True)
            self.socket = None


def _answers(path: Path) -> bool:
    """Whether a process accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True
