"""What the agent logs, read where an operator reads it: the journal's fields on verdict
lines (a real systemd-journald), one summary line instead of a line per origin at a
restart, the ready line's counts, a standing fault logged once, and webhooks dropped at
shutdown told. Agents run as real processes (tests/conftest.py AgentProcess)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.node import VerdictChange
from agent.shell.peers import Peer, PeerStore
from agent.shell.verdict_log import VerdictLog
from tests.conftest import ROOT, AgentProcess, OriginServer, ThreadedApp, require, wait_for
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


# --- (a) journal fields, in a real journald -------------------------------------------------

# Runs in a private mount namespace (unshare --mount, as tests/test_systemd.py does): /run
# and /var/log are fresh tmpfs there, so the journald started here owns the compiled-in
# /run/systemd/journal/socket and the host's journal is never touched. The agent runs
# "under systemd" ($INVOCATION_ID), so it logs through systemd.journal.JournalHandler.
_JOURNAL_AGENT = """
set -u
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log
mkdir -p /run/systemd/journal /run/log/journal
"$JOURNALD" & journald=$!
echo "$journald" > "$PIDS"
deadline=$(( $(date +%s) + 10 ))
until [ -S /run/systemd/journal/socket ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "journald made no socket in 10 s" >&2; exit 1; }
  sleep 0.01
