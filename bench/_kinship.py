"""kinship as a third column of bench/membership.py: its own venv, its node's argv, its view.

kinship (PyPI, a SWIM node with Lifeguard in Rust for asyncio Python) is a peer measured
beside edge-agent and serf, never a dependency of the project: it lives in
bench/.venv-kinship, which ensure_venv() makes on first use (the same base interpreter as
the running Python, then `pip install kinship==0.4.0` through pip as configured here). Each
node is bench/_kinship_node.py run by that venv's Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from _procs import LOOPBACK, HarnessError

VERSION = "0.4.0"
BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-kinship"
PYTHON = VENV / "bin" / "python"
NODE = BENCH / "_kinship_node.py"


def installed_version() -> str | None:
    if not PYTHON.exists():
        return None
    res = subprocess.run(
        [str(PYTHON), "-c", "import kinship; print(kinship.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return res.stdout.strip() if res.returncode == 0 else None


def ensure_venv(log: Any = None) -> str:
    """The venv's Python with kinship VERSION importable; makes the venv on first use."""
    if installed_version() == VERSION:
        return str(PYTHON)
    if log is not None:
        log(f"installing kinship=={VERSION} into {VENV} (first use)")
    base = getattr(sys, "_base_executable", sys.executable)  # not the project's venv
    steps = [
        [base, "-m", "venv", str(VENV)],
        [str(PYTHON), "-m", "pip", "install", "--quiet", f"kinship=={VERSION}"],
    ]
    for argv in steps:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise HarnessError(
                f"could not make kinship's venv ({' '.join(argv)}):\n{res.stderr[-2000:]}"
            )
    got = installed_version()
    if got != VERSION:
        raise HarnessError(f"kinship's venv has kinship {got!r}, wanted {VERSION}")
    return str(PYTHON)


def node_argv(
    python: str, name: str, gossip_port: int, ctl_port: int, seed: int | None, key: Path | None
) -> list[str]:
    argv = [python, str(NODE), "--name", name, "--bind", f"{LOOPBACK}:{gossip_port}"]
    argv += ["--ctl-port", str(ctl_port)]
    if seed is not None:
        argv += ["--seed", f"{LOOPBACK}:{seed}"]
    argv += ["--key-file", str(key)] if key is not None else ["--plaintext"]
    return argv


class KinshipCtl:
    """The node program's line protocol on one persistent connection, as SerfRpc for serf."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last: dict[str, Any] = {}  # the whole last answer (event counts, Stats)

    async def _ask(self) -> dict[str, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(*self.addr, limit=1 << 22)
        assert self.reader is not None
        self.writer.write(b"?\n")
        await self.writer.drain()
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("kinship node closed its control connection")
        out: dict[str, Any] = json.loads(line)
        return out

    async def answer(self) -> dict[str, Any]:
        try:
            self.last = await asyncio.wait_for(self._ask(), 5)
        except (OSError, ConnectionError, TimeoutError, ValueError):
            self.close()
            raise
        return self.last

    async def members(self) -> dict[str, str]:
        """name -> state (alive, suspect, dead, left, gone)."""
        view: dict[str, str] = (await self.answer())["view"]
        return view

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self.reader = self.writer = None
