"""What the benchmarks share: child processes, /proc readings, the farm, the agent, blackbox.

Everything listens on 127.0.0.1 only. Every process started here is tracked by PID in a
Children object and stopped (SIGTERM, then SIGKILL) when it closes, on errors and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
EDGE_AGENT = str(VENV_BIN / "edge-agent")
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


class HarnessError(Exception):
    """The benchmark could not measure (a process failed to start, crashed, ...)."""


# --- /proc ----------------------------------------------------------------------------------


def compile_agent() -> None:
    """Byte-compile agent/ into its __pycache__, as `pip install` does for a deployed node.

    The repository's venv installs the agent editable; under PYTHONDONTWRITEBYTECODE (set
    in some shells and CI) every `edge-agent` start would then compile each agent module
    from source, which leaves ~0.8 MiB more resident than an installed node has.
    """
    import compileall

    if not compileall.compile_dir(REPO / "agent", quiet=1):
        raise HarnessError("could not byte-compile agent/")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


@dataclass(frozen=True)
class CpuSample:
    """One process's CPU time at one moment: per live thread in ns, and in total in ticks."""

    threads: dict[int, int]  # tid -> run time (ns), /proc/PID/task/TID/schedstat
    ticks: float  # utime + stime (s), /proc/PID/stat: truncated to a tick


def cpu_sample(pid: int) -> CpuSample:
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                threads[int(tid)] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return CpuSample(threads, cpu_seconds(pid))


def cpu_used(a: CpuSample, b: CpuSample) -> float:
    """Seconds of CPU between two samples, to the nanosecond: what each thread alive at
    ``b`` ran since ``a`` (utime + stime is truncated to a 10 ms tick, a third of an idle
    node's figure over 30 s). A thread that ended in between takes its time with it, so
    the tick count bounds the result from below (its own error is under a tick)."""
    fine = sum(ns - a.threads.get(tid, 0) for tid, ns in b.threads.items()) / 1e9
    return max(fine, b.ticks - a.ticks - 1 / CLK_TCK)


def status_kib(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status (VmRSS, VmHWM, ...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0])
    return out


def host_jiffies() -> tuple[int, int, int]:
    """(processes, kernel, total) jiffies of the whole host, from /proc/stat.

    processes = user + nice + system; kernel = irq + softirq + steal (interrupt work,
    such as loopback networking, and time the hypervisor gave to other guests).
    """
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # guest time is already in user
    return v[0] + v[1] + v[2], v[5] + v[6] + v[7], sum(v)


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --- child processes ------------------------------------------------------------------------


class Children:
    """Starts child processes and guarantees they are stopped, by PID, when it closes."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="edge-bench-")
        self.dir = Path(self.tmp.name)

    def __enter__(self) -> Children:
        atexit.register(self._kill_all)  # a last resort, should the unwinding itself fail
        return self

    def _kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for p in list(self.procs):
            self.stop(p)
        atexit.unregister(self._kill_all)
        self.tmp.cleanup()

    def start(
        self, argv: Sequence[str], log: Path, *, stdout_pipe: bool = False
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as logf:
            p = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else logf,
                stderr=logf,
                cwd=REPO,
                start_new_session=True,  # Ctrl-C reaches us; we stop them in order
            )
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, SIGKILL; returns the exit code (None if it had to be killed)."""
        code = stop_process(p, timeout)
        if p.stdout is not None:
            p.stdout.close()
        if p in self.procs:
            self.procs.remove(p)
        return code


