"""Crash test of the whole agent: SIGKILL `edge-agent run` at random points while
clients declare origins through the API as fast as it answers, restart it, and check:

- it always starts (READY) on whatever the kill left on disk;
- every declaration the API acknowledged as durable (201 with "durable": true, sent
  only after the group commit) is there after the restart;
- nothing is invented: every origin present was really sent by a client.

EDGE_AGENT_KILLS sets the number of kills (default 30 here; the issue's figure is 200:
``EDGE_AGENT_KILLS=200 .venv/bin/pytest tests/store/test_agent_crash.py``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from tests.conftest import AgentProcess, wait_for

KILLS = int(os.environ.get("EDGE_AGENT_KILLS", "30"))
CLIENTS = 4


@pytest.mark.timeout(60 + 3 * KILLS)
def test_sigkill_during_heavy_api_load(agent_process: Callable[..., AgentProcess]) -> None:
    a = agent_process('[store]\ncommit_interval = "20ms"\n', name="crash")
    rng = random.Random(20261126)
    sent: set[str] = set()
    acked: set[str] = set()
    lock = threading.Lock()
    counter = [0]

    def client(stop: threading.Event) -> None:
        while not stop.is_set():
            with lock:
                counter[0] += 1
                oid = f"o{counter[0]}"
                sent.add(oid)
            body = json.dumps({"url": "tcp://127.0.0.1:9", "interval": "60s"}).encode()
            req = urllib.request.Request(
                a.url + f"/v1/origins/{oid}", data=body, method="PUT", headers=a.auth
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 201 and json.loads(r.read())["durable"]:
                        with lock:
                            acked.add(oid)
            except (OSError, urllib.error.URLError, ValueError):
                return  # the agent died under us: this round is over

    for kill in range(KILLS):
        a.messages.clear()
        a.start()
        a.wait_notify("READY=1", timeout=20)
        present = {o["id"] for o in a.get("/v1/origins")[1]}
        missing = acked - present
        assert not missing, f"kill {kill}: acknowledged but lost: {sorted(missing)[:10]}"
        invented = present - sent
        assert not invented, f"kill {kill}: never sent: {sorted(invented)[:10]}"
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(stop,)) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        before = len(acked)
        # load runs until a random number of new acknowledgements, then the kill lands
        target = before + rng.randint(1, 40)
        wait_for(lambda target=target: len(acked) >= target, 20, "acknowledged declarations")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
    a.messages.clear()
    a.start()
    a.wait_notify("READY=1", timeout=20)
    present = {o["id"] for o in a.get("/v1/origins")[1]}
    assert acked <= present <= sent
    print(f"{KILLS} kills: {len(acked)} acknowledged declarations, all recovered")
    assert a.stop() == 0