done
"$PYTHON" -m agent.shell.cli run --config "$CONFIG" & agent=$!
echo "$journald $agent" > "$PIDS"
trap 'kill -TERM $agent' TERM
wait $agent; rc=$?
while kill -0 $agent 2>/dev/null; do wait $agent; rc=$?; done
journalctl --sync
kill $journald; wait $journald 2>/dev/null
exit $rc
"""


class JournalAgent:
    """An AgentProcess run under its own journald; ``entries()`` reads that journal."""

    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent
        self.pids = agent.tmp / "pids"
        self.nsenter = shutil.which("nsenter")
        script = agent.tmp / "journal-agent.sh"
        script.write_text(_JOURNAL_AGENT)
        env = {
            **agent.env,
            "JOURNALD": "/lib/systemd/systemd-journald",
            "PYTHON": sys.executable,
            "CONFIG": str(agent.config),
            "PIDS": str(self.pids),
            "INVOCATION_ID": uuid.uuid4().hex,
            "PYTHONPATH": str(ROOT),
            "SYSTEMD_PAGER": "",
        }
        env.pop("JOURNAL_STREAM", None)
        unshare = shutil.which("unshare")
        assert unshare is not None
        agent.proc = subprocess.Popen(
            [unshare, "--mount", "--propagation", "private", "sh", str(script)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=agent.stderr_path.open("wb"),
            cwd=agent.tmp,
        )

    def entries(self) -> list[dict[str, Any]]:
        """Every journal entry the agent wrote so far (read inside its namespace)."""
        assert self.agent.proc is not None and self.nsenter is not None
        r = subprocess.run(
            [
                self.nsenter,
                f"--mount=/proc/{self.agent.proc.pid}/ns/mnt",
                "journalctl",
                "-o",
                "json",
                "--no-pager",
                "SYSLOG_IDENTIFIER=edge-agent",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]

    def kill_leftovers(self) -> None:
        """After a failed test: the journald and agent this test started, by their pids."""
        if not self.pids.exists():
            return
        for pid in self.pids.read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


@pytest.fixture
def journal_agent(
    agent_process: Callable[..., AgentProcess],
) -> Iterator[Callable[[str], JournalAgent]]:
    journald = Path("/lib/systemd/systemd-journald")
    require(journald.exists() and shutil.which("journalctl") is not None, "systemd (journald)")
    require(shutil.which("unshare") is not None, "unshare (util-linux)")
    require(shutil.which("nsenter") is not None, "nsenter (util-linux)")
    require(os.geteuid() == 0, "root, to mount tmpfs over /run in a private mount namespace")
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        require(False, "systemd-python (scripts/bootstrap.sh installs edge-agent[systemd])")
    made: list[JournalAgent] = []

    def make(config_text: str) -> JournalAgent:
        j = JournalAgent(agent_process(config_text))
        made.append(j)
        return j

    yield make
    for j in made:
        proc = j.agent.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        j.kill_leftovers()


def test_verdict_lines_carry_origin_verdict_and_was_in_the_journal(
    journal_agent: Callable[[str], JournalAgent], origin_server: OriginServer
) -> None:
    """`journalctl -u edge-agent ORIGIN=shop` finds the fleet verdict lines of "shop",
    with VERDICT= and WAS= beside them, read back from a real journald."""
    j = journal_agent(origin_toml(origin_server, "shop", "cart"))
    a = j.agent
    a.wait_notify("READY=1")
    wait_for(lambda: verdicts(a) == {"shop": "up", "cart": "up"}, 15, "both up")
    origin_server.down.add("shop")

    def verdict_entries() -> list[dict[str, Any]]:
        return [
            e
            for e in j.entries()
            if e.get("ORIGIN") == "shop" and e.get("MESSAGE", "").startswith("verdict:")
        ]

    [entry] = wait_for(verdict_entries, 15, "the verdict line in the journal")
    assert entry["MESSAGE"] == "verdict: origin shop is down (was up)"
    assert (entry["VERDICT"], entry["WAS"]) == ("down", "up")
    assert entry["PRIORITY"] == "4"  # a fleet verdict of down is a warning
    assert entry["_TRANSPORT"] == "journal"  # native entries, not stream lines
    here = [e for e in j.entries() if e["MESSAGE"].startswith("origin shop is down here")]
    assert [(e["ORIGIN"], e["VERDICT"], e["WAS"]) for e in here] == [("shop", "down", "up")]
    origin_server.down.discard("shop")
    wait_for(lambda: len(verdict_entries()) == 2, 15, "the way back up")
    back = verdict_entries()[1]
    assert (back["VERDICT"], back["WAS"], back["PRIORITY"]) == ("up", "down", "6")
    # the first verdicts were one summary line, not a line per origin
    messages = [e["MESSAGE"] for e in j.entries()]
    assert "verdicts at start: 2 up, 0 down; from here each change is logged" in messages, messages
    assert a.stop() == 0, a.stderr()


# --- (b) a restart: one summary line, then only real transitions ---------------------------


def test_a_restart_logs_a_summary_not_a_line_per_origin(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    n = 1000
    for i in range(3):
        origin_server.down.add(f"o{i}")
    a = agent_process(many_origins(origin_server, n))

    def all_judged() -> bool:
        v = verdicts(a)
        return "unknown" not in v.values() and len(v) == n

    def summary_logged() -> bool:
        return "verdicts at start:" in a.stderr()

    a.start()
    a.wait_notify("READY=1", 30)
    wait_for(all_judged, 30, "every origin judged")
    wait_for(summary_logged, 15, "the summary line")
    first_run = a.stderr().splitlines()
    assert len(first_run) <= 20, "\n".join(first_run[:40])
    assert a.stop() == 0

    a.stderr_path = a.tmp / "stderr-restart.log"
    a.messages.clear()
    a.start()
    a.wait_notify("READY=1", 30)
    wait_for(all_judged, 30, "every origin judged after the restart")
    wait_for(summary_logged, 15, "the summary line after the restart")
    lines = a.stderr().splitlines()
    assert len(lines) <= 20, "\n".join(lines[:40])
    [summary] = [x for x in lines if "verdicts at start:" in x]
    assert summary.endswith(
        "verdicts at start: 997 up, 3 down (o0, o1, o2); from here each change is logged"
    ), summary
    assert not [x for x in lines if " is up here" in x or "verdict: origin" in x], lines

    # a real transition after the start is logged, once
    origin_server.down.add("o500")
    wait_for(lambda: "verdict: origin o500 is down (was up)" in a.stderr(), 20, "o500 down")
    assert a.stop() == 0
    lines = a.stderr().splitlines()
    assert len([x for x in lines if "verdict: origin o500 is down (was up)" in x]) == 1
    assert len([x for x in lines if "verdict: origin" in x]) == 1, lines
    assert len(lines) <= 25, "\n".join(lines)


# --- (c) the ready line counts what the node knows and checks ------------------------------


def test_the_ready_line_counts_the_origins_known_and_checked(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    """The config lists 2 origins; 3 more were declared through the API: after a restart
    the node knows (and, alone, checks) 5, and says so."""
    a = agent_process(origin_toml(origin_server, "a", "b")).start()
    a.wait_notify("READY=1")
    for oid in ("c", "d", "e"):
        assert a.call("PUT", f"/v1/origins/{oid}", {"url": origin_server.url(oid)})[0] == 201
    wait_for(lambda: len(verdicts(a)) == 5, 10, "five origins")
    assert a.stop() == 0
    a.messages.clear()
    a.start()
    a.wait_notify("READY=1")
    [ready] = [x for x in a.stderr().splitlines() if " ready: " in x]  # the restart's log
    assert re.search(r"ready: node test-node, 5 origins known, 5 checked here, pid \d+$", ready)
    assert a.stop() == 0


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


# --- (e) webhooks dropped at shutdown are told ---------------------------------------------


class FailingReceiver(ThreadedApp):
    """A webhook receiver that answers 503 to every delivery, so each waits to retry."""

    def __init__(self) -> None:
        self.hits = 0

        async def hook(request: web.Request) -> web.Response:
            await request.read()
            self.hits += 1
            return web.Response(status=503, text="not now")

        app = web.Application()
        app.router.add_post("/hook", hook)
        super().__init__(app)


def test_webhooks_pending_at_shutdown_are_logged_and_counted(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    receiver = FailingReceiver()
    try:
        hook = f'[[webhook]]\nurl = "http://127.0.0.1:{receiver.port}/hook"\ntimeout = "1s"\n'
        a = agent_process(origin_toml(origin_server, "shop") + hook).start()
        a.wait_notify("READY=1")
        wait_for(lambda: verdicts(a) == {"shop": "up"}, 10, "shop up")
        origin_server.down.add("shop")
        wait_for(lambda: receiver.hits >= 2, 15, "a delivery retried")
        assert metric(a, "edge_agent_webhook_pending") == 1.0
        assert metric(a, 'edge_agent_webhook_deliveries_total{result="retried"}') >= 1.0
        assert metric(a, 'edge_agent_webhook_dropped_total{reason="shutdown"}') == 0.0
        assert a.stop() == 0
        lines = [x for x in a.stderr().splitlines() if "dropped at shutdown" in x]
        assert len(lines) == 1, a.stderr()
        assert "WARNING" in lines[0]
        assert "webhooks: 1 delivery dropped at shutdown (pending retry or queued)" in lines[0]
    finally:
        receiver.close()


# --- the verdict log's rules, alone ---------------------------------------------------------


def change(origin: str, old: str, new: str) -> VerdictChange:
    return VerdictChange(origin, old, new, 0.0, "", ("n1",))


def test_first_verdicts_make_one_summary_and_later_changes_a_line_each() -> None:
    vl = VerdictLog(window=10.0)
    current = {f"o{i}": "up" for i in range(12)} | {"o3": "down", "o7": "disputed"}
    assert [vl.on_change(change(o, "unknown", v), 1.0) for o, v in current.items()] == [False] * 12
    assert vl.flush_at(catalogue=13) == 11.0  # one origin still unknown: wait the window
    assert vl.flush_at(catalogue=12) == 1.0  # every origin judged: at once
    [(line, fields)] = vl.take(current.__getitem__)
    assert (
        line
        == "verdicts at start: 10 up, 1 down (o3), 1 disputed (o7); from here each change is logged"
    )
    assert fields == {} and vl.flush_at(12) is None and vl.take(current.__getitem__) == []
    assert vl.on_change(change("o3", "down", "up"), 2.0)  # a change: its own line
    # an origin added later (an API PUT) gets its first verdict on a line of its own
    assert not vl.on_change(change("new", "unknown", "up"), 3.0)
    assert vl.take({"new": "up"}.__getitem__) == [
        (
            "verdict: origin new is up (first verdict)",
            {"ORIGIN": "new", "VERDICT": "up", "WAS": "unknown"},
        )
    ]
    # gone and back: first again; many at once (a peer's catalogue): a summary
    vl.forget("o1")
    assert not vl.on_change(change("o1", "unknown", "up"), 4.0)
    more = {f"p{i}": "up" for i in range(8)}
    for o in more:
        vl.on_change(change(o, "unknown", "up"), 4.0)
    [(line, _)] = vl.take({**more, "o1": "up"}.__getitem__)
    assert line == "verdicts first known for 9 more origins: 9 up, 0 down"
