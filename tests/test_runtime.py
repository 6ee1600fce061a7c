"""`edge-agent run` as a real process: READY over a real NOTIFY_SOCKET, the API,
SIGHUP reload, a clean SIGTERM, and surviving a taken API port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.shell.config import CONFIG_ENV
from tests.conftest import ROOT, AgentProcess, OriginServer, wait_for

BAD_SHUTDOWN_SIGNS = ("Task was destroyed", "Unclosed", "Traceback", "never awaited")


def origin_toml(srv: OriginServer, *names: str, interval: str = "200ms") -> str:
    return "".join(
        f'[[origin]]\nid = "{n}"\nurl = "{srv.url(n)}"\ninterval = "{interval}"\n'
        f'timeout = "{interval}"\nrise = 1\nfall = 1\n'
        for n in names
    )


def verdicts(agent: AgentProcess) -> dict[str, str]:
    status, body = agent.get("/v1/origins")
    assert status == 200
    return {o["id"]: o["verdict"] for o in body}


def test_example_config_starts_ready_and_healthy(
    agent_process: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    """The documented example runs as is, apart from the API port and data dir."""
    example = (ROOT / "examples" / "agent.toml").read_text()
    a = agent_process()
    text = example.replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{a.port}"')
    text = text.replace('data_dir = "/var/lib/edge-agent"', f'data_dir = "{tmp_path / "d"}"')
    text = text.replace('bind = "0.0.0.0:7946"', f'bind = "127.0.0.1:{a.gossip_port}"')
    # the example's origins are example.com names: keep the test on loopback
    text = text.replace("https://shop.example.com/healthz", f"http://127.0.0.1:{a.port}/v1/health")
    text = text.replace("tcp://db.example.com:5432", f"tcp://127.0.0.1:{a.port}")
    a.config.write_text(text)
    a.start()
    a.wait_notify("READY=1")
    status, body = a.get("/v1/health")
    assert status == 200 and body["status"] == "ok", body
    wait_for(lambda: verdicts(a) == {"shop": "up", "db": "up"}, 20, "both origins up")
    # the STATUS line follows within a refresh gap (agent/shell/surfaces.py REFRESH_GAP)
    wait_for(
        lambda: any(m.startswith("STATUS=2 origins: 2 up") for m in a.recv_notify()),
        5,
        "STATUS line",
    )
    assert a.stop() == 0


def test_ready_only_after_api_listens_and_status_summary(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    origin_server.down.add("b")
    a = agent_process(origin_toml(origin_server, "a", "b")).start()
    a.wait_notify("READY=1")
    # READY means the API answers now, not eventually
    status, body = a.get("/v1/health")
    assert status == 200 and body["node"] == "test-node"
    wait_for(lambda: verdicts(a) == {"a": "up", "b": "down"}, 10, "a up, b down")
    wait_for(
        lambda: any(m.startswith("STATUS=2 origins: 1 up, 1 down") for m in a.recv_notify()),
        10,
        "STATUS line",
    )
    status, one = a.get("/v1/origins/b")
    assert status == 200 and one["verdict"] == "down"
    assert one["observations"][0]["reason"].startswith("status 500")
    status, err = a.get("/v1/origins/nope")
    assert status == 404 and "nope" in err["error"]
    status, text = a.get("/metrics")
    assert status == 200
    assert 'edge_agent_origins{verdict="down"} 1.0' in text
    assert "edge_agent_checks_total" in text and "process_resident_memory_bytes" in text
    assert "edge_agent_check_latency_seconds_bucket" in text
    assert a.stop() == 0


def test_sighup_reload_adds_and_removes(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    a = agent_process(origin_toml(origin_server, "a", "b")).start()
    a.wait_notify("READY=1")
    wait_for(lambda: set(verdicts(a)) == {"a", "b"}, 10, "two origins")
    a.write_config(origin_toml(origin_server, "b", "c"))
    a.signal(signal.SIGHUP)
    wait_for(lambda: verdicts(a) == {"b": "up", "c": "up"}, 10, "b and c after reload")
    assert "RELOADING=1" in a.recv_notify()
    hits_a = origin_server.hits.get("a", 0)
    wait_for(lambda: origin_server.hits.get("c", 0) >= 3, 10, "c checked repeatedly")
    assert origin_server.hits.get("a", 0) <= hits_a + 1  # a is no longer checked
    # a broken file is rejected whole; the running origins stay
    a.config.write_text('[[origin]]\nid = "x"\nurl = "http://h"\ninterval = "10x"\n')
    a.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in a.stderr(), 10, "reload error logged")
    assert 'origin[0].interval: "10x" is not a duration' in a.stderr()
    assert set(verdicts(a)) == {"b", "c"}
    _, text = a.get("/metrics")
    assert 'edge_agent_config_reloads_total{result="error"} 1.0' in text
    assert a.stop() == 0


def test_sigterm_stops_cleanly_within_5s(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    # many origins so checks are in flight when the signal lands
    names = [f"o{i}" for i in range(200)]
    a = agent_process(origin_toml(origin_server, *names, interval="100ms")).start()
    a.wait_notify("READY=1")
    wait_for(lambda: sum(origin_server.hits.values()) > 400, 15, "checks under way")
    t0 = time.monotonic()
    a.signal(signal.SIGTERM)
    assert a.proc is not None
    rc = a.proc.wait(10)
    elapsed = time.monotonic() - t0
    assert rc == 0
    assert elapsed < 5.0, elapsed
    err = a.stderr()
    for sign in BAD_SHUTDOWN_SIGNS:
        assert sign not in err, err
    assert "STOPPING=1" in a.recv_notify()


def test_taken_api_port_is_failing_not_dead(agent_process: Callable[..., AgentProcess]) -> None:
    a = agent_process()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", a.port))
    blocker.listen()
    try:
        a.start()
        # the node does its main job without its API: gossip is up, READY is sent, and
        # the fault is in systemd's STATUS (and on the LEDs) while the port stays taken
        a.wait_notify("READY=1")
        wait_for(
            lambda: any("failing" in m and "cannot listen" in m for m in a.recv_notify()),
            10,
            "failing STATUS",
        )
        with socket.create_connection(("127.0.0.1", a.gossip_port), timeout=5):
            pass  # the gossip port answers
        a.check_alive()
        # `edge-agent status` on the Pi still answers, over the local API socket, and
        # names the fault; gossip runs meanwhile (the cluster line is there, no gossip fault)
        res = edge_agent("status", "--config", str(a.config))
        assert res.returncode == 1, res.stderr  # failing: the API is down on TCP
        assert f"api: cannot listen on 127.0.0.1:{a.port}: Address already in use" in res.stdout
        assert "status    failing" in res.stdout and "gossip:" not in res.stdout, res.stdout
        assert "cluster   edge: alone, no live peer" in res.stdout
    finally:
        blocker.close()
    # the port came free: the API comes up without a restart
    wait_for(lambda: a.get("/v1/health")[0] == 200, 15, "the API once the port is free")
    status, body = a.get("/v1/health")
    assert status == 200 and body["status"] == "ok", body
    assert a.stderr().count("API cannot listen") == 1  # said once, not at every retry
    assert a.stop() == 0


@pytest.mark.parametrize("case", ["under a file", "another process answers"])
def test_an_api_socket_that_cannot_be_bound_is_its_own_fault(
    agent_process: Callable[..., AgentProcess], tmp_path: Path, case: str
) -> None:
    """The socket and the TCP API are independent: a socket path that cannot be used is
    a degraded fault, "api-socket"; READY is sent and the TCP API answers. A socket some
    other process serves is left alone, never unlinked from under it."""
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if case == "under a file":
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "api.sock"  # under a regular file: cannot be made
        said = "Not a directory"
    else:
        path = tmp_path / "taken.sock"
        holder.bind(str(path))
        holder.listen()
        said = f"another process serves {path}"
    a = agent_process()
    a.config.write_text(a.config.read_text().replace("[api]\n", f'[api]\nsocket = "{path}"\n'))
    try:
        a.start()
        a.wait_notify("READY=1")
        status, health = a.get("/v1/health")
        assert status == 200 and health["status"] == "degraded", health
        assert f"api-socket: cannot serve the API on {path}: {said}" in health["reasons"], health
        _, metrics = a.get("/metrics")
        assert 'edge_agent_fault{level="degraded",what="api-socket"} 1.0' in metrics
        assert a.stderr().count("cannot serve the API on") == 1
        assert a.stop() == 0
        if case != "under a file":
            assert path.is_socket()  # still the other process's
    finally:
        holder.close()


def test_a_stale_api_socket_is_replaced(agent_process: Callable[..., AgentProcess]) -> None:
    """A socket file left by an agent that did not stop cleanly (nobody answers on it)
    is replaced at start: no fault, and the socket answers."""
    a = agent_process()
    path = a.tmp / "data" / "api.sock"
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    a.start()
    a.wait_notify("READY=1")
    assert a.get("/v1/health")[1]["status"] == "ok"
    res = edge_agent("--socket", str(path), "status", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["health"]["node"] == "test-node"
    assert a.stop() == 0


def edge_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.shell.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != CONFIG_ENV},
    )


def test_a_body_over_the_limit_is_told_the_limit(
    agent_process: Callable[..., AgentProcess],
) -> None:
    import json
    import urllib.error
    import urllib.request

    a = agent_process().start()
    a.wait_notify("READY=1")
    body = json.dumps({"url": "http://h/", "pad": "x" * 70_000}).encode()
    req = urllib.request.Request(
        a.url + "/v1/origins/big",
        data=body,
        method="PUT",
        headers={"Content-Type": "application/json", **a.auth},
    )
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("a 70 KB body was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 413
        answer = json.load(e)
    assert answer["error"] == "the body is larger than the 65,536 bytes a request may carry"
    assert a.get("/v1/health")[0] == 200  # and the node goes on


def test_a_standing_fault_is_a_gauge_and_a_count_in_metrics(
    agent_process: Callable[..., AgentProcess],
) -> None:
    """Each fault shows in /metrics while it stands (edge_agent_fault) and is counted once
    when it begins (edge_agent_fault_starts_total), not once per retry."""
    a = agent_process()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", a.gossip_port))
    standing = 'edge_agent_fault{level="failing",what="gossip"} 1.0'
    try:
        a.start()
        wait_for(lambda: standing in (a.get("/metrics")[1] or ""), 15, "the gossip fault gauge")
        wait_for(lambda: "retrying" in a.stderr(), 10, "a retry logged")
    finally:
        blocker.close()
    a.wait_notify("READY=1")
    cleared = 'edge_agent_fault{level="failing",what="gossip"} 0.0'
    wait_for(lambda: cleared in a.get("/metrics")[1], 10, "the gauge back to 0")
    lines = a.get("/metrics")[1].splitlines()
    assert 'edge_agent_fault_starts_total{what="gossip"} 1.0' in lines
    assert a.stderr().count("cannot bind gossip port") == 1  # logged once, not per retry
    assert a.stop() == 0
