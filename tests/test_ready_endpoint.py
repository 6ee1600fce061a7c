"""A real `edge-agent run` with [lb] agent_listen: the agent-check port and
GET /v1/origins/{id}/ready answer from the fleet's verdict by one policy, follow it as
an origin fails and recovers, and count what they answer in /metrics."""

from __future__ import annotations

import socket
from collections.abc import Callable

from tests.conftest import AgentProcess, OriginServer, free_port, http_get, wait_for
from tests.test_runtime import origin_toml, verdicts


def agent_check(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def test_ready_and_agent_check_follow_the_verdict(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    lb_port = free_port()
    origin_server.down.add("b")
    config = origin_toml(origin_server, "a", "b") + (
        f'[lb]\nagent_listen = "127.0.0.1:{lb_port}"\nread_timeout = "1s"\n'
    )
    a = agent_process(config).start()
    a.wait_notify("READY=1")
    wait_for(lambda: verdicts(a) == {"a": "up", "b": "down"}, 20, "a up, b down")

    assert http_get(a.url + "/v1/origins/a/ready") == (200, "up\n")
    status, body = http_get(a.url + "/v1/origins/b/ready")
    assert status == 503 and body == "down: test-node: status 500 (expected 200)\n", body
    status, err = http_get(a.url + "/v1/origins/nope/ready")
    assert status == 404 and err == {"error": "no origin with id 'nope'", "status": 404}
    # the origin's own view is where it was, and the new path takes GET only
    assert a.get("/v1/origins/a")[1]["verdict"] == "up"
    assert a.call("PUT", "/v1/origins/a/ready", {})[0] == 405

    assert agent_check(lb_port, b"a\n") == b"up\n"
    assert agent_check(lb_port, b"b\n") == b"down #test-node: status 500 (expected 200)\n"
    assert agent_check(lb_port, b"nope\n") == b"up #no such origin in the fleet (fail open)\n"

    # a fails, b recovers: both surfaces follow
    origin_server.down = {"a"}
    wait_for(lambda: verdicts(a) == {"a": "down", "b": "up"}, 20, "a down, b up")
    assert http_get(a.url + "/v1/origins/a/ready")[0] == 503
    assert http_get(a.url + "/v1/origins/b/ready") == (200, "up\n")
    assert agent_check(lb_port, b"a\n").startswith(b"down #")
    assert agent_check(lb_port, b"b\n") == b"up\n"

    _, metrics = a.get("/metrics")
    for line in (
        'edge_agent_lb_answers_total{answer="up",surface="ready"} 2.0',
        'edge_agent_lb_answers_total{answer="down",surface="ready"} 2.0',
        'edge_agent_lb_answers_total{answer="up",surface="agent-check"} 3.0',
        'edge_agent_lb_answers_total{answer="down",surface="agent-check"} 2.0',
        'edge_agent_unknown_origin_lookups_total{surface="agent-check"} 1.0',
        "edge_agent_lb_agent_connections 0.0",
        "edge_agent_lb_agent_refused_total 0.0",
        "edge_agent_peer_spec_unknown_keys_total 0.0",
    ):
        assert line in metrics, line
    assert a.stop() == 0
    assert "Traceback" not in a.stderr()
    # stopped cleanly: the port is closed with the node
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", lb_port)) != 0


def test_a_taken_agent_check_port_is_a_fault_naming_the_address(
    agent_process: Callable[..., AgentProcess],
) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    lb_port = blocker.getsockname()[1]
    a = agent_process(f'[lb]\nagent_listen = "127.0.0.1:{lb_port}"\n')
    try:
        a.start()
        a.wait_notify("READY=1")  # the node goes on without its agent-check port
        want = f"cannot listen on 127.0.0.1:{lb_port}: Address already in use"
        wait_for(lambda: any(want in r for r in a.get("/v1/health")[1]["reasons"]), 10, "the fault")
    finally:
        blocker.close()
    wait_for(lambda: agent_check(lb_port, b"x\n").startswith(b"up #"), 15, "listening once free")
    assert a.get("/v1/health")[1]["status"] == "ok"
    assert a.stop() == 0


def test_no_agent_check_port_unless_configured(
    agent_process: Callable[..., AgentProcess],
) -> None:
    a = agent_process().start()
    a.wait_notify("READY=1")
    _, metrics = a.get("/metrics")
    assert "edge_agent_lb_agent_connections 0.0" in metrics
    assert "agent-check listening" not in a.stderr()
    assert a.stop() == 0


def test_running_out_of_file_descriptors_does_not_stop_the_port(
    agent_process: Callable[..., AgentProcess],
) -> None:
    """An agent allowed 256 open files, and 600 connections at once to its agent-check
    port: accepting fails with EMFILE; the port pauses accepting, says so once and counts
    it, the node stays up, and once the connections are gone the port answers again."""
    import resource
    import subprocess
    import sys

    lb_port = free_port()
    a = agent_process(
        f'[lb]\nagent_listen = "127.0.0.1:{lb_port}"\nmax_connections = 5000\n'
        'read_timeout = "30s"\n'
    )

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    a.proc = subprocess.Popen(
        [sys.executable, "-m", "agent.shell.cli", "run", "--config", str(a.config)],
        env=a.env,
        stdout=subprocess.DEVNULL,
        stderr=a.stderr_path.open("wb"),
        cwd=a.tmp,
        preexec_fn=few_files,
    )
    a.wait_notify("READY=1")
    clients = []
    try:
        for _ in range(600):  # the kernel completes them (backlog 1024), the agent cannot
            clients.append(socket.create_connection(("127.0.0.1", lb_port), timeout=5))
        want = "agent-check: cannot accept connections (Too many open files)"
        wait_for(lambda: want in a.stderr(), 20, "EMFILE met and logged")
        a.check_alive()  # (its API cannot accept either meanwhile: max_connections, far
        # below the 65,536 files the agent asks for at start, is what prevents this)
    finally:
        for c in clients:
            c.close()
    wait_for(lambda: agent_check(lb_port, b"x\n").startswith(b"up #"), 30, "answering again")
    assert a.get("/v1/health")[0] == 200
    wait_for(
        lambda: "edge_agent_lb_agent_connections 0.0" in a.get("/metrics")[1], 40, "all closed"
    )
    assert "edge_agent_lb_agent_accept_paused_total 0.0" not in a.get("/metrics")[1]
    # paused a second at a time, said once a minute: not a traceback per failed accept
    assert a.stderr().count("Too many open files") == 1, a.stderr()[-3000:]
    assert "Traceback" not in a.stderr()
    assert a.stop() == 0


def test_ten_thousand_connections_do_not_disturb_the_node(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    """10,000 connections to the agent-check port, held open and silent, against
    max_connections = 100: the node refuses the extra ones at once, closes the silent ones
    after read_timeout, answers its API and its origins' checks all along, and answers
    agent-checks again as soon as a slot is free."""
    lb_port = free_port()
    a = agent_process(
        origin_toml(origin_server, "a")
        + f'[lb]\nagent_listen = "127.0.0.1:{lb_port}"\nmax_connections = 100\n'
        'read_timeout = "1s"\n'
    ).start()
    a.wait_notify("READY=1")
    wait_for(lambda: verdicts(a) == {"a": "up"}, 20, "a up")
    held = []
    try:
        for _ in range(10_000):
            held.append(socket.create_connection(("127.0.0.1", lb_port), timeout=10))
        # meanwhile the node goes on: its API answers, its checks run and spread
        assert http_get(a.url + "/v1/origins/a/ready") == (200, "up\n")
        origin_server.down.add("a")
        wait_for(lambda: verdicts(a) == {"a": "down"}, 20, "a down while flooded")

        def counted() -> tuple[float, float]:
            """(refused, timed out) so far."""
            found = {"refused": 0.0, "timeout": 0.0}
            for line in a.get("/metrics")[1].splitlines():
                if line.startswith("edge_agent_lb_agent_refused_total "):
                    found["refused"] = float(line.split()[1])
                elif line.startswith('edge_agent_bad_input_total{kind="timeout",'):
                    found["timeout"] = float(line.split()[1])
            return found["refused"], found["timeout"]

        # each one either refused at once, or held (100 at most) until read_timeout
        wait_for(lambda: sum(counted()) == 10_000, 30, "every connection refused or timed out")
        refused, timed_out = counted()
        # 100 held per read_timeout while the flood lasts: nearly all refused at once
        assert refused > 5 * timed_out and timed_out >= 100, (refused, timed_out)
        # the slots are free again: the port answers
        assert agent_check(lb_port, b"a\n").startswith(b"down #")
    finally:
        for s in held:
            s.close()
    _, metrics = a.get("/metrics")
    assert "edge_agent_lb_agent_connections 0.0" in metrics
    a.check_alive()
    assert a.stop() == 0
    assert "Traceback" not in a.stderr()