def stop_process(p: subprocess.Popen[Any], timeout: float) -> int | None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code (None if killed)."""
    code: int | None = p.poll()
    if code is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
        try:
            code = p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
            code = None
    return code


def run_async_main(main: Coroutine[Any, Any, int]) -> int:
    """Run a benchmark's async main: harness errors and interrupts become exit codes."""
    try:
        return asyncio.run(main)
    except HarnessError as e:
        print(f"harness error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130


def cancel_on_signals() -> None:
    """SIGINT and SIGTERM cancel the calling task, so that every ``with`` and ``finally``
    on the way out runs (a KeyboardInterrupt raised inside the event loop would not)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + x for x in text.splitlines()[-lines:]) or "    (empty log)"


def log_problems(path: Path) -> list[str]:
    """A short account of the ERROR lines and tracebacks in a process's log."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    bad = [x for x in lines if " ERROR " in x or x.startswith("Traceback")]
    downs = sum(" is down " in x for x in lines)
    out = []
    if bad:
        out.append(f"{len(bad)} ERROR/Traceback lines in its log, first: {bad[0].strip()[:200]}")
    if downs:
        out.append(f"the agent logged {downs} 'origin is down' lines (the farm was all up)")
    return out


# --- the farm -------------------------------------------------------------------------------


@dataclass
class FarmProc:
    proc: subprocess.Popen[bytes]
    port: int
    pids: list[int]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)

    def url(self, i: int) -> str:
        return f"http://{LOOPBACK}:{self.port}/o/{i}"


async def start_farm(children: Children, *, count: int, processes: int) -> FarmProc:
    log = children.dir / "farm.log"
    argv = [PYTHON, "-m", "edge_harness.farm", "--host", LOOPBACK, "--count", str(count)]
    argv += ["--processes", str(processes)]
    p = children.start(argv, log, stdout_pipe=True)
    assert p.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 60)
    except TimeoutError:
        raise HarnessError(f"the farm did not start in 60 s:\n{tail(log)}") from None
    m = re.search(rb"port=(\d+) processes=\d+ pids=([\d,]+)", line)
    if not m:
        raise HarnessError(f"the farm did not start: {line!r}\n{tail(log)}")
    return FarmProc(p, int(m.group(1)), [int(x) for x in m.group(2).split(b",")])


# --- edge-agent -----------------------------------------------------------------------------


def duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms}ms" if ms % 1000 else f"{ms // 1000}s"


def write_agent_config(
    path: Path,
    *,
    data_dir: Path,
    api_port: int,
    gossip_port: int,
    targets: Sequence[str],
    interval: float,
    timeout: float = 2.0,
    concurrency: int = 256,
    keyring_file: Path | None = None,
) -> None:
    lines = [
        "[node]",
        'name = "bench"',
        f'data_dir = "{data_dir}"',
        "[cluster]",
        f'bind = "{LOOPBACK}:{gossip_port}"',
        f'advertise = "{LOOPBACK}:{gossip_port}"',
        "discover = false",
        *([f'keyring_file = "{keyring_file}"'] if keyring_file is not None else []),
        "replicas = 1",
        "[api]",
        f'listen = "{LOOPBACK}:{api_port}"',
        "[leds]",
        "enabled = false",
        "[checks]",
        f"concurrency = {concurrency}",
        "[log]",
        'level = "warning"',
    ]
    for i, url in enumerate(targets):
        lines += [
            "[[origin]]",
            f'id = "o{i}"',
            f'url = "{url}"',
            f'interval = "{duration(interval)}"',
            f'timeout = "{duration(timeout)}"',
        ]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class AgentProc:
    proc: subprocess.Popen[bytes]
    api: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise HarnessError(f"edge-agent exited with code {code}:\n{tail(self.log)}")


async def start_agent(
    children: Children,
    session: aiohttp.ClientSession,
    name: str,
    *,
    targets: Sequence[str],
    interval: float,
    timeout: float = 2.0,
    concurrency: int = 256,
    ready_timeout: float = 120.0,
    keyring_file: Path | None = None,
    argv: Sequence[str] = (EDGE_AGENT,),
) -> AgentProc:
    """Start `edge-agent run` on a fresh config and data dir; return once /v1/health is 200.
    ``argv``: what runs `edge-agent` (a bench may load a probe into the process first)."""
    d = children.dir / name
    d.mkdir()
    api_port = free_port()
    cfg = d / "agent.toml"
    write_agent_config(
        cfg,
        data_dir=d / "data",
        api_port=api_port,
        gossip_port=free_port(),
        targets=targets,
        interval=interval,
        timeout=timeout,
        concurrency=concurrency,
        keyring_file=keyring_file,
    )
    log = d / "agent.log"
    p = children.start([*argv, "run", "--config", str(cfg)], log)
    agent = AgentProc(p, f"http://{LOOPBACK}:{api_port}", log)
    deadline = time.monotonic() + ready_timeout
    last = "no answer"
    while True:
        agent.check_alive()
        try:
            async with session.get(f"{agent.api}/v1/health") as r:
                body = await r.text()
                if r.status == 200:
                    return agent
                last = f"{r.status} {body[:200]}"
        except (aiohttp.ClientError, TimeoutError) as e:
            last = repr(e)
        if time.monotonic() > deadline:
            raise HarnessError(
                f"edge-agent not healthy after {ready_timeout:.0f} s (last: {last}):\n{tail(log)}"
            )
        await asyncio.sleep(0.2)


_CHECKS_RE = re.compile(r"^edge_agent_checks_total\{([^}]*)\}\s+(\S+)", re.M)


async def agent_checks(session: aiohttp.ClientSession, agent: AgentProc) -> tuple[float, float]:
    """(all, failed) HTTP checks so far, from edge_agent_checks_total on /metrics."""
    async with session.get(f"{agent.api}/metrics", timeout=aiohttp.ClientTimeout(total=60)) as r:
        if r.status != 200:
            raise HarnessError(f"GET /metrics answered {r.status}")
        text = await r.text()
    total = failed = 0.0
    found = False
    for m in _CHECKS_RE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("kind") != "http":
            continue
        found = True
        total += float(m.group(2))
        if labels.get("result") != "ok":
            failed += float(m.group(2))
    if not found and "edge_agent_checks" not in text:
        raise HarnessError("/metrics has no edge_agent_checks_total counter")
    return total, failed


# --- prometheus-blackbox-exporter -----------------------------------------------------------

BLACKBOX_CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: {timeout}
    http:
      valid_status_codes: [200]
      preferred_ip_protocol: ip4
"""


@dataclass
class BlackboxProc:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise HarnessError(f"blackbox exporter exited with code {code}:\n{tail(self.log)}")

    def probe_load(self, targets: Sequence[str], *, rate: float, concurrency: int) -> ProbeLoad:
        """A load generator asking this exporter to probe ``targets`` round-robin."""
        paths = [f"/probe?module=http_2xx&target={quote(t, safe='')}" for t in targets]
        return ProbeLoad(LOOPBACK, self.port, paths, rate=rate, concurrency=concurrency)


async def start_blackbox(
    children: Children, session: aiohttp.ClientSession, name: str, *, timeout: float = 2.0
) -> BlackboxProc:
    d = children.dir / name
    d.mkdir()
    cfg = d / "blackbox.yml"
    cfg.write_text(BLACKBOX_CONFIG.format(timeout=duration(timeout)))
    port = free_port()
    log = d / "blackbox.log"
    argv = [BLACKBOX, f"--config.file={cfg}", f"--web.listen-address={LOOPBACK}:{port}"]
    argv.append("--log.level=warn")
    p = children.start(argv, log)
    bb = BlackboxProc(p, port, log)
    deadline = time.monotonic() + 30
    while True:
        bb.check_alive()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{bb.base}/-/healthy") as r:
                if r.status == 200:
                    return bb
        if time.monotonic() > deadline:
            raise HarnessError(f"blackbox exporter not healthy after 30 s:\n{tail(log)}")
        await asyncio.sleep(0.1)


class _HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends one request at a time.

    Just enough HTTP for blackbox's answers (chunked or Content-Length): far less work
    per request than a general client, so the generator takes less of the shared cores.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.head_end = -1  # offset of the blank line ending the headers, once seen
        self.length = -1  # the whole response's length if known, -1 if chunked
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.head_end < 0:
            self.head_end = buf.find(b"\r\n\r\n")
            if self.head_end < 0:
                return
            head = bytes(buf[: self.head_end]).lower()
            m = re.search(rb"content-length: *(\d+)", head)
            if m and b"transfer-encoding: chunked" not in head:
                self.length = self.head_end + 4 + int(m.group(1))
        done = len(buf) >= self.length if self.length >= 0 else buf.endswith(b"\r\n0\r\n\r\n")
        w = self.waiter
        if done and w is not None and not w.done():
            w.set_result(bytes(buf))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionError(f"connection lost: {exc}"))

    def request(self, data: bytes) -> asyncio.Future[bytes]:
        assert self.transport is not None
        self.buf.clear()
        self.head_end = self.length = -1
        self.waiter = w = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return w


def _body(response: bytes) -> bytes:
    """The body of a complete response, de-chunked if it was sent in chunks."""
    end = response.find(b"\r\n\r\n")
    head, rest = response[:end].lower(), response[end + 4 :]
    if b"transfer-encoding: chunked" not in head:
        return rest
    out: list[bytes] = []
    pos = 0
    while True:
        eol = rest.index(b"\r\n", pos)
        size = int(rest[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(rest[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2


def _expire(fut: asyncio.Future[bytes]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("no answer in 10 s"))


class ProbeLoad:
    """Asks blackbox for probes the way Prometheus would, at a fixed rate, round-robin.

    ``concurrency`` workers share the schedule: worker w sends probes w, w+C, w+2C, ...,
    probe k being due at start + k/rate. A worker that falls behind sends without
    waiting, so at most ``concurrency`` probes are in flight, like the agent's bound.
    Kept as light as it can be: one keep-alive connection per worker, requests encoded
    once, a minimal HTTP/1.1 reader (about half the CPU per request of aiohttp's client).
    """

    def __init__(
        self, host: str, port: int, paths: Sequence[str], *, rate: float, concurrency: int
    ) -> None:
        self.host, self.port = host, port
        self.requests = [
            (
                f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n"
            ).encode()
            for p in paths
        ]
        self.rate = rate
        self.concurrency = concurrency
        self.ok = 0
        self.failed = 0
        self.errors = 0
        self.last_error = ""

    @property
    def done(self) -> int:
        return self.ok + self.failed

    async def run(self, stop: asyncio.Event) -> None:
        start = asyncio.get_running_loop().time() + 0.05
        await asyncio.gather(*(self._worker(w, start, stop) for w in range(self.concurrency)))

    async def _worker(self, w: int, start: float, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        reqs, n, step, rate = self.requests, len(self.requests), self.concurrency, self.rate
        conn: _HttpConn | None = None
        k = w
        try:
            while not stop.is_set():
                delay = start + k / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                    if stop.is_set():
                        return
                try:
                    if conn is None or conn.closed:
                        _, conn = await loop.create_connection(_HttpConn, self.host, self.port)
                    fut = conn.request(reqs[k % n])
                    timer = loop.call_later(10, _expire, fut)
                    try:
                        body = await fut
                    finally:
                        timer.cancel()
                    if body.startswith(b"HTTP/1.1 200") and b"\nprobe_success 1\n" in _body(body):
                        self.ok += 1
                    else:
                        self.failed += 1
                except (OSError, TimeoutError) as e:  # ConnectionError is an OSError
                    self.errors += 1
                    self.last_error = repr(e)
                    if conn is not None and conn.transport is not None:
                        conn.transport.close()
                    conn = None
                k += step
        finally:
            if conn is not None and conn.transport is not None:
                conn.transport.close()
