"""Counts an agent's event-loop wakeups by source (bench/wakeups.py imports it into the
agent's process before the agent starts).

A wakeup is one pass of the loop (`BaseEventLoop._run_once`: one `epoll_wait`). Each pass
is charged to the first callback it runs (what woke the loop: a timer, a datagram, a
task made ready by the pass before); every callback run is counted too, with the CPU
time it took. A pass that found callbacks already ready (left by the pass before) polls
with a zero timeout: those are counted apart, as the issue's strace showed them.

Counting starts EA_WAKEUP_WARMUP seconds after import and stops EA_WAKEUP_SECONDS later
(else at exit), so a shutdown's own wakeups (the leave's polling) are not charged to an
idle node; the counts are written as JSON to EA_WAKEUP_OUT at exit (the agent exits on
SIGTERM). With EA_WAKEUP_PROFILE set, the same window runs under cProfile (the loop's
thread) and its stats are dumped to that file: it inflates CPU more than the counting.
"""

from __future__ import annotations

import atexit
import collections
import cProfile
import functools
import json
import os
import time
from asyncio import base_events, events
from typing import Any

_T0 = time.monotonic() + float(os.environ.get("EA_WAKEUP_WARMUP", "10"))
_T1 = _T0 + float(os.environ.get("EA_WAKEUP_SECONDS", "inf"))
_OUT = os.environ.get("EA_WAKEUP_OUT", "")
_PROFILE = os.environ.get("EA_WAKEUP_PROFILE", "")
_profiler: list[cProfile.Profile] = []
_ended = [0.0]

passes = [0]
zero = [0]
idle_passes = [0]  # passes that ran nothing (a timer that was cancelled, a spurious wake)
wakers: collections.Counter[str] = collections.Counter()
runs: collections.Counter[str] = collections.Counter()
cpu: dict[str, float] = collections.defaultdict(float)
_first: list[str | None] = [None]
_started = [0.0]


def describe(cb: Any) -> str:
    """A readable name for a loop callback: a task's coroutine, else the function."""
    owner = getattr(cb, "__self__", None)
    get_coro = getattr(owner, "get_coro", None)
    if get_coro is not None:
        return "task " + _innermost(get_coro())
    if isinstance(cb, functools.partial):
        return f"partial {describe(cb.func)}"
    fn = getattr(cb, "__func__", cb)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    module = getattr(fn, "__module__", None) or "?"
    if owner is not None and not isinstance(owner, type):
        name = f"{type(owner).__qualname__}.{getattr(fn, '__name__', name)}"
    return f"{module}:{name}"


def _innermost(coro: Any) -> str:
    """The deepest coroutine of the agent's own code the task was waiting in (a supervised
    task's own loop, not the supervisor that awaits it)."""
    names: list[str] = []
    while coro is not None:
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is None:
            break
        path = code.co_filename.rsplit("/", 2)
        names.append(
            ("agent " if "/agent/" in code.co_filename else "")
            + f"{'/'.join(path[-2:])}:{code.co_qualname}"
        )
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    ours = [n for n in names if n.startswith("agent ")]
    return (ours[-1][6:] if ours else names[-1]) if names else "?"


_orig_run_once = base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]
_orig_handle_run = events.Handle._run


def _counting() -> bool:
    now = time.monotonic()
    if now < _T0:
        return False
    if now < _T1:
        return True
    if not _ended[0]:
        _ended[0] = now
        if _profiler:
            _profiler[0].disable()
    return False


def _run_once(self: Any) -> None:
    counting = _counting()
    if counting:
        if not _started[0]:
            _started[0] = time.monotonic()
            if _PROFILE:
                # CPU time, not wall time: on a busy machine the wall clock charges
                # other processes' turns to whatever this one was running
                _profiler.append(cProfile.Profile(time.thread_time))
                _profiler[0].enable()
        passes[0] += 1
        if self._ready:
            zero[0] += 1
    _first[0] = None
    _orig_run_once(self)
    if counting:
        if _first[0] is None:
            idle_passes[0] += 1
        else:
            wakers[_first[0]] += 1


def _handle_run(self: Any) -> None:
    if not _counting():
        _orig_handle_run(self)
        return
    name = describe(self._callback)
    if _first[0] is None:
        _first[0] = name
    runs[name] += 1
    t = time.thread_time()
    try:
        _orig_handle_run(self)
    finally:
        cpu[name] += time.thread_time() - t


def _dump() -> None:
    if not _OUT:
        return
    end = _ended[0] or time.monotonic()
    seconds = end - _started[0] if _started[0] else 0.0
    if _profiler:
        _profiler[0].disable()
        _profiler[0].dump_stats(_PROFILE)
    out = {
        "seconds": seconds,
        "passes": passes[0],
        "zero_timeout": zero[0],
        "idle_passes": idle_passes[0],
        "wakers": dict(wakers),
        "runs": dict(runs),
        "cpu": dict(cpu),
    }
    with open(_OUT, "w") as f:
        json.dump(out, f)


base_events.BaseEventLoop._run_once = _run_once  # type: ignore[attr-defined]
events.Handle._run = _handle_run  # type: ignore[method-assign]
atexit.register(_dump)
