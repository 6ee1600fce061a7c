"""The client commands against a real running agent, and the ones that need none."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Callable

from tests.conftest import AgentProcess, OriginServer, require, wait_for


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version_and_usage() -> None:
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("edge-agent ")
    assert cli().returncode == 2
    assert cli("no-such-command").returncode == 2


def test_keygen_matches_serf_format() -> None:
    ours = cli("keygen").stdout.strip()
    assert len(base64.b64decode(ours, validate=True)) == 32
    serf = shutil.which("serf")
    require(serf is not None, "Debian package serf")
    assert serf is not None
    theirs = subprocess.run([serf, "keygen"], capture_output=True, text=True).stdout.strip()
    assert len(ours) == len(theirs)  # same encoding of the same key size
    assert cli("keygen").stdout.strip() != ours


def test_status_origins_members_against_a_live_agent(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    origin_server.down.add("bad")
    cfg = "".join(
        f'[[origin]]\nid = "{n}"\nurl = "{origin_server.url(n)}"\ninterval = "200ms"\n'
        f'timeout = "200ms"\nrise = 1\nfall = 1\n'
        for n in ("good", "bad")
    )
    a = agent_process(cfg, name="cli-node").start()
    a.wait_notify("READY=1")
    api = ["--api", a.url]

    def origins_known() -> bool:
        out = cli(*api, "origins", "--json").stdout
        return {o["id"]: o["verdict"] for o in json.loads(out)} == {"good": "up", "bad": "down"}

    wait_for(origins_known, 15, "verdicts via the CLI")
    table = cli(*api, "origins").stdout.splitlines()
    assert table[0].split()[:4] == ["ORIGIN", "VERDICT", "LATENCY", "OWNERS"]
    assert any(line.startswith("bad ") and " down " in line for line in table)
    # columns line up: every row has VERDICT where the header has it
    col = table[0].index("VERDICT")
    assert all(line[col:].split()[0] in ("up", "down") for line in table[1:])

    status = cli(*api, "status")
    assert status.returncode == 0
    assert "cli-node" in status.stdout and "2 origins: 1 up, 1 down" in status.stdout
    assert json.loads(cli(*api, "status", "--json").stdout)["health"]["status"] == "ok"

    members = cli(*api, "members").stdout.splitlines()
    assert members[0].split() == ["NAME", "ADDRESS", "STATE", "INC", "TAGS"]
    assert "cli-node" in members[1] and "alive" in members[1] and "role=edge-agent" in members[1]
    a.stop()
    gone = cli(*api, "status")
    assert gone.returncode == 1 and "cannot reach the agent" in gone.stderr
