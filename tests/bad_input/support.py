"""Shared by the bad-input tables: running the CLI, and reading the agent's counter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def cli(*args: str, cwd: Path | None = None, timeout: float = 20.0) -> tuple[int, str, str]:
    """`edge-agent ARGS` as a real subprocess of this worktree's code: (rc, stdout, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EDGE_AGENT_CONFIG", None)
    p = subprocess.run(
        [sys.executable, "-m", "agent.shell.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    return p.returncode, p.stdout, p.stderr


def bad_input_count(metrics_text: str, source: str, kind: str) -> float:
    """edge_agent_bad_input_total{source, kind} in a /metrics page (0 when absent)."""
    pat = re.compile(
        r'^edge_agent_bad_input_total\{kind="'
        + re.escape(kind)
        + r'",source="'
        + re.escape(source)
        + r'"\} (\S+)$',
        re.M,
    )
    m = pat.search(metrics_text)
    return float(m.group(1)) if m else 0.0
