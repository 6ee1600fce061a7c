"""The probes: one HTTP(S) request or one TCP connect, turned into a ProbeResult.

Probes never raise for anything the network or the origin can do: every such
failure becomes a result with a short, specific reason an operator can act on
("connection refused", "status 500 (expected 200)", "TLS: certificate verify
failed: self-signed certificate"). Anything else that escapes is a bug, and the
engine turns it into an "internal error" result.

All HTTP probes share one aiohttp.ClientSession so that keep-alive connections,
the DNS cache and the connection limit are shared too: at thousands of checks a
second, a new TCP (and TLS) handshake per check would cost more than the check.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
import ssl
import time
from collections.abc import Callable
from functools import lru_cache

import aiohttp

from agent.domain import OriginSpec, format_duration

from .certificate import not_after
from .state import ProbeResult

#: Most body bytes read per probe. A health endpoint that streams a huge body must not
#: cost us its whole body; beyond this the connection is dropped instead of reused.
BODY_LIMIT = 64 * 1024
#: Longest reason kept: reasons are gossiped and shown on a dashboard, not logs.
REASON_MAX = 200

Clock = Callable[[], float]


def make_session(
    *,
    concurrency: int,
    user_agent: str = "edge-agent",
    keepalive_timeout: float = 15.0,
    ttl_dns_cache: int = 300,
) -> aiohttp.ClientSession:
    """The shared session for HTTP probes, sized to the engine's concurrency bound.

    The connector's limit equals the engine's bound, so the engine (not aiohttp's
    pool) is where probes wait, and a probe's timeout never includes queueing.
    Cookies are ignored: one origin's cookies must not change another's check.
    Call from inside a running event loop.
    """
    connector = aiohttp.TCPConnector(
        limit=concurrency,
        limit_per_host=0,
        keepalive_timeout=keepalive_timeout,
        ttl_dns_cache=ttl_dns_cache,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": user_agent},
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=True,
        raise_for_status=False,
    )


async def probe(session: aiohttp.ClientSession, spec: OriginSpec, *, clock: Clock) -> ProbeResult:
    """Run the probe ``spec.kind`` calls for."""
    if spec.kind == "tcp":
        return await probe_tcp(spec, clock=clock)
    return await probe_http(session, spec, clock=clock)


async def probe_http(
    session: aiohttp.ClientSession,
    spec: OriginSpec,
    *,
    clock: Clock | None = None,
    wall: Clock = time.time,
    body_limit: int = BODY_LIMIT,
) -> ProbeResult:
    """One HTTP(S) request per ``spec``; latency covers the request and the bounded body read.

    Redirects are not followed (a 301 is status 301, as in HAProxy). For https the
    certificate's notAfter and days to expiry come from the connection's peer certificate
    (DER, so it works with verification off too); ``wall`` is the wall clock those days
    are counted from.
    """
    if clock is None:
        clock = asyncio.get_running_loop().time
    start = clock()
    status: int | None = None
    tls_days: float | None = None
    not_after: float | None = None
    try:
        async with session.request(
            spec.method,
            spec.url,
            headers=spec.headers or None,
            timeout=_client_timeout(spec.timeout),
            ssl=spec.tls_verify,
            allow_redirects=False,
        ) as resp:
            status = resp.status
            if spec.tls:
                not_after = _tls_not_after(resp)
                if not_after is not None:
                    tls_days = (not_after - wall()) / 86400.0
            body = await _read_bounded(resp, body_limit)
    except Exception as exc:
        if not isinstance(exc, (aiohttp.ClientError, OSError, TimeoutError)):
            raise  # a bug: the engine reports it as an internal error
        end = clock()
        reason = describe_error(exc, spec)
        return ProbeResult(False, end - start, reason, end, status, tls_days, not_after)
    end = clock()
    latency = end - start
    if status not in _code_set(spec.expect_status):
        reason = f"status {status} (expected {describe_codes(spec.expect_status)})"
        return ProbeResult(False, latency, reason, end, status, tls_days, not_after)
    if spec.expect_body and spec.expect_body.encode() not in body:
        reason = _clip(f"body does not contain {_clip(spec.expect_body, 40)!r}")
        return ProbeResult(False, latency, reason, end, status, tls_days, not_after)
    return ProbeResult(True, latency, f"status {status}", end, status, tls_days, not_after)


async def probe_tcp(spec: OriginSpec, *, clock: Clock | None = None) -> ProbeResult:
    """Connect to spec.host:spec.port within the timeout, then close at once."""
    if clock is None:
        clock = asyncio.get_running_loop().time
    start = clock()
    try:
        async with asyncio.timeout(spec.timeout):
            _, writer = await asyncio.open_connection(spec.host, spec.port)
    except (OSError, TimeoutError) as exc:
        end = clock()
        return ProbeResult(False, end - start, describe_error(exc, spec), end)
    end = clock()
    writer.close()
    # A reset while closing says nothing about whether the port accepts connections.
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, end - start, "connected", end)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` body bytes. A body read to its end leaves the connection reusable;
    a longer one closes the connection rather than drain an unbounded stream."""
    content = resp.content
    chunks: list[bytes] = []
    size = 0
    while size < limit and not content.at_eof():
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if not content.at_eof():
        resp.close()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _tls_not_after(resp: aiohttp.ClientResponse) -> float | None:
    """The peer certificate's notAfter (POSIX seconds), from the connection the response
    came on.

    aiohttp hands the connection back to its pool as soon as the body has arrived, often
    before the caller sees the response, so ``resp.connection`` is usually None already;
    the response's protocol (private, but stable since aiohttp 3.0, and pinned by the
    tests) still holds the transport.
    """
    conn = resp.connection
    protocol = conn.protocol if conn is not None else getattr(resp, "_protocol", None)
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return None
    sslobj = transport.get_extra_info("ssl_object")
    if not isinstance(sslobj, (ssl.SSLObject, ssl.SSLSocket)):
        return None
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return None
    return _not_after(der)


