"""Clients that misbehave at the connection level: slow-loris headers and bodies, and
1,000 connections at once. The agent serves others meanwhile, answers the slow body with
408 (agent/shell/api/app.py BODY_TIMEOUT), does not crash, and gives its sockets back."""

from __future__ import annotations

import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from agent.shell.api.app import BODY_TIMEOUT
from tests.bad_input.support import bad_input_count
from tests.conftest import FLEET_TOKEN, AgentProcess, wait_for

CONNECTIONS = 1000


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path_factory.mktemp("connections"), "")
    a.start()
    try:
        a.wait_notify("READY=1", 20)
        wait_for(lambda: a.get("/v1/health")[0] == 200, 10, "the API")
        yield a
    finally:
        a.close()


def healthy(a: AgentProcess) -> bool:
    a.check_alive()
    status, body = a.get("/v1/health")
    return status == 200 and body["status"] in ("ok", "degraded")


def open_fds(a: AgentProcess) -> int:
    assert a.proc is not None
    return len(os.listdir(f"/proc/{a.proc.pid}/fd"))


def connect(a: AgentProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return s


def test_slow_headers_do_not_hold_up_others(agent: AgentProcess) -> None:
    """A client sending its request line a byte at a time: others are answered meanwhile."""
    request = b"GET /v1/health HTTP/1.1\r\nHost: slow\r\nX-Pad: " + b"z" * 200
    slow = connect(agent)
    pace = threading.Event()
    try:
        for i, byte in enumerate(request[:60]):
            slow.send(bytes([byte]))
            if i % 10 == 0:
                assert healthy(agent), "the API answers while a client dribbles its headers"
            pace.wait(0.01)  # pacing the dribble, not waiting for anything
        deadline = time.monotonic() + 5
        answered = 0
        while time.monotonic() < deadline and answered < 20:
            assert healthy(agent)
            answered += 1
        assert answered == 20
    finally:
        slow.close()


def test_slow_body_is_answered_408(agent: AgentProcess) -> None:
    """Headers in full, then a body that never finishes: 408 after BODY_TIMEOUT seconds,
    the connection given back, and others served all along."""
    before = bad_input_count(agent.get("/metrics")[1], "api", "408")
    slow = connect(agent)
    slow.settimeout(0.05)
    slow.sendall(
        b"PUT /v1/origins/slow HTTP/1.1\r\nHost: slow\r\n"
        + f"Authorization: Bearer {FLEET_TOKEN}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"
    )
    answer = b""
    start = time.monotonic()
    deadline = start + BODY_TIMEOUT + 10
    try:
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            assert time.monotonic() < deadline, f"no answer to a slow body: {answer!r}"
            try:
                chunk = slow.recv(4096)
                if not chunk:
                    break
                answer += chunk
            except TimeoutError:
                slow.send(b" ")  # one more byte of body: the dribble goes on
                assert healthy(agent), "the API answers while a client dribbles a body"
    finally:
        slow.close()
    took = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert f"the body did not arrive within {BODY_TIMEOUT:g} s".encode() in answer
    assert BODY_TIMEOUT - 1 <= took <= BODY_TIMEOUT + 5, took
    assert bad_input_count(agent.get("/metrics")[1], "api", "408") == before + 1
    assert agent.get("/v1/origins/slow")[0] == 404, "nothing half-declared"


def test_a_thousand_connections_at_once(agent: AgentProcess) -> None:
    """1,000 sockets opened at once, half of them silent, half with half a request; then
    each asks for /v1/health. The agent answers each (or closes it), keeps answering
    others, does not crash, and gives back its file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CONNECTIONS + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * CONNECTIONS), hard))
    baseline = open_fds(agent)
    socks: list[socket.socket] = []
    try:
        for _ in range(CONNECTIONS):
            socks.append(connect(agent))
        for s in socks[::2]:
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: many\r\n")
        assert healthy(agent), "the API answers with 1,000 connections open"
        for i, s in enumerate(socks):
            start = b"" if i % 2 == 0 else b"GET /v1/health HTTP/1.1\r\nHost: many\r\n"
            s.sendall(start + b"Connection: close\r\n\r\n")
        answers = read_all(socks, deadline=time.monotonic() + 30)
    finally:
        for s in socks:
            s.close()
    ok = sum(1 for a in answers if a.startswith(b"HTTP/1.1 200"))
    closed = sum(1 for a in answers if a == b"")
    assert ok + closed == CONNECTIONS, [a[:40] for a in answers if a and b" 200" not in a[:15]]
    assert ok >= CONNECTIONS // 2, f"only {ok} of {CONNECTIONS} answered"
    assert healthy(agent)
    wait_for(lambda: open_fds(agent) <= baseline + 5, 10, "the agent's sockets given back")
    assert "Traceback" not in agent.stderr()


def read_all(socks: list[socket.socket], deadline: float) -> list[bytes]:
    """Each socket's whole answer (until the agent closes it); b"" when closed unanswered."""
    answers = {id(s): b"" for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    try:
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    answers[id(s)] += chunk
                else:
                    sel.unregister(s)
        assert not sel.get_map(), f"{len(sel.get_map())} connections neither answered nor closed"
    finally:
        sel.close()
    return [answers[id(s)] for s in socks]
