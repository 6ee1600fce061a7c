"""Small helpers the benchmarks share: child processes stopped by PID, and /proc readings.

A ProcSet starts children in their own session (so Ctrl-C reaches only us) and, when it
closes, stops every one still running by its PID: SIGTERM, a short wait, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType

from _common import (  # the constants and /proc readings every benchmark shares
    CLK_TCK,
    EDGE_AGENT,
    LOOPBACK,
    MIB,
    REPO,
    VENV_BIN,
    HarnessError,
    cpu_seconds,
    status_kib,
    stop_process,
    tail,
)

__all__ = [
    "CLK_TCK",
    "EDGE_AGENT",
    "LOOPBACK",
    "MIB",
    "REPO",
    "VENV_BIN",
    "HarnessError",
    "ProcSet",
    "cpu_seconds",
    "free_ports",
    "rss_mib",
    "scan_log",
    "status_kib",
    "tail",
    "tcp_listening",
]


def rss_mib(pid: int) -> float:
    return status_kib(pid)["VmRSS"] * 1024 / MIB


def tcp_listening(port: int, host: str = LOOPBACK) -> bool:
    """Whether some socket LISTENs on host:port (IPv4), from /proc/net/tcp; sends nothing."""
    want = f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"
    any_addr = f"00000000:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "0A" and parts[1] in (want, any_addr):
                return True
    return False


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Distinct ports free for both TCP and UDP on host right now."""
    out: list[int] = []
    held: list[socket.socket] = []
    try:
        for _ in range(count * 20):
            if len(out) == count:
                break
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind((host, 0))
            held.append(t)
            port = int(t.getsockname()[1])
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind((host, port))
            except OSError:
                u.close()
                continue
            held.append(u)
            out.append(port)
    finally:
        for s in held:
            s.close()
    if len(out) != count:
        raise HarnessError(f"could not find {count} free ports")
    return out


# --- child processes ------------------------------------------------------------------------


class ProcSet:
    """Starts child processes and guarantees they are stopped, by PID, when it closes."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self._old_term: object = None

    def __enter__(self) -> ProcSet:
        def on_term(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        self._old_term = signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)  # type: ignore[arg-type]

    def close(self) -> None:
        procs, self.procs = list(self.procs), []
        for p in procs:  # SIGTERM all first, so they stop in parallel
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(10)

    def start(self, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Start argv with stdout and stderr appended to log."""
        with open(log, "ab") as logf:
            p = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                cwd=REPO,
                start_new_session=True,
            )
        self.procs.append(p)
        return p

    def stop_many(self, procs: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
        """SIGTERM them all at once, wait, SIGKILL any still running."""
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(10)
            if p in self.procs:
                self.procs.remove(p)

    def kill9(self, p: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        if p in self.procs:
            self.procs.remove(p)

    def stop(self, p: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL; the exit code (None if it had to be killed)."""
        code = stop_process(p, timeout)
        if p in self.procs:
            self.procs.remove(p)
        return code


def scan_log(path: Path, patterns: Sequence[str] = ("Traceback",)) -> list[str]:
    """Lines of a log matching any pattern, each with the 6 lines that follow it."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for i, line in enumerate(lines):
        if any(p in line for p in patterns):
            out.append("\n".join(lines[i : i + 7]))
    return out
