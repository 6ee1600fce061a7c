"""Real origins for the check tests: aiohttp servers on 127.0.0.1, scripted per test.

Tests synchronise on what the server has seen (an asyncio.Condition notified on every
request), never on sleeps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.checks.probes import make_session
from agent.domain.origin import OriginSpec

WAIT = 10.0  # deadline for any condition a test waits on


def make_spec(url: str, id: str = "o", **kw: Any) -> OriginSpec:
    """An OriginSpec for ``url`` with kind/host/port filled in as the config parser would."""
    parts = urlsplit(url)
    kind = "tcp" if parts.scheme == "tcp" else "http"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return OriginSpec(id=id, url=url, kind=kind, host=parts.hostname or "", port=port, **kw)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    peer: Any


@dataclass
class OriginServer:
    """A scriptable origin. Routes:

    /ok                 200 "ok"
    /status/{code}      that status, body "status {code}"
    /text/{word}        200, body word
    /script/{name}      next status from ``script[name]`` (200 once exhausted)
    /hang               waits until teardown (or until the client goes away)
    /gated              counts concurrent requests; each waits for ``open_gate()``
    /stream             200 with an endless body
    """

    ssl_context: ssl.SSLContext | None = None
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    seen: list[Seen] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)  # per script name
    in_flight: int = 0
    max_in_flight: int = 0
    hanging: int = 0
    hang_cancelled: int = 0
    streamed: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/ok", self._ok)
        app.router.add_route("*", "/status/{code}", self._status)
        app.router.add_route("*", "/text/{word}", self._text)
        app.router.add_route("*", "/script/{name}", self._script)
        app.router.add_route("*", "/hang", self._hang)
        app.router.add_route("*", "/gated", self._gated)
        app.router.add_route("*", "/stream", self._stream)
        self.runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.release.set()
        self.gate.set()
        if self.runner is not None:
            await self.runner.cleanup()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait (with a deadline) until ``predicate`` holds after some request event."""
        async with self.cond:
            await asyncio.wait_for(self.cond.wait_for(predicate), timeout)

    def open_gate(self) -> None:
        """Let every request now waiting in /gated finish; later ones wait for the next."""
        old, self.gate = self.gate, asyncio.Event()
        old.set()

    async def _notify(self) -> None:
        async with self.cond:
            self.cond.notify_all()

    async def _record(self, request: web.Request) -> None:
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.headers),
                request.transport.get_extra_info("peername") if request.transport else None,
            )
        )
        await self._notify()

    async def _ok(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="ok")

    async def _status(self, request: web.Request) -> web.Response:
        await self._record(request)
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"status {code}")

    async def _text(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text=request.match_info["word"])

    async def _script(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        steps = self.script.get(name, [])
        code = steps.pop(0) if steps else 200
        self.served[name] = self.served.get(name, 0) + 1
        await self._record(request)
        return web.Response(status=code, text=f"status {code}")

    async def _hang(self, request: web.Request) -> web.Response:
        self.hanging += 1
        await self._record(request)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.hang_cancelled += 1
            await asyncio.shield(self._notify())
            raise
        finally:
            self.hanging -= 1
        return web.Response(text="late")

    async def _gated(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        gate = self.gate
        await self._record(request)
        try:
            await gate.wait()
        finally:
            self.in_flight -= 1
        return web.Response(text="ok")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"x" * 65536
        try:
            while self.streamed < 1 << 32:  # far more than any probe may read
                await resp.write(chunk)
                self.streamed += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client went away, as it should
        return resp


@pytest.fixture
async def origin() -> AsyncIterator[OriginServer]:
    srv = OriginServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = make_session(concurrency=16)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def closed_port() -> int:
    """A port that was just bound and released on 127.0.0.1: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- TLS -----------------------------------------------------------------------------------

CERT_DAYS = 30


@dataclass(frozen=True)
class SelfSigned:
    cert: Path
    key: Path
    not_after: dt.datetime

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this certificate."""
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    """A self-signed certificate for 127.0.0.1 and localhost, valid for CERT_DAYS days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=CERT_DAYS)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return SelfSigned(cert_path, key_path, not_after.replace(microsecond=0))


@pytest.fixture
async def tls_origin(self_signed: SelfSigned) -> AsyncIterator[OriginServer]:
    srv = OriginServer(ssl_context=self_signed.server_context())
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()
