"""The running agent started over a store it cannot read: it starts (checking, serving),
keeps the damaged files in quarantine, and reports it where an operator looks: a
``store-recovery`` reason in /v1/health, the LEDs' degraded condition, /metrics."""

from __future__ import annotations

import os
from collections.abc import Callable

from tests.conftest import AgentProcess, OriginServer, wait_for
from tests.test_runtime import origin_toml

from .test_agent_faults import health, metric, put


def test_a_store_that_cannot_be_read_is_quarantined_and_reported(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    a = agent_process(origin_toml(origin_server, "cfg"))
    a.start()
    a.wait_notify("READY=1")
    assert put(a, "api-1", origin_server.url("api-1")) == 201
    wait_for(lambda: health(a)["storage"]["fsyncs"] > 0, 10, "the first commit")
    assert a.stop() == 0
    store = a.tmp / "data" / "store"
    junk = {}
    for f in sorted(store.iterdir()):
        if f.is_file() and f.stat().st_size:
            f.write_bytes(b"\xa5" * f.stat().st_size)
            junk[f.name] = f.read_bytes()
    assert junk

    a.messages.clear()
    a.start()
    a.wait_notify("READY=1")
    h = health(a)
    assert h["status"] == "degraded", h
    assert any(r.startswith("store-recovery: ") for r in h["reasons"]), h["reasons"]
    assert metric(a, "edge_agent_store_quarantined_files") >= 1
    kept = os.listdir(store / "quarantine")
    assert {b for name in junk for b in kept if b.startswith(name)}, kept
    # still checking its own config origin from the fresh store
    wait_for(
        lambda: {o["id"]: o["verdict"] for o in a.get("/v1/origins")[1]}.get("cfg") == "up",
        10,
        "checks go on",
    )
    assert a.stop() == 0
