"""The running agent on a failing SD card: its data_dir on a real 1 MiB tmpfs that is
remounted read-only, then filled up. The agent keeps answering and checking, reports
``degraded`` with the reason, counts the fault in /metrics, and catches up (and
recovers everything at the next start) once the filesystem is writable again."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import AgentProcess, OriginServer, wait_for
from tests.test_runtime import origin_toml

from .test_tmpfs import fill, sh, small_fs  # noqa: F401  (fixture)


def put(a: AgentProcess, oid: str, url: str) -> int:
    body = json.dumps({"url": url, "interval": "1s"}).encode()
    req = urllib.request.Request(
        a.url + f"/v1/origins/{oid}", data=body, method="PUT", headers=a.auth
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def health(a: AgentProcess) -> dict[str, Any]:
    body = a.get("/v1/health")[1]
    assert isinstance(body, dict)
    return body


def metric(a: AgentProcess, name: str) -> float:
    for line in str(a.get("/metrics")[1]).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def restart(a: AgentProcess) -> None:
    assert a.stop() == 0
    a.messages.clear()
    a.start()
    a.wait_notify("READY=1")


def test_read_only_and_full_card(
    agent_process: Callable[..., AgentProcess],
    origin_server: OriginServer,
    small_fs: Path,  # noqa: F811
) -> None:
    a = agent_process(origin_toml(origin_server, "cfg"))
    a.config.write_text(
        a.config.read_text().replace(f'data_dir = "{a.tmp / "data"}"', f'data_dir = "{small_fs}"')
    )
    a.start()
    a.wait_notify("READY=1")
    assert put(a, "before", origin_server.url("before")) == 201
    wait_for(lambda: health(a)["storage"]["fsyncs"] > 0, 10, "the first commit")

    # the card goes read-only: still answering, checking and accepting origins
    sh("mount", "-o", "remount,ro", str(small_fs))
    assert put(a, "during-ro", origin_server.url("during-ro")) == 201

    def degraded(word: str) -> bool:
        h = health(a)
        return h["status"] == "degraded" and any(word in r for r in h["reasons"])

    wait_for(lambda: degraded("read-only"), 10, "degraded: read-only")
    assert health(a)["storage"]["status"] == "fault"
    assert metric(a, "edge_agent_store_fault") == 1.0
    assert metric(a, "edge_agent_store_write_errors_total") >= 1
    wait_for(
        lambda: (
            {o["id"]: o["verdict"] for o in a.get("/v1/origins")[1]}
            == {"cfg": "up", "before": "up", "during-ro": "up"}
        ),
        10,
        "checks go on from memory",
    )
    sh("mount", "-o", "remount,rw", str(small_fs))
    wait_for(lambda: health(a)["status"] == "ok", 15, "healthy once writable")
    assert metric(a, "edge_agent_store_fault") == 0.0
    restart(a)
    ids = {o["id"] for o in a.get("/v1/origins")[1]}
    assert ids == {"cfg", "before", "during-ro"}

    # the card fills up
    filler = fill(small_fs)
    assert put(a, "during-full", origin_server.url("during-full")) == 201
    wait_for(lambda: degraded("storage"), 10, "degraded: disk full")
    assert "full" in " ".join(health(a)["reasons"]) or "space" in " ".join(health(a)["reasons"])
    filler.unlink()
    wait_for(lambda: health(a)["status"] == "ok", 15, "healthy once there is room")
    restart(a)
    ids = {o["id"] for o in a.get("/v1/origins")[1]}
    assert ids == {"cfg", "before", "during-ro", "during-full"}
    assert a.stop() == 0
