"""agent.shell.systemd against real parts: AF_UNIX datagram sockets standing in for systemd's notify
socket, and a real systemd-journald (started in a private mount namespace) for the journal."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from agent.shell import systemd as sd
from agent.shell.systemd import (
    Notifier,
    Watchdog,
    log_destination,
    run_watchdog,
    setup_logging,
    watchdog_interval,
)
from tests.conftest import AgentProcess, require


class Receiver:
    """Plays systemd: receives notify datagrams on a thread and stamps their arrival."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name  # what goes in $NOTIFY_SOCKET
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        sock.settimeout(0.02)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            with self._cond:
                self.messages.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def texts(self) -> list[str]:
        with self._cond:
            return [m for _, m in self.messages]

    def times(self, text: str) -> list[float]:
        with self._cond:
            return [t for t, m in self.messages if m == text]

    def wait_for(self, pred: Callable[[list[str]], bool], timeout: float = 3.0) -> list[str]:
        """Block (a thread, not the event loop) until pred(messages) holds or time runs out."""
        with self._cond:
            ok = self._cond.wait_for(lambda: pred([m for _, m in self.messages]), timeout)
            assert ok, f"timed out; received {self.messages}"
            return [m for _, m in self.messages]

    async def async_wait_for(
        self, pred: Callable[[list[str]], bool], timeout: float = 3.0
    ) -> list[str]:
        """The same from a coroutine, letting the event loop run meanwhile."""
        return await asyncio.to_thread(self.wait_for, pred, timeout)

    async def async_wait_until(self, pred: Callable[[], bool], timeout: float = 3.0) -> None:
        """Wait for a condition on the receiver itself (e.g. on arrival times)."""
        await self.async_wait_for(lambda _: pred(), timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    path = tmp_path / "notify"
    assert len(str(path)) < 100, "AF_UNIX paths are limited to 108 bytes"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    r = Receiver(s, str(path))
    yield r
    r.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    r = Receiver(s, "@" + name)
    yield r
    r.close()


# --- Notifier ------------------------------------------------------------------------------


def _systemd_python() -> Any:
    """systemd-python's modules: a product dependency wherever libsystemd is (CI fails without)."""
    try:
        import systemd.daemon
        import systemd.journal
    except ImportError:
        require(False, "systemd-python (scripts/bootstrap.sh installs edge-agent[systemd])")
    return systemd


@pytest.fixture
def notify_socket(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    """$NOTIFY_SOCKET names the receiver: the library reads it from the environment."""
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.name)
    return receiver


@pytest.fixture(params=["systemd-python", "fallback"])
def notify(request: pytest.FixtureRequest) -> Callable[[str], bool]:
    """Each implementation a Notifier can use: the library's, and the fallback for machines
    without libsystemd; both must say the same thing to the same socket."""
    if request.param == "systemd-python":
        return cast("Callable[[str], bool]", _systemd_python().daemon.notify)
    return sd.fallback_notify


def test_the_library_notifies_when_it_is_installed(notify_socket: Receiver) -> None:
    systemd = _systemd_python()
    n = Notifier.from_env()
    assert n.notify is systemd.daemon.notify
    assert n.ready("up")
    assert notify_socket.wait_for(lambda m: len(m) >= 1) == ["READY=1\nSTATUS=up"]


def test_without_the_library_the_fallback_notifies_and_says_so(
    notify_socket: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sd, "_daemon", None)
    with caplog.at_level(logging.WARNING, logger="agent.shell.systemd"):
        n = Notifier.from_env()
        assert n.notify is sd.fallback_notify
        assert n.ready()
        assert n.watchdog()
    assert notify_socket.wait_for(lambda m: len(m) >= 2) == ["READY=1", "WATCHDOG=1"]
    warnings = [r for r in caplog.records if "systemd-python is not installed" in r.getMessage()]
    assert len(warnings) == 1


def test_without_notify_socket_every_call_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch, notify: Callable[[str], bool]
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier(notify)
    assert not n.enabled
    assert n.ready("up") is False
    assert n.watchdog() is False
    assert n.stopping() is False
    assert notify("READY=1") is False  # the implementation itself: nothing to send to


def test_messages_reach_the_socket(notify_socket: Receiver, notify: Callable[[str], bool]) -> None:
    n = Notifier(notify)
    assert n.enabled
    assert n.ready("serving 3 origins")
    assert n.status("serving 4 origins")
    assert n.watchdog()
    assert n.stopping()
    got = notify_socket.wait_for(lambda m: len(m) >= 4)
    assert got == [
        "READY=1\nSTATUS=serving 3 origins",
        "STATUS=serving 4 origins",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_abstract_socket(
    abstract_receiver: Receiver, monkeypatch: pytest.MonkeyPatch, notify: Callable[[str], bool]
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", abstract_receiver.name)
    assert Notifier(notify).ready()
    assert abstract_receiver.wait_for(lambda m: len(m) >= 1) == ["READY=1"]


def test_status_is_sent_only_when_it_changes(
    notify_socket: Receiver, notify: Callable[[str], bool]
) -> None:
    n = Notifier(notify)
    n.ready("a")
    assert n.status("a") is False  # ready() already said "a"
    assert n.status("b") is True
    assert n.status("b") is False
    assert n.status("a") is True
    n.watchdog()  # a marker: everything before it has arrived once it has
    got = notify_socket.wait_for(lambda m: "WATCHDOG=1" in m)
    assert got == ["READY=1\nSTATUS=a", "STATUS=b", "STATUS=a", "WATCHDOG=1"]


def test_reloading_then_ready(notify_socket: Receiver, notify: Callable[[str], bool]) -> None:
    n = Notifier(notify)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    n.ready()
    reloading, ready = notify_socket.wait_for(lambda m: len(m) >= 2)
    fields = dict(line.split("=", 1) for line in reloading.split("\n"))
    assert fields["RELOADING"] == "1"
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(fields["MONOTONIC_USEC"]) <= after
    assert ready == "READY=1"


def test_extend_timeout(notify_socket: Receiver, notify: Callable[[str], bool]) -> None:
    Notifier(notify).extend_timeout(2.5)
    assert notify_socket.wait_for(lambda m: len(m) >= 1) == ["EXTEND_TIMEOUT_USEC=2500000"]


def test_send_errors_are_logged_once_and_not_raised(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    notify: Callable[[str], bool],
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    n = Notifier(notify)
    with caplog.at_level(logging.WARNING, logger="agent.shell.systemd"):
        assert n.ready() is False
        assert n.watchdog() is False
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1


# --- the watchdog --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


async def test_watchdog_pings_at_half_of_watchdog_usec(notify_socket: Receiver) -> None:
    receiver = notify_socket
    notifier = Notifier.from_env()
    wd = Watchdog.from_env(notifier, {"WATCHDOG_USEC": "200000"})
    assert wd.interval == pytest.approx(0.1)
    wd.start()
    assert wd.running
    await receiver.async_wait_for(lambda m: m.count("WATCHDOG=1") >= 8)
    wd.stop()
    times = receiver.times("WATCHDOG=1")
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    median = gaps[len(gaps) // 2]
    assert 0.08 <= median <= 0.2, gaps
    # After stop() no more pings: wait three intervals and count again.
    count = len(receiver.times("WATCHDOG=1"))
    await asyncio.sleep(0.3)
    assert len(receiver.times("WATCHDOG=1")) == count
    assert not wd.running


async def test_a_blocked_event_loop_stops_the_pings(notify_socket: Receiver) -> None:
    """The whole point of pinging from the loop: a stuck loop must look dead to systemd."""
    receiver = notify_socket
    notifier = Notifier.from_env()
    wd = Watchdog(notifier, 0.05)
    wd.start()
    await receiver.async_wait_for(lambda m: m.count("WATCHDOG=1") >= 3)

    blocked = asyncio.Event()
    span: list[float] = []

    def block() -> None:
        span.append(time.monotonic())
        time.sleep(0.5)  # the bug being simulated: blocking work on the event loop
        span.append(time.monotonic())
        blocked.set()

    asyncio.get_running_loop().call_soon(block)
    await blocked.wait()
    start, end = span
    # Pings resume once the loop is free again...
    await receiver.async_wait_until(lambda: any(t > end for t in receiver.times("WATCHDOG=1")))
    wd.stop()
    times = receiver.times("WATCHDOG=1")
    # ...and none arrived while it was blocked (a ping sent just before the block may
    # land a moment after it began, hence the small allowance).
    assert not [t for t in times if start + 0.03 < t < end], (start, end, times)
    gap = max(b - a for a, b in itertools.pairwise(times))
    assert gap >= 0.45


async def test_watchdog_pid_mismatch_sends_no_pings(notify_socket: Receiver) -> None:
    receiver = notify_socket
    notifier = Notifier.from_env()
    env = {"WATCHDOG_USEC": "100000", "WATCHDOG_PID": str(os.getpid() + 1)}
    wd = Watchdog.from_env(notifier, env)
    assert wd.interval is None
    wd.start()
    assert not wd.running
    await asyncio.sleep(0.2)  # four would-be intervals
    wd.stop()
    assert receiver.texts() == []


async def test_run_watchdog_returns_at_once_without_a_watchdog(
    notify_socket: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.wait_for(run_watchdog(Notifier.from_env(), None), 1.0)
    monkeypatch.delenv("NOTIFY_SOCKET")
    await asyncio.wait_for(run_watchdog(Notifier.from_env(), 0.01), 1.0)
    assert notify_socket.texts() == []


def test_watchdog_is_off_without_a_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    wd = Watchdog.from_env(Notifier.from_env(), {"WATCHDOG_USEC": "200000"})
    assert wd.interval is None


# --- logging -------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


def _stream_id(f: io.IOBase) -> str:
    st = os.fstat(f.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def test_log_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stderr", "w") as f:
        journal_socket = tmp_path / "journal-socket"
        monkeypatch.setattr(sd, "JOURNAL_SOCKET", journal_socket)
        # Not under systemd.
        assert log_destination({}, f) == "stderr"
        assert log_destination({"JOURNAL_STREAM": "1:2"}, f) == "stderr"
        # stderr is the journal stream, but there is no journald socket to send fields to.
        assert log_destination({"JOURNAL_STREAM": _stream_id(f)}, f) == "journal-stream"
        journal_socket.touch()
        assert log_destination({"JOURNAL_STREAM": _stream_id(f)}, f) == "journal"
        assert log_destination({"INVOCATION_ID": "abc"}, f) == "journal"
        # Without systemd-python (the fallback), plain lines with a priority prefix.
        monkeypatch.setattr(sd, "_journal", None)
        assert log_destination({"JOURNAL_STREAM": _stream_id(f)}, f) == "journal-stream"
        assert log_destination({"INVOCATION_ID": "abc"}, f) == "stderr"


def test_stderr_format(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("info", env={}, stream=out)
    logging.getLogger("agent.checks").warning(
        "origin %s is down", "shop", extra={"ORIGIN": "shop", "VERDICT": "down", "other": 1}
    )
    logging.getLogger("agent.checks").debug("not shown at info")
    line = out.getvalue()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING agent\.checks: "
        r"origin shop is down ORIGIN=shop VERDICT=down\n",
        line,
    ), line


def test_journal_stream_format_has_priority_prefix_and_no_timestamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.setattr(sd, "JOURNAL_SOCKET", tmp_path / "absent")
    path = tmp_path / "stderr"
    with open(path, "w") as f:
        handler = setup_logging("debug", env={"JOURNAL_STREAM": _stream_id(f)}, stream=f)
        assert isinstance(handler, logging.StreamHandler)
        log = logging.getLogger("agent.shell.runtime")
        log.info("ready", extra={"ORIGIN": "shop"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("crashed")
    lines = path.read_text().splitlines()
    assert lines[0] == "<6>agent.shell.runtime: ready ORIGIN=shop"
    assert lines[1] == "<3>agent.shell.runtime: crashed"
    assert len(lines) > 3 and all(x.startswith("<3>") for x in lines[1:])
    assert lines[-1] == "<3>RuntimeError: boom"


def test_setup_logging_replaces_its_own_handler(restore_logging: None) -> None:
    first = setup_logging("info", env={}, stream=io.StringIO())
    second = setup_logging("debug", env={}, stream=io.StringIO())
    root = logging.getLogger()
    assert second in root.handlers and first not in root.handlers
    assert root.level == logging.DEBUG
    with pytest.raises(ValueError):
        setup_logging("chatty", env={})


def test_under_systemd_the_log_handler_is_the_librarys_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    """systemd.journal.JournalHandler as published: no subclass reaching into its privates."""
    systemd = _systemd_python()
    monkeypatch.setattr(sd, "JOURNAL_SOCKET", tmp_path / "socket")
    (tmp_path / "socket").touch()
    handler = setup_logging("info", env={"INVOCATION_ID": "0123"}, stream=io.StringIO())
    assert type(handler) is systemd.journal.JournalHandler


# Runs inside a private mount namespace (unshare --mount): /run and /var/log are fresh
# tmpfs there, so the journald started below owns /run/systemd/journal/socket, the path
# libsystemd sends to (compiled in, not configurable), and the host's are never touched.
_JOURNALD_SCRIPT = """
set -eu
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log
mkdir -p /run/systemd/journal /run/log/journal
"$JOURNALD" & journald=$!
trap 'kill $journald; wait $journald 2>/dev/null || true' EXIT
deadline=$(( $(date +%s) + 10 ))
until [ -S /run/systemd/journal/socket ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "journald made no socket in 10 s" >&2; exit 1; }
  sleep 0.01
done
"$PYTHON" "$CHILD"
journalctl --sync
journalctl -o json --no-pager "TEST_RUN=$TEST_RUN"
"""

_JOURNAL_CHILD = """
import logging, os, sys
from agent.shell.systemd import setup_logging
handler = setup_logging("info")  # $INVOCATION_ID is set: we run "under systemd"
print(type(handler).__module__, type(handler).__name__, file=sys.stderr)
log = logging.getLogger("agent.checks")
log.warning(
    "origin %s is %s", "shop", "down",
    extra={"ORIGIN": "shop", "VERDICT": "down", "TEST_RUN": os.environ["TEST_RUN"]},
)
log.debug("below the level", extra={"TEST_RUN": os.environ["TEST_RUN"]})
"""


def test_journal_fields_reach_a_real_journald(tmp_path: Path) -> None:
    """The agent's records land in journald with their fields (read back with journalctl).

    This machine's journald may not run (a container without systemd as PID 1), and the
    host's journal is not ours to write test entries into: the test starts its own
    systemd-journald in a private mount namespace (root, util-linux's unshare).
    """
    _systemd_python()
    journald = Path("/lib/systemd/systemd-journald")
    unshare = shutil.which("unshare")
    require(journald.exists() and shutil.which("journalctl") is not None, "systemd (journald)")
    require(unshare is not None, "unshare (util-linux)")
    require(os.geteuid() == 0, "root, to mount tmpfs over /run in a private mount namespace")
    assert unshare is not None
    (tmp_path / "journald.sh").write_text(_JOURNALD_SCRIPT)
    (tmp_path / "child.py").write_text(_JOURNAL_CHILD)
    run_id = uuid.uuid4().hex
    env = {
        **os.environ,
        "JOURNALD": str(journald),
        "PYTHON": sys.executable,
        "CHILD": str(tmp_path / "child.py"),
        "TEST_RUN": run_id,
        "INVOCATION_ID": uuid.uuid4().hex,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "SYSTEMD_PAGER": "",
    }
    env.pop("JOURNAL_STREAM", None)
    r = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", str(tmp_path / "journald.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "systemd.journal JournalHandler" in r.stderr
    [entry] = [json.loads(line) for line in r.stdout.splitlines()]
    assert entry["MESSAGE"] == "origin shop is down"
    assert entry["PRIORITY"] == "4"
    assert entry["SYSLOG_IDENTIFIER"] == "edge-agent"
    assert entry["ORIGIN"] == "shop"
    assert entry["VERDICT"] == "down"
    assert entry["LOGGER"] == "agent.checks"
    assert entry["_TRANSPORT"] == "journal"  # the native protocol, not a stream line
    # The record's own attributes (msg, args, levelname, ...) are not journal fields.
    assert not [k for k in entry if k.islower()], entry


def test_syslog_priorities() -> None:
    assert [sd.syslog_priority(lv) for lv in (5, 10, 20, 25, 30, 40, 50)] == [7, 7, 6, 6, 4, 3, 2]


def test_a_watchdog_kill_leaves_every_threads_stack_on_stderr(
    agent_process: Callable[..., AgentProcess],
) -> None:
    """systemd's watchdog ends a stuck agent with SIGABRT (WatchdogSignal=). The agent runs
    with faulthandler on, so before it dies it writes each thread's Python stack to stderr,
    which under systemd is the journal: the kill then says what the event loop was doing."""
    import resource

    a = agent_process()

    def no_core() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    a.proc = subprocess.Popen(
        [sys.executable, "-m", "agent.shell.cli", "run", "--config", str(a.config)],
        env=a.env,
        stdout=subprocess.DEVNULL,
        stderr=a.stderr_path.open("wb"),
        cwd=a.tmp,
        preexec_fn=no_core,
    )
    a.wait_notify("READY=1", timeout=30)
    a.signal(signal.SIGABRT)
    assert a.proc.wait(10) == -signal.SIGABRT
    err = a.stderr()
    assert "Fatal Python error: Aborted" in err, err
    # the main thread's stack, down to the event loop's wait for work
    main = err.partition("(most recent call first):")[2]
    assert "asyncio/base_events.py" in main and "run_forever" in main, err
    assert "agent/shell/cli.py" in main and "cmd_run" in main, err