@lru_cache(maxsize=4096)
def _not_after(der: bytes) -> float | None:
    """The certificate's notAfter as a POSIX timestamp; cached, as kept-alive connections
    present the same certificate check after check."""
    return not_after(der)


@lru_cache(maxsize=256)
def _client_timeout(total: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total)


@lru_cache(maxsize=256)
def _code_set(codes: tuple[int, ...]) -> frozenset[int]:
    return frozenset(codes)


@lru_cache(maxsize=256)
def describe_codes(codes: tuple[int, ...]) -> str:
    """(200,) -> "200"; 200..299 -> "2xx"; (200, 204, 301, 302) -> "200, 204, 301-302"."""
    parts: list[str] = []
    items = sorted(set(codes))
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        lo, hi = items[i], items[j]
        if lo % 100 == 0 and hi == lo + 99:
            parts.append(f"{lo // 100}xx")
        elif lo == hi:
            parts.append(str(lo))
        else:
            parts.append(f"{lo}-{hi}")
        i = j + 1
    return ", ".join(parts)


_SSL_NOISE = re.compile(r"^\[SSL: [A-Z0-9_]+\] |\s*\(_ssl\.c:\d+\)$")
_ERRNOS = re.compile(r"\[Errno (\d+)\]")


def describe_error(exc: BaseException, spec: OriginSpec) -> str:
    """A short reason for a failed probe, naming the layer that failed (DNS, TLS, connect)."""
    return _clip(_describe(exc, spec))


def _describe(exc: BaseException, spec: OriginSpec) -> str:
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts subclass it too
        return f"timeout after {format_duration(spec.timeout)}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_err = exc.certificate_error
        if isinstance(cert_err, ssl.SSLCertVerificationError) and cert_err.verify_message:
            return f"TLS: certificate verify failed: {cert_err.verify_message}"
        return f"TLS: {_ssl_text(cert_err)}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS: {_ssl_text(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS: {_os_text(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connect_text(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"bad body: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"bad response: {exc.message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {_ssl_text(exc)}"
    if isinstance(exc, OSError) and isinstance(exc, aiohttp.ClientError):
        return f"connection: {_os_text(exc)}"
    if isinstance(exc, socket.gaierror):
        return f"DNS: {_os_text(exc)}"
    if isinstance(exc, OSError):
        return _connect_text(exc)
    return f"{type(exc).__name__}: {exc}"


def _connect_text(err: OSError) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if err.errno is None:
        # asyncio joins per-address failures (e.g. ::1 and 127.0.0.1) into one OSError.
        codes = {int(c) for c in _ERRNOS.findall(str(err))}
        if codes == {errno.ECONNREFUSED}:
            return "connection refused"
    return f"connect: {_os_text(err)}"


def _os_text(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text[:1].lower() + text[1:]


def _ssl_text(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    text = _SSL_NOISE.sub("", str(err)) if str(err) else (reason or type(err).__name__)
    return text


def _clip(text: str, limit: int = REASON_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
