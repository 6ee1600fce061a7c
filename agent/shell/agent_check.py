"""HAProxy's agent-check, served on ``[lb] agent_listen`` (docs/load-balancers.md).

HAProxy connects every ``agent-inter``, sends ``agent-send`` (the origin id and a
newline), reads one line and closes. The answer comes from the fleet's verdict through
agent/node/lb_answer.py; this is only the TCP around it, written as an asyncio Protocol
(no task per connection), because the port must stay cheap under abuse:

- at most ``max_connections`` are open; one more is closed at once, unread (HAProxy then
  keeps the server's state: an agent it cannot talk to is not a server failure);
- a request is at most MAX_REQUEST bytes (a 1 MB line is answered after 256, then the
  connection is closed); a client that sends nothing is closed after ``read_timeout``;
- bytes that are not an origin id are answered ``up`` with a description (fail open);
- every such case is counted in edge_agent_bad_input_total{source="agent-check"}.

Read-only: it never changes state, and it tells a client no more than an origin's
verdict and reason, so it is safe to expose on the LAN. When the process runs out of
file descriptors, asyncio's accept loop logs it and pauses accepting for a second, then
goes on: the loop never sees the error.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from agent.domain import Health, HostPort
from agent.node import MAX_REQUEST, LbStatus, agent_reply
from agent.shell.metrics import Metrics

log = logging.getLogger(__name__)

RETRY = 2.0  # seconds between tries to listen while the address is taken
BACKLOG = 1024  # a burst of HAProxy instances connecting at once waits in the kernel

Lookup = Callable[[str], LbStatus | None]


class AgentCheckServer:
    """The agent-check listener; ``start`` binds it, ``run`` retries while it is taken."""

    def __init__(
        self,
        listen: HostPort,
        lookup: Lookup,
        metrics: Metrics,
        health: Health,
        *,
        max_connections: int = 1000,
        read_timeout: float = 2.0,
        refresh: Callable[[], None] = lambda: None,
    ) -> None:
        self.listen = listen
        self.lookup = lookup
        self.metrics = metrics
        self.health = health
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.refresh = refresh
        self.open = 0
        self._conns: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        # the children bound once: a labelled child's lookup costs more than the answer
        answers = metrics.lb_answers
        self.answered = {w: answers.labels("agent-check", w) for w in ("up", "down")}

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> bool:
        """Listen; False when the address cannot be bound (health failing "lb", the
        reason naming the address, said once), and ``run`` keeps trying."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self),
                self.listen.host,
                self.listen.port,
                reuse_address=True,
                backlog=BACKLOG,
            )
        except OSError as e:
            reason = (
                f"agent-check ([lb] agent_listen) cannot listen on {self.listen}: "
                f"{os.strerror(e.errno) if e.errno else e}"
            )
            if "lb" not in self.health.failing:
                log.error("%s; retrying every %.0fs", reason, RETRY)
            self.health.fail("lb", reason)
            self.refresh()
            return False
        self.health.clear("lb")
        self.refresh()
        log.info("agent-check listening on %s (port %d)", self.listen, self.port)
        return True

    async def run(self) -> None:
        """Until it listens: try again every RETRY seconds (a supervised task)."""
        while self._server is None:
            await asyncio.sleep(RETRY)
            await self.start()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn in list(self._conns):
            conn.abort()
        await server.wait_closed()

    # --- called by the connections -------------------------------------------------------

    def bad(self, kind: str) -> None:
        self.metrics.bad_input.labels("agent-check", kind).inc()


class _Connection(asyncio.Protocol):
    """One agent-check exchange: read the request line, answer once, close."""

    __slots__ = ("buf", "done", "server", "timer", "transport")

    def __init__(self, server: AgentCheckServer) -> None:
        self.server = server
        self.buf = b""
        self.done = False
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        s = self.server
        if s.open >= s.max_connections:
            self.done = True
            s.metrics.lb_refused.inc()
            transport.abort()  # unread: the limit holds however fast they come
            return
        self.transport = transport
        s.open += 1
        s._conns.add(self)
        s.metrics.lb_connections.set(s.open)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(s.read_timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.buf += data[: MAX_REQUEST - len(self.buf)]
        self._answer(eof=False)

    def eof_received(self) -> bool:
        if not self.done:
            self._answer(eof=True)
        if not self.done:  # closed without a request: nothing to answer
            self._close("no-request")
        return True  # keep the transport open until the answer is written

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        s = self.server
        if self.transport is not None:
            self.transport = None
            self.done = True
            s.open -= 1
            s._conns.discard(self)
            s.metrics.lb_connections.set(s.open)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _answer(self, *, eof: bool) -> None:
        s = self.server
        try:
            reply = agent_reply(self.buf, eof, s.lookup)
        except Exception:  # a bug in the lookup must not leave the client hanging
            log.exception("agent-check: answering %r failed", self.buf[:64])
            self._close("internal-error")
            return
        if reply is None:
            return
        s.answered[reply.answer].inc()
        if reply.bad is not None:
            s.bad(reply.bad)
        if self.transport is not None:
            self.transport.write(reply.line)
        self._close(None)

    def _timed_out(self) -> None:
        self.timer = None
        if not self.done:
            self._close("timeout")

    def _close(self, bad: str | None) -> None:
        self.done = True
        if bad is not None:
            self.server.bad(bad)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()  # after the answer is written
