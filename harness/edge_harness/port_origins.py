"""Origins on a port each, as a load balancer sees them (tests/lb, bench/lb.py).

A load balancer's servers are addresses, so each origin here listens on a port of its
own (the farm, edge_harness.farm, serves many origins on one port, told apart by path,
which a load balancer cannot do). Each origin counts what it receives, told apart by
path: a path under ``/check`` is a health check (``/check/fleet`` for the edge-agent
fleet's, ``/check/lb`` for a load balancer's own ``option httpchk``, or any other
name), anything else is traffic, whose arrival times are kept. Each can be switched:

==========  ===========================================================================
``up``      200 ``ok``
``500``     500 ``failing`` to every request (a TCP connect still succeeds)
``close``   closes the connection at the first request, answering nothing
==========  ===========================================================================

The HTTP is the least HAProxy and aiohttp's client need, written as an asyncio
Protocol so that one process serves a thousand checks a second: GET or HEAD without a
body, keep-alive (HTTP/1.1 unless ``Connection: close``; HTTP/1.0 closes unless it asks
for keep-alive), pipelined requests answered in order.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from dataclasses import dataclass, field

MODES = ("up", "500", "close")
CHECK_PREFIX = "/check"
MAX_HEAD = 16 * 1024  # a request head longer than this closes the connection

_ANSWERS = {
    "up": (b"200 OK", b"ok"),
    "500": (b"500 Internal Server Error", b"failing"),
}


@dataclass(eq=False)
class PortOrigin:
    """One origin: its port, its mode, and what it received."""

    index: int
    port: int = 0
    mode: str = "up"
    #: monotonic arrival time of every traffic request (a path not under /check)
    traffic: list[float] = field(default_factory=list)
    #: health checks received, by path
    checks: Counter[str] = field(default_factory=Counter)
    connections: int = 0  # TCP connections accepted (a TCP check is one, and nothing more)

    def set(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode

    def traffic_since(self, t: float) -> int:
        """Traffic requests that arrived at or after monotonic time ``t``."""
        times = self.traffic
        n = 0
        for i in range(len(times) - 1, -1, -1):
            if times[i] < t:
                break
            n += 1
        return n

    def last_traffic(self) -> float | None:
        return self.traffic[-1] if self.traffic else None


class _Conn(asyncio.Protocol):
    def __init__(self, origin: PortOrigin, open_: set[_Conn]) -> None:
        self.origin = origin
        self.open = open_
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.origin.connections += 1
        self.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.open.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            self._answer(head)

    def _answer(self, head: bytes) -> None:
        assert self.transport is not None
        o = self.origin
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self.transport.close()
            return
        method, target, version = parts
        path = target.decode("latin-1").split("?", 1)[0]
        if path.startswith(CHECK_PREFIX):
            o.checks[path] += 1
        else:
            o.traffic.append(time.monotonic())
        if o.mode == "close":
            self.transport.close()
            return
        conn = b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"connection":
                conn = value.strip().lower()
        keep = conn != b"close" if version == b"HTTP/1.1" else conn == b"keep-alive"
        status, body = _ANSWERS[o.mode]
        out = [
            b"HTTP/1.1 ",
            status,
            b"\r\nContent-Type: text/plain\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\n" if keep else b"\r\nConnection: close\r\n",
            b"\r\n",
            b"" if method == b"HEAD" else body,
        ]
        self.transport.write(b"".join(out))
        if not keep:
            self.transport.close()


class PortOrigins:
    """``count`` origins on ``host``, each on a free port; ``close()`` stops them."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.origins: list[PortOrigin] = []
        self._servers: list[asyncio.Server] = []
        self._open: set[_Conn] = set()  # closed with the servers (keep-alive clients)

    async def start(self, count: int) -> PortOrigins:
        loop = asyncio.get_running_loop()
        try:
            for i in range(count):
                o = PortOrigin(i)
                server = await loop.create_server(
                    functools.partial(_Conn, o, self._open),
                    self.host,
                    0,
                    backlog=1024,
                    reuse_address=True,
                )
                self._servers.append(server)
                o.port = int(server.sockets[0].getsockname()[1])
                self.origins.append(o)
        except BaseException:
            await self.close()
            raise
        return self

    def __getitem__(self, i: int) -> PortOrigin:
        return self.origins[i]

    def __len__(self) -> int:
        return len(self.origins)

    def address(self, i: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.origins[i].port}"

    def url(self, i: int, path: str = "/check/fleet") -> str:
        return f"http://{self.address(i)}{path}"

    def checks(self, path: str | None = None) -> int:
        """Health checks received by every origin so far (of ``path``, or all)."""
        if path is None:
            return sum(sum(o.checks.values()) for o in self.origins)
        return sum(o.checks[path] for o in self.origins)

    def connections(self) -> int:
        return sum(o.connections for o in self.origins)

    async def close(self) -> None:
        servers, self._servers = self._servers, []
        for s in servers:
            s.close()
        for c in list(self._open):
            if c.transport is not None:
                c.transport.abort()
        for s in servers:
            await s.wait_closed()
