"""Real HAProxy processes for tests/lb and bench/lb.py: `haproxy -f CFG -db` as a child,
stopped by its PID, with its own config file, ports and stats socket, so it never
touches (or depends on) a system HAProxy.

The config is the caller's sections (frontends, backends) after a ``global`` and
``defaults`` written here: a stats socket in a private directory (``show stat``, ``show
servers state`` for diagnostics and for reading a server's state), one thread, and HTTP
mode with short timeouts. HAProxy's own warnings (a server going down or up, with the
agent's description) go to its stderr, kept in ``log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from edge_harness.children import stop_child

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

GLOBAL = """\
global
    stats socket {sock} mode 600 level admin
    stats timeout 10s
    nbthread 1
    maxconn {maxconn}

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 2s
"""


def parse_stat(text: str, backend: str) -> dict[str, dict[str, str]]:
    """``show stat``'s CSV: the rows of ``backend``'s servers, by server name. A check
    under way is shown as ``* L4CON`` (the last result, marked): the mark is dropped
    from check_status and agent_status, so a reader sees the last result either way."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    out = {}
    for r in rows:
        if r.get("pxname") != backend:
            continue
        for key in ("check_status", "agent_status"):
            r[key] = (r.get(key) or "").removeprefix("* ")
        out[r["svname"]] = r
    return out


class HAProxyError(RuntimeError):
    """HAProxy refused its config, exited, or did not answer on its stats socket."""


def available() -> bool:
    return os.access(HAPROXY, os.X_OK)


def version() -> str:
    """``haproxy -v``'s first line."""
    out = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True, timeout=10)
    return out.stdout.splitlines()[0] if out.stdout else out.stderr.strip()


def check_config(text: str, directory: Path) -> tuple[bool, str]:
    """Whether HAProxy accepts ``text`` (sections after the global ones), and what it
    said (``haproxy -c``)."""
    hap = HAProxy(directory, text)
    hap.cfg.write_text(hap.config_text())
    try:
        out = subprocess.run(
            [HAPROXY, "-c", "-f", str(hap.cfg)], capture_output=True, text=True, timeout=30
        )
    finally:
        hap.cleanup()
    return out.returncode == 0, (out.stdout + out.stderr).strip()


class HAProxy:
    """One haproxy process: ``start()``, ``command()`` on its stats socket, ``stop()``."""

    def __init__(self, directory: Path, sections: str, *, maxconn: int = 4096) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.sections = sections
        self.maxconn = maxconn
        self.cfg = directory / "haproxy.cfg"
        self.log = directory / "haproxy.log"
        # a short private directory: a unix socket's path is limited to 107 bytes
        self._sockdir = Path(tempfile.mkdtemp(prefix="ea-haproxy-"))
        self.sock = self._sockdir / "admin.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        return GLOBAL.format(sock=self.sock, maxconn=self.maxconn) + "\n" + self.sections

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> HAProxy:
        """Start it and return once its stats socket answers; HAProxyError if it
        refuses the config or exits."""
        self.cfg.write_text(self.config_text())
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [HAPROXY, "-f", str(self.cfg), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,  # a Ctrl-C reaches the test or bench only
            )
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.check_alive()
                with contextlib.suppress(OSError):
                    if "Name: HAProxy" in self.command("show info"):
                        return self
                if time.monotonic() > deadline:
                    raise HAProxyError(
                        f"haproxy: no stats socket after {timeout:.0f} s\n{self.tail()}"
                    )
                time.sleep(0.05)
        except BaseException:
            self.stop()  # not left running, nor its socket directory
            raise

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise HAProxyError(f"haproxy exited with {self.proc.returncode}:\n{self.tail()}")

    def command(self, cmd: str, timeout: float = 5.0) -> str:
        """One command on the stats socket; its whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.sock))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    async def acommand(self, cmd: str, timeout: float = 5.0) -> str:
        """``command`` for an event loop (which must not block on a socket)."""

        async def ask() -> str:
            reader, writer = await asyncio.open_unix_connection(str(self.sock))
            try:
                writer.write(cmd.encode() + b"\n")
                return (await reader.read()).decode(errors="replace")
            finally:
                writer.close()

        return await asyncio.wait_for(ask(), timeout)

    def stat(self, backend: str, sid: int | str = -1) -> dict[str, dict[str, str]]:
        """``show stat``'s rows of ``backend``'s servers (or the one whose id is ``sid``,
        the rows' "sid"), by server name (status, check_status, agent_status, last_chk,
        last_agt, ...)."""
        return parse_stat(self.command(f"show stat {backend} 4 {sid}"), backend)

    async def astat(self, backend: str, sid: int | str = -1) -> dict[str, dict[str, str]]:
        return parse_stat(await self.acommand(f"show stat {backend} 4 {sid}"), backend)

    def statuses(self, backend: str) -> dict[str, str]:
        """Each server's status: ``UP``, ``DOWN``, ``DOWN (agent)``, ``MAINT``, ..."""
        return {name: r["status"] for name, r in self.stat(backend).items()}

    def diagnostics(self, backend: str) -> str:
        """What HAProxy thinks of the backend's servers, for a failure message."""
        try:
            rows = self.stat(backend)
            state = self.command(f"show servers state {backend}").strip()
        except OSError as e:
            return f"(stats socket: {e})\n{self.tail()}"
        keys = ("status", "check_status", "last_chk", "agent_status", "last_agt", "stot")
        lines = [
            f"  {n}: " + ", ".join(f"{k}={r.get(k, '')!r}" for k in keys) for n, r in rows.items()
        ]
        return "\n".join(["show stat:", *lines, "show servers state:", state, self.tail()])

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no haproxy log)"
        return "haproxy log:\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (then SIGKILL) by PID; safe to call twice."""
        stop_child(self.proc, timeout)
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self._sockdir, ignore_errors=True)
