"""What the agent logs, read where an operator reads it: the journal's fields on verdict
lines (a real systemd-journald), one summary line instead of a line per origin at a
restart, the ready line's counts, a standing fault logged once, and webhooks dropped at
shutdown told. Agents run as real processes (tests/conftest.py AgentProcess)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.shell.peers import Peer, PeerStore
from tests.conftest import AgentProcess, OriginServer, wait_for
from tests.test_runtime import origin_toml, verdicts


def metric(a: AgentProcess, line_start: str) -> float:
    """The value of the /metrics sample whose line starts with ``line_start``."""
    for line in str(a.get("/metrics")[1]).splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in /metrics")


def many_origins(srv: OriginServer, n: int) -> str:
    """``n`` origins on ``srv``; a first check decides at once, a later down needs three
    failures (one slow answer from a busy test machine is not a transition)."""
    return "".join(
        f'[[origin]]\nid = "o{i}"\nurl = "{srv.url(f"o{i}")}"\ninterval = "2s"\n'
        f'timeout = "2s"\nrise = 1\nfall = 3\n'
        for i in range(n)
    )


# --- (d) a standing fault is logged once ----------------------------------------------------


def test_a_standing_store_and_peers_fault_is_logged_once(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    """The store's directory is a file and the peers file is damaged: each problem is
    one line, however often the store retries (edge_agent_store_write_errors_total)."""
    a = agent_process(origin_toml(origin_server, "flappy", "steady"))
    data = a.tmp / "data"
    data.mkdir()
    (data / "store").write_text("not a directory\n")
    (data / "peers.json").write_text("garbage")
    a.start()
    a.wait_notify("READY=1")
    wait_for(
        lambda: metric(a, 'edge_agent_fault_starts_total{what="storage"}') == 1.0,
        10,
        "the storage fault",
    )
    errors = metric(a, "edge_agent_store_write_errors_total")
    # new records keep the store retrying: flip an origin so its observations change
    for k in range(4):
        (origin_server.down.add if k % 2 == 0 else origin_server.down.discard)("flappy")
        want = "down" if k % 2 == 0 else "up"
        wait_for(lambda w=want: verdicts(a)["flappy"] == w, 10, f"flappy {want}")
    wait_for(
        lambda: metric(a, "edge_agent_store_write_errors_total") >= errors + 3,
        15,
        "three more failed commits",
    )
    assert a.stop() == 0
    text = a.stderr()
    for once in (
        "store: write failed:",
        "ignoring damaged remembered-peers file",
        "cannot use data directory",
        "store: damaged at start (1 problem,",
    ):
        assert text.count(once) == 1, (once, text)
    assert "could not delete" not in text  # a snapshot tmp never made is nothing to delete


def test_a_failing_peers_file_write_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """peers.json cannot be replaced (a directory stands there): one warning when the
    fault begins, retries (counted) at each flush after min_interval, one line when a
    write works again."""
    (tmp_path / "peers.json").mkdir()
    store = PeerStore(tmp_path, min_interval=1.0)
    faults: list[str | None] = []
    store.on_fault = faults.append
    peers = [Peer("b", "10.0.0.2", 7946), Peer("c", "10.0.0.3", 7946)]
    caplog.set_level(logging.INFO, logger="agent.shell.peers")
    assert not store.update(peers, now=0.0)
    for now in (0.5, 1.0, 2.0, 3.0):
        store.update(peers, now=now)
        store.flush(now=now)
    assert store.write_errors == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot save remembered peers" in warnings[0].message
    assert store.write_fault is not None and faults == [store.write_fault]
    (tmp_path / "peers.json").rmdir()
    assert store.flush(now=4.0)
    assert store.write_fault is None and faults[-1] is None
    assert [p.name for p in PeerStore(tmp_path).load()] == ["b", "c"]
    infos = [r.message for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "saved" in infos[0]


def test_a_damaged_peers_file_is_reported_once_however_often_it_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "peers.json").write_text("{")
    store = PeerStore(tmp_path)
    caplog.set_level(logging.WARNING, logger="agent.shell.peers")
    assert [store.load() for _ in range(4)] == [[], [], [], []]
    assert store.corrupt == 1
    assert len(caplog.records) == 1
    (tmp_path / "peers.json").write_text("[]")  # damaged another way: a new problem
    assert store.load() == []
    assert store.corrupt == 2 and len(caplog.records) == 2
