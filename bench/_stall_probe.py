"""Measures an agent's event-loop stalls from inside its process (bench/budget.py loads it
before the agent starts, as bench/wakeups.py loads _wakeup_probe.py).

A stall is time in which the loop could not react to anything. Two measures:

* timer lateness: every timer callback's delay past its due time when it ran
  (``loop.time() - when``; from when it was armed, for a timer armed for a time
  already past). What the node owes on time (the watchdog ping, the answer to
  a gossip probe, a check's start and timeout) waits on the loop the same way, so a timer
  S late means nothing could be handled for S: callbacks ahead of it in the pass, or the
  process not running at all (its cgroup's CPU quota spent, the host's cores busy).
* busy passes: the wall time from a pass's first callback to the end of its last, with
  the callback that took longest in it: what to profile when the loop stalls.

Kept per wall-clock second (the largest of each), so the bench can take its window; every
stall over EA_STALL_RECORD seconds (default 0.1) is also kept with its time and cause
(the first 5,000 since the last SIGUSR2: the bench sends one as its window starts, so
those are the window's). Written as JSON to EA_STALL_OUT at exit (the agent exits on SIGTERM).
Its cost: two clock reads per callback, well under 1 % of a node's CPU.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import threading
import time
import weakref
from asyncio import base_events, events
from typing import Any

_OUT = os.environ.get("EA_STALL_OUT", "")
_RECORD = float(os.environ.get("EA_STALL_RECORD", "0.1"))
_KEEP = 5000
_MAIN = threading.get_ident()  # the agent's loop runs in the main thread

late_by_second: dict[int, float] = {}  # int(time.time()) -> the latest timer in it, s
busy_by_second: dict[int, float] = {}  # int(time.time()) -> the longest pass in it, s
stalls: list[dict[str, Any]] = []  # {"t", "kind": "late"|"busy", "s", "cause"}
timers = [0]
passes = [0]

# timers armed for a time already past (a deadline computed earlier): late from when armed
_armed_past: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

_pass_start: list[float | None] = [None]
_longest: list[float] = [0.0]
_longest_cb: list[Any] = [None]


def describe(cb: Any) -> str:
    """A readable name for a loop callback: a task's innermost coroutine, else the function."""
    owner = getattr(cb, "__self__", None)
    get_coro = getattr(owner, "get_coro", None)
    if get_coro is not None:
        coro, names = get_coro(), []
        while coro is not None:
            code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
            if code is None:
                break
            names.append(f"{code.co_filename.rsplit('/', 2)[-2]}/{code.co_qualname}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        return "task " + (" > ".join(names[-3:]) if names else "?")
    fn = getattr(cb, "__func__", getattr(cb, "func", cb))
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{getattr(fn, '__module__', None) or '?'}:{name}"


def _keep(kind: str, seconds: float, cause: str) -> None:
    if seconds >= _RECORD and len(stalls) < _KEEP:
        stalls.append({"t": time.time(), "kind": kind, "s": seconds, "cause": cause})


_orig_run_once = base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]
_orig_call_at = base_events.BaseEventLoop.call_at
_orig_handle_run = events.Handle._run


def _call_at(self: Any, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
    handle = _orig_call_at(self, when, callback, *args, context=context)
    if threading.get_ident() == _MAIN:
        now = self.time()
        if when < now:
            _armed_past[handle] = now
    return handle


def _run_once(self: Any) -> None:
    if threading.get_ident() != _MAIN:
        _orig_run_once(self)
        return
    _pass_start[0] = None
    _longest[0] = 0.0
    _longest_cb[0] = None
    _orig_run_once(self)
    start = _pass_start[0]
    if start is None:
        return
    passes[0] += 1
    busy = time.monotonic() - start
    sec = int(time.time())
    if busy > busy_by_second.get(sec, 0.0):
        busy_by_second[sec] = busy
    if busy >= _RECORD:
        cause = describe(_longest_cb[0])
        _keep("busy", busy, f"{cause} ({_longest[0] * 1000:.0f} ms of it)")


def _is_timer(handle: Any) -> bool:
    """A function, not isinstance() inline, so the handle stays untyped (its private fields)."""
    return isinstance(handle, events.TimerHandle)


def _handle_run(self: Any) -> None:
    if threading.get_ident() != _MAIN:
        _orig_handle_run(self)
        return
    t0 = time.monotonic()
    if _pass_start[0] is None:
        _pass_start[0] = t0
    if _is_timer(self):
        due = _armed_past.pop(self, None)
        late = self._loop.time() - (self._when if due is None else due)
        timers[0] += 1
        sec = int(time.time())
        if late > late_by_second.get(sec, 0.0):
            late_by_second[sec] = late
        if late >= _RECORD:
            _keep("late", late, describe(self._callback))
    try:
        _orig_handle_run(self)
    finally:
        took = time.monotonic() - t0
        if took > _longest[0]:
            _longest[0] = took
            _longest_cb[0] = self._callback


def _window_starts(signum: int, frame: Any) -> None:
    stalls.clear()


def _dump() -> None:
    if not _OUT:
        return
    out = {
        "late_by_second": late_by_second,
        "busy_by_second": busy_by_second,
        "stalls": stalls,
        "timers": timers[0],
        "passes": passes[0],
        "record_s": _RECORD,
    }
    tmp = f"{_OUT}.tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, _OUT)


base_events.BaseEventLoop._run_once = _run_once  # type: ignore[attr-defined]
base_events.BaseEventLoop.call_at = _call_at  # type: ignore[method-assign,assignment]
events.Handle._run = _handle_run  # type: ignore[method-assign]
signal.signal(signal.SIGUSR2, _window_starts)
atexit.register(_dump)
