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
- every such case is counted in edge_agent_bad_input_total{source="agent-check"}; an id
  the fleet does not know, well formed, is not bad input and is counted in
  edge_agent_unknown_origin_lookups_total{surface="agent-check"}.

Read-only: it never changes state, and it tells a client no more than an origin's
verdict and reason, so it is safe to expose on the LAN.

It accepts connections itself rather than through ``loop.create_server``: asyncio's accept
loop (3.11), on EMFILE, logs a traceback and schedules a retry once per pending
connection, up to the backlog (1,024 tracebacks a second while a flood lasts). Here,
running out of file descriptors pauses accepting for a second, is logged once a minute
and counted (edge_agent_lb_agent_accept_paused_total), and a connection over
``max_connections`` is closed straight after accept(), before any transport exists.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable

from agent.domain import Health, HostPort
from agent.node import MAX_REQUEST, LbStatus, agent_reply
from agent.shell.metrics import Metrics

log = logging.getLogger(__name__)

RETRY = 2.0  # seconds between tries to listen while the address is taken
BACKLOG = 1024  # a burst of HAProxy instances connecting at once waits in the kernel
ACCEPT_BATCH = 128  # connections accepted per wake-up at most: the loop's other work goes on
PAUSE = 1.0  # seconds accepting stops when the process is out of file descriptors
PAUSE_LOG_EVERY = 60.0  # seconds between log lines about it
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

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
        self.open = 0  # accepted and not yet closed
        self._conns: set[_Connection] = set()
        self._socks: list[socket.socket] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._paused: set[asyncio.TimerHandle] = set()
        self._paused_logged = -PAUSE_LOG_EVERY
        # the children bound once: a labelled child's lookup costs more than the answer
        answers = metrics.lb_answers
        self.answered = {w: answers.labels("agent-check", w) for w in ("up", "down")}

    @property
    def port(self) -> int:
        return int(self._socks[0].getsockname()[1]) if self._socks else 0

    async def start(self) -> bool:
        """Listen; False when the address cannot be bound (health failing "lb", the
        reason naming the address, said once), and ``run`` keeps trying."""
        try:
            socks = await _listen(self.listen)
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
        self._socks = socks
        loop = asyncio.get_running_loop()
        for sock in socks:
            loop.add_reader(sock.fileno(), self._accept, sock)
        self.health.clear("lb")
        self.refresh()
        log.info("agent-check listening on %s (port %d)", self.listen, self.port)
        return True

    async def run(self) -> None:
        """Until it listens: try again every RETRY seconds (a supervised task)."""
        while not self._socks:
            await asyncio.sleep(RETRY)
            await self.start()

    async def stop(self) -> None:
        socks, self._socks = self._socks, []
        loop = asyncio.get_running_loop()
        for sock in socks:
            loop.remove_reader(sock.fileno())
            sock.close()
        for handle in self._paused:
            handle.cancel()
        self._paused.clear()
        for conn in list(self._conns):
            conn.abort()
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        await asyncio.sleep(0)  # the aborted transports' connection_lost

    # --- accepting -----------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno in OUT_OF_RESOURCES:
                    self._pause(sock, e)
                else:  # not expected from a listening socket; never out of the loop
                    log.warning("agent-check: accept failed: %s", e)
                return
            if self.open >= self.max_connections:
                self.metrics.lb_refused.inc()
                conn.close()  # unread: the limit holds however fast they come
                continue
            self.open += 1  # the slot is taken now; connection_lost gives it back
            self.metrics.lb_connections.set(self.open)
            conn.setblocking(False)
            task = loop.create_task(self._serve(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _serve(self, conn: socket.socket) -> None:
        """Wrap an accepted socket in a transport with its protocol."""
        loop = asyncio.get_running_loop()
        proto = _Connection(self)
        try:
            await loop.connect_accepted_socket(lambda: proto, sock=conn)
        except BaseException:
            if proto.transport is None and not proto.done:  # never made: the slot is ours
                conn.close()
                self._release()
            raise

    def _pause(self, sock: socket.socket, e: OSError) -> None:
        """Out of file descriptors (or memory): stop accepting for PAUSE seconds; the
        kernel keeps the connections waiting meanwhile (up to the backlog)."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        self.metrics.lb_accept_paused.inc()
        now = time.monotonic()
        if now - self._paused_logged >= PAUSE_LOG_EVERY:
            self._paused_logged = now
            log.warning(
                "agent-check: cannot accept connections (%s): pausing %.0f s at a time "
                "(said once a minute; edge_agent_lb_agent_accept_paused_total counts them)",
                os.strerror(e.errno) if e.errno else e,
                PAUSE,
            )

        def resume() -> None:
            self._paused.discard(handle)
            if sock in self._socks:
                loop.add_reader(sock.fileno(), self._accept, sock)

        handle = loop.call_later(PAUSE, resume)
        self._paused.add(handle)

    def _release(self) -> None:
        self.open -= 1
        self.metrics.lb_connections.set(self.open)

    def bad(self, kind: str) -> None:
        if kind == "unknown-origin":  # a well-formed id the fleet does not know: a lookup
            self.metrics.unknown_origin_lookups.labels("agent-check").inc()
        else:
            self.metrics.bad_input.labels("agent-check", kind).inc()


async def _listen(address: HostPort) -> list[socket.socket]:
    """Listening sockets for every address the host resolves to (as create_server binds
    them); OSError when any cannot be bound."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        address.host or None,
        address.port,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )
    socks: list[socket.socket] = []
    port = address.port
    try:
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((sockaddr[0], port, *sockaddr[2:]))
            port = port or sock.getsockname()[1]  # port 0: every family on the first's port
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


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
        self.transport = transport
        s._conns.add(self)
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
            s._conns.discard(self)
            s._release()

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
