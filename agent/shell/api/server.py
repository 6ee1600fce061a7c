"""Serving the API: bind the listen address, and keep trying while it is taken.

A taken port is a standing fault the node reports (health ``failing``, red LED) while it
retries, not a crash: systemd would restart a crashed agent into the same taken port
forever, and the LEDs would say nothing useful. Nor does it hold the node hostage: the
node joins the cluster, checks its origins and sends READY meanwhile, and the API comes
up when the port frees, without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from agent.domain import Health
from agent.shell.api.app import Backend, build_app
from agent.shell.config import HostPort
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


class ApiServer:
    """The aiohttp runner for ``backend`` on ``listen``; ``url`` once it listens."""

    def __init__(
        self, backend: Backend, listen: HostPort, health: Health, refresh: Callable[[], None]
    ) -> None:
        self.backend = backend
        self.listen = listen
        self.health = health
        self.refresh = refresh  # show a changed fault on the LEDs at once
        self.url: str | None = None
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
        try:
            site = web.TCPSite(self._runner, listen.host, listen.port, reuse_address=True)
            await site.start()
        except OSError as e:
            reason = f"cannot listen on {listen}: {e.strerror or e}"
            if "api" not in self.health.failing:
                log.error("API %s; retrying every %.0fs", reason, RETRY)
            self.health.fail("api", reason)
            self.refresh()
            return False
        self.health.clear("api")
        bound = self._runner.addresses
        port = bound[0][1] if bound else listen.port
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        self.url = f"http://{host}:{port}"
        log.info("API listening on %s", self.url)
        self.refresh()
        return True

    async def run(self) -> None:
        """Until the API listens: try again every RETRY seconds (a supervised task)."""
        while self.url is None:
            await asyncio.sleep(RETRY)
            await self.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
