"""Stopping a child program the harness started (HAProxy, Prometheus, Alertmanager)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_child(p: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``, by PID; a child already gone (or None) is
    left alone, so it is safe to call twice."""
    if p is None or p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
