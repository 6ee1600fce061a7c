"""The benchmarks' CPU accounting (bench/_common.py): an idle node uses ~1 ms a second,
so a window's figure must not be rounded to the kernel's 10 ms tick."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _common import cpu_sample, cpu_used


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_used_resolves_less_than_a_tick() -> None:
    """3 ms in a thread that stays and 3 ms in the main thread: 6 ms, not 0 or 10."""
    pid = os.getpid()
    go, done = threading.Event(), threading.Event()

    def worker() -> None:
        go.wait()
        burn(0.003)
        done.set()
        time.sleep(1)  # still alive at the second sample

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    a = cpu_sample(pid)
    go.set()
    burn(0.003)
    assert done.wait(5)
    b = cpu_sample(pid)
    assert 0.006 <= cpu_used(a, b) < 0.009


def test_a_thread_that_ended_is_not_lost_beyond_a_tick() -> None:
    """A thread that ran 50 ms and ended between the samples: the tick count keeps it."""
    pid = os.getpid()
    a = cpu_sample(pid)
    t = threading.Thread(target=burn, args=(0.05,))
    t.start()
    t.join()
    b = cpu_sample(pid)
    assert 0.03 <= cpu_used(a, b) < 0.07
