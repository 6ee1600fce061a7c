"""What the real Prometheus and Alertmanager processes of the tests share: a child started
with its own config and data directory, reached over HTTP, stopped by its PID.

A child may run in a fleet host's network namespace (``wrap`` = ``ip netns exec NS``,
which execs the program, so the PID is the program's) and be asked over that
namespace (``get`` = a request from inside it, edge_harness.fleet.ns_http). Configs are
written as JSON, which YAML parsers read as YAML: no YAML library needed.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_harness.children import stop_child

#: a GET of a path on the child's listen address: (status, parsed JSON or text)
Get = Callable[[str], tuple[int, Any]]


class MonitorError(RuntimeError):
    """The program refused its config, exited, or did not become ready."""


def loopback_get(host: str, port: int, timeout: float = 5.0) -> Get:
    """A ``Get`` for a child listening on this namespace's ``host:port``."""

    def get(path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as r:
                body = r.read()
                status = r.status
                ctype = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            body, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
        return status, json.loads(body) if "json" in ctype else body.decode(errors="replace")

    return get


class Child:
    """One monitoring program: ``start()`` (returns once ``/-/ready`` answers 200),
    ``get()``, ``stop()``."""

    name = "child"

    def __init__(
        self,
        directory: Path,
        *,
        listen: tuple[str, int],
        wrap: Sequence[str] = (),
        get: Get | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.listen = listen
        self.wrap = list(wrap)
        self.get: Get = get or loopback_get(*listen)
        self.cfg = directory / f"{self.name}.yml"
        self.log = directory / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def address(self) -> str:
        host, port = self.listen
        return f"{host}:{port}"

    def start(self, timeout: float = 30.0) -> Child:
        self.cfg.write_text(json.dumps(self.config(), indent=2))
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [*self.wrap, *self.argv()],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.check_alive()
                with contextlib.suppress(OSError, ValueError):
                    if self.get("/-/ready")[0] == 200:
                        return self
                if time.monotonic() > deadline:
                    raise MonitorError(
                        f"{self.name}: not ready after {timeout:.0f} s\n{self.tail()}"
                    )
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise MonitorError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return f"(no {self.name} log)"
        return f"{self.name} log:\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (then SIGKILL) by PID; safe to call twice."""
        stop_child(self.proc, timeout)
