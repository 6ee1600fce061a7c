"""HTTP, HTTPS and TCP probes against real servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket

import aiohttp
import pytest

from agent.checks.probes import (
    BODY_LIMIT,
    describe_codes,
    describe_error,
    make_session,
    probe_http,
    probe_tcp,
)

from .conftest import CERT_DAYS, OriginServer, SelfSigned, make_spec


async def test_http_up(origin: OriginServer, session: aiohttp.ClientSession) -> None:
    r = await probe_http(session, make_spec(origin.url("/ok")))
    assert r.ok and r.status_code == 200 and r.reason == "status 200"
    assert 0 < r.latency < 5 and r.tls_expiry_days is None
    assert origin.seen[-1].method == "GET" and origin.seen[-1].path == "/ok"


async def test_http_latency_and_at_come_from_the_given_clock(
    origin: OriginServer, session: aiohttp.ClientSession
) -> None:
    ticks = iter([100.0, 100.25])
    r = await probe_http(session, make_spec(origin.url("/ok")), clock=lambda: next(ticks))
    assert (r.latency, r.at) == (0.25, 100.25)


async def test_http_connection_refused(closed_port: int, session: aiohttp.ClientSession) -> None:
    r = await probe_http(session, make_spec(f"http://127.0.0.1:{closed_port}/"))
    assert not r.ok and r.reason == "connection refused" and r.status_code is None
    # by name too (the DNS path through aiohttp's resolver)
    r = await probe_http(session, make_spec(f"http://localhost:{closed_port}/"))
    assert r.reason == "connection refused"


async def test_http_500(origin: OriginServer, session: aiohttp.ClientSession) -> None:
    r = await probe_http(session, make_spec(origin.url("/status/500")))
    assert not r.ok and r.status_code == 500
    assert r.reason == "status 500 (expected 200)"


async def test_http_wrong_status(origin: OriginServer, session: aiohttp.ClientSession) -> None:
    r = await probe_http(session, make_spec(origin.url("/ok"), expect_status=(204,)))
    assert not r.ok and r.reason == "status 200 (expected 204)"
    codes = tuple(range(200, 300))
    r = await probe_http(session, make_spec(origin.url("/status/404"), expect_status=codes))
    assert not r.ok and r.reason == "status 404 (expected 2xx)"
    r = await probe_http(session, make_spec(origin.url("/status/204"), expect_status=codes))
    assert r.ok


async def test_http_redirects_are_not_followed(
    origin: OriginServer, session: aiohttp.ClientSession
) -> None:
    r = await probe_http(session, make_spec(origin.url("/status/302")))
    assert r.status_code == 302 and r.reason == "status 302 (expected 200)"


async def test_http_timeout(origin: OriginServer, session: aiohttp.ClientSession) -> None:
    r = await probe_http(session, make_spec(origin.url("/hang"), timeout=0.2))
    assert not r.ok and r.reason == "timeout after 200ms"
    assert 0.2 <= r.latency < 2
    # the server saw the client give up, and its handler was cancelled
    await origin.wait_for(lambda: origin.hang_cancelled == 1)
    assert origin.hanging == 0


async def test_http_body_match_and_mismatch(
    origin: OriginServer, session: aiohttp.ClientSession
) -> None:
    good = await probe_http(session, make_spec(origin.url("/text/all-ok-here"), expect_body="ok"))
    assert good.ok
    bad = await probe_http(session, make_spec(origin.url("/text/fine"), expect_body="ok"))
    assert not bad.ok and bad.status_code == 200
    assert bad.reason == "body does not contain 'ok'"


async def test_http_status_is_checked_before_body(
    origin: OriginServer, session: aiohttp.ClientSession
) -> None:
    r = await probe_http(session, make_spec(origin.url("/status/503"), expect_body="nope"))
    assert r.reason == "status 503 (expected 200)"


async def test_http_huge_body_is_read_only_up_to_the_limit(
    origin: OriginServer, session: aiohttp.ClientSession
) -> None:
    r = await probe_http(session, make_spec(origin.url("/stream"), expect_body="xxxx"))
    assert r.ok
    r = await probe_http(session, make_spec(origin.url("/stream"), expect_body="y"))
    assert not r.ok and r.reason == "body does not contain 'y'"
    # The server would stream 4 GiB; the probes gave up after their 64 KiB each.
    assert origin.streamed < 1 << 30
    assert BODY_LIMIT == 64 * 1024


async def test_http_head(origin: OriginServer, session: aiohttp.ClientSession) -> None:
    r = await probe_http(session, make_spec(origin.url("/ok"), method="HEAD"))
    assert r.ok and r.status_code == 200
    assert origin.seen[-1].method == "HEAD"


async def test_http_custom_headers_and_user_agent_arrive(origin: OriginServer) -> None:
    async with make_session(concurrency=4, user_agent="edge-agent/test") as s:
        spec = make_spec(origin.url("/ok"), headers=(("Host", "shop.example"), ("X-Check", "1")))
        r = await probe_http(s, spec)
    assert r.ok
    headers = origin.seen[-1].headers
    assert headers["X-Check"] == "1"
    assert headers["Host"] == "shop.example"
    assert headers["User-Agent"] == "edge-agent/test"


async def test_http_keepalive_connection_is_reused(
    origin: OriginServer, session: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        assert (await probe_http(session, make_spec(origin.url("/ok")))).ok
    peers = {s.peer for s in origin.seen}
    assert len(peers) == 1  # one TCP connection served all three


async def test_http_dns_failure(session: aiohttp.ClientSession) -> None:
    r = await probe_http(session, make_spec("http://no-such-host.invalid/", timeout=5.0))
    assert not r.ok and r.reason.startswith("DNS: "), r.reason


# --- TLS -----------------------------------------------------------------------------------


async def test_https_self_signed_fails_verification(
    tls_origin: OriginServer, session: aiohttp.ClientSession
) -> None:
    r = await probe_http(session, make_spec(tls_origin.url("/ok")))
    assert not r.ok
    assert r.reason == "TLS: certificate verify failed: self-signed certificate"


async def test_https_verify_off_passes_and_reports_expiry(
    tls_origin: OriginServer, session: aiohttp.ClientSession
) -> None:
    r = await probe_http(session, make_spec(tls_origin.url("/ok"), tls_verify=False))
    assert r.ok and r.status_code == 200
    assert r.tls_expiry_days == pytest.approx(CERT_DAYS, abs=0.01)


async def test_https_expiry_counts_from_the_wall_clock(
    tls_origin: OriginServer, self_signed: SelfSigned, session: aiohttp.ClientSession
) -> None:
    ten_days_before = (self_signed.not_after - dt.timedelta(days=10)).timestamp()
    spec = make_spec(tls_origin.url("/ok"), tls_verify=False)
    r = await probe_http(session, spec, wall=lambda: ten_days_before)
    assert r.tls_expiry_days == pytest.approx(10.0, abs=1e-6)
    # the metric's form: the notAfter itself, in seconds, whatever the clock says
    assert r.tls_not_after == self_signed.not_after.timestamp()


async def test_https_verified_with_a_trusted_certificate(
    tls_origin: OriginServer, self_signed: SelfSigned
) -> None:
    connector = aiohttp.TCPConnector(ssl=self_signed.client_context())
    async with aiohttp.ClientSession(connector=connector) as s:
        r = await probe_http(s, make_spec(tls_origin.url("/ok")))
        assert r.ok and r.tls_expiry_days == pytest.approx(CERT_DAYS, abs=0.01)
        r = await probe_http(s, make_spec(tls_origin.url("/ok").replace("127.0.0.1", "localhost")))
        assert r.ok, r.reason  # the SAN covers localhost too


async def test_https_probe_of_a_plain_http_port(
    origin: OriginServer, session: aiohttp.ClientSession
) -> None:
    r = await probe_http(session, make_spec(origin.url("/ok").replace("http:", "https:")))
    assert not r.ok and r.reason.startswith("TLS: "), r.reason


# --- TCP -----------------------------------------------------------------------------------


async def test_tcp_up(origin: OriginServer) -> None:
    r = await probe_tcp(make_spec(f"tcp://127.0.0.1:{origin.port}"))
    assert r.ok and r.reason == "connected" and r.latency >= 0


async def test_tcp_refused(closed_port: int) -> None:
    r = await probe_tcp(make_spec(f"tcp://127.0.0.1:{closed_port}"))
    assert not r.ok and r.reason == "connection refused"
    r = await probe_tcp(make_spec(f"tcp://localhost:{closed_port}"))
    assert not r.ok and r.reason == "connection refused"


async def test_tcp_dns_failure() -> None:
    r = await probe_tcp(make_spec("tcp://no-such-host.invalid:80", timeout=5.0))
    assert not r.ok and r.reason.startswith("DNS: "), r.reason


async def test_tcp_timeout_on_a_full_backlog() -> None:
    """A listener that never accepts, with its accept queue full, drops new SYNs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):  # the kernel queues backlog + 1; one more to be sure
                f = socket.socket()
                f.setblocking(False)
                fillers.append(f)
                with contextlib.suppress(BlockingIOError):
                    f.connect(("127.0.0.1", port))
            r = await probe_tcp(make_spec(f"tcp://127.0.0.1:{port}", timeout=0.3))
        finally:
            for f in fillers:
                f.close()
    assert not r.ok and r.reason == "timeout after 300ms"


def test_joined_per_address_refusals_read_as_connection_refused() -> None:
    """asyncio joins the failures of every address of a name into one errno-less OSError."""
    spec = make_spec("tcp://localhost:1")
    joined = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), "
        "[Errno 111] Connect call failed ('127.0.0.1', 1)"
    )
    assert describe_error(joined, spec) == "connection refused"
    mixed = OSError(
        "Multiple exceptions: [Errno 101] Network is unreachable, "
        "[Errno 111] Connect call failed ('127.0.0.1', 1)"
    )
    assert describe_error(mixed, spec).startswith("connect: multiple exceptions")


def test_describe_codes() -> None:
    assert describe_codes((200,)) == "200"
    assert describe_codes(tuple(range(200, 300))) == "2xx"
    assert describe_codes((200, 204, 301, 302)) == "200, 204, 301-302"
    assert describe_codes((*range(200, 300), 404)) == "2xx, 404"
