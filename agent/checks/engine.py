"""The check engine: runs every origin's probes on schedule, within one concurrency bound.

It is the thin asyncio shell around ``state.OriginState``: one scheduler task walks a
heap of due times and starts a short-lived task per probe, so 10,000 origins cost
10,000 heap entries, not 10,000 sleeping tasks and timers. A global bound (equal to
the HTTP connector's limit) caps probes in flight; when it is reached the scheduler
waits and the delay shows up as check lag instead of as thousands of sockets.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from agent.domain import OriginSpec

from .check_metrics import CheckMetrics, Figures, OriginGauges
from .probes import make_session, probe
from .state import OriginState, ProbeResult, Status, Transition, initial_delay

log = logging.getLogger(__name__)

#: Probes due within this much of each other start together, one scheduler wake-up.
COALESCE = 0.002
#: Distinct internal errors logged with a traceback; later ones are logged briefly.
_TRACEBACKS_MAX = 64
#: A failed probe that ended this long past its timeout (or a quarter of the timeout, if
#: more) was not cut off by its timer on time: this node's event loop was stalled (a long
#: callback, a full garbage collection, a starved CPU) while the answer may have been
#: waiting unread. Such a failure says nothing about the origin: it is not recorded, and
#: the check runs again soon. Counting it would turn one node's overload into false
#: "down" observations, whose replication loads every node further.
STALL_GRACE = 0.5
#: stalled results in a row that are retried; the next one counts as the failure it
#: looks like, so a node that stays stalled still reports (issue 19's vantage health
#: judges such a node).
STALL_RETRIES = 2


class ProbeFn(Protocol):
    def __call__(
        self,
        session: aiohttp.ClientSession,
        spec: OriginSpec,
        *,
        clock: Callable[[], float],
    ) -> Awaitable[ProbeResult]: ...


@dataclass(frozen=True, slots=True)
class OriginView:
    """A read-only snapshot of one origin's check state (for the API and the dashboard)."""

    spec: OriginSpec
    status: Status
    last: ProbeResult | None
    successes: int  # consecutive
    failures: int  # consecutive
    since: float | None  # engine clock (loop.time()) of the last status change
    tls_expiry_days: float | None


class _Entry:
    """One scheduled origin. ``gen`` changes whenever the entry is rescheduled, changed or
    removed, so stale heap items and late results from cancelled probes are ignored."""

    __slots__ = ("gauges", "gen", "pending", "spec", "stalls", "state", "task")

    def __init__(self, spec: OriginSpec) -> None:
        self.spec = spec
        self.state = OriginState.for_spec(spec)
        self.gen = 0
        self.task: asyncio.Task[None] | None = None
        self.pending: float | None = None  # delay to apply at start(), if set before it
        self.gauges = OriginGauges()
        self.stalls = 0  # stalled results in a row (see STALL_GRACE)


class Alarm:
    """The scheduler's one wake-up: a deadline, or an earlier ``ring`` (a sooner origin,
    a freed slot). ``until`` tells callers whether the sleeper would look too late."""

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None
        self.until = float("-inf")  # awake: no one needs to ring

    def ring(self) -> None:
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def sleep(self, loop: asyncio.AbstractEventLoop, until: float | None) -> None:
        """Wait until ``until`` (None: indefinitely) or an earlier ``ring``."""
        self._fut = fut = loop.create_future()
        self.until = float("inf") if until is None else until
        handle = None if until is None else loop.call_at(until, self.ring)
        try:
            await fut
        finally:
            self._fut = None
            self.until = float("-inf")
            if handle is not None:
                handle.cancel()


class CheckEngine:
    """Schedules and runs probes for a changing set of origins.

    ``on_transition`` is called for every status change, ``on_result`` for every probe;
    both run on the event loop and must not block. An exception in a probe (a bug) is
    logged and recorded as a failed probe with reason "internal error: ..."; an
    exception in a callback is logged; neither stops the engine.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = 256,
        metrics: Figures | None = None,
        on_transition: Callable[[Transition], None] | None = None,
        on_result: Callable[[str, ProbeResult], None] | None = None,
        seed: int | None = None,
        user_agent: str = "edge-agent",
        keepalive_timeout: float = 15.0,
        probe_fn: ProbeFn = probe,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._session = session
        self._owns_session = session is None
        self._concurrency = concurrency
        self._metrics = CheckMetrics(metrics)
        self._on_transition = on_transition
        self._on_result = on_result
        self._rng = random.Random(seed)
        self._user_agent = user_agent
        self._keepalive_timeout = keepalive_timeout
        self._probe = probe_fn

        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, _Entry, int]] = []
        self._seq = itertools.count()
        self._running = 0
        self.stalled = 0  # results not recorded because this node was stalled
        self.late = 0  # probes started more than one interval late (missed deadlines)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._alarm = Alarm()
        self._waiting_slot = False
        self._stopped = False
        self._logged_errors: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # every probe task not yet finished

        self._counts = dict.fromkeys(Status, 0)  # origins by status, kept incrementally

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def session(self) -> aiohttp.ClientSession | None:
        return self._session

    async def start(self) -> None:
        """Open the session (if the engine owns it) and start the scheduler."""
        if self._loop is not None or self._stopped:
            raise RuntimeError("a CheckEngine starts once, and not after stop()")
        self._loop = loop = asyncio.get_running_loop()
        if self._session is None:
            self._session = make_session(
                concurrency=self._concurrency,
                user_agent=self._user_agent,
                keepalive_timeout=self._keepalive_timeout,
            )
        else:
            limit = self._session.connector.limit if self._session.connector else 0
            if 0 < limit < self._concurrency:
                log.warning(
                    "check concurrency %d exceeds the session's connection limit %d; using %d",
                    self._concurrency,
                    limit,
                    limit,
                )
                self._concurrency = limit
        now = loop.time()
        for entry in self._entries.values():
            if entry.pending is not None:
                self._schedule(entry, now + entry.pending)
                entry.pending = None
        self._metrics.in_flight(lambda: self._running)
        self._scheduler = loop.create_task(self._run_scheduler(), name="check-scheduler")

    async def stop(self) -> None:
        """Cancel the scheduler and every probe, wait for them, close an owned session."""
        self._stopped = True
        tasks: list[asyncio.Task[None]] = []
        if self._scheduler is not None:
            self._scheduler.cancel()
            tasks.append(self._scheduler)
        for entry in self._entries.values():
            entry.gen += 1
            entry.task = None
        for task in self._tasks:  # includes probes already cancelled by a removal
            task.cancel()
            tasks.append(task)
        self._heap.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._metrics.in_flight(lambda: 0.0)
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # --- origins ---------------------------------------------------------------------------

    def set_origins(
        self, specs: Iterable[OriginSpec], *, immediate: bool | Collection[str] = False
    ) -> None:
        """Make the checked set equal to ``specs`` (one ``update`` with every spec).

        New ids start after their spread initial delay (``initial_delay``) unless
        ``immediate`` is True or names them (a node taking over an origin must answer
        now). Removed ids stop and their in-flight probe is cancelled. A changed spec
        restarts with the new spec; it keeps its status and streaks if its URL (the
        target) is unchanged, and starts from unknown otherwise.
        """
        wanted: dict[str, OriginSpec] = {}
        for spec in specs:
            wanted[spec.id] = spec
        gone = [oid for oid in self._entries if oid not in wanted]
        now_ = wanted.keys() if immediate is True else () if immediate is False else immediate
        self.update(wanted.values(), gone, now_)

    def update(
        self,
        upsert: Iterable[OriginSpec],
        remove: Iterable[str] = (),
        immediate: Collection[str] = (),
    ) -> None:
        """Change part of the checked set: ``upsert`` adds or respecifies origins (as
        ``set_origins``), ``remove`` stops them, ``immediate`` names origins to check at
        once (new ones, or checked ones whose probe is not running). Costs what it
        changes, not the size of the set."""
        immediate = frozenset(immediate)
        for oid in remove:
            if oid in self._entries:
                self._remove(oid)
        upserted = set()
        for spec in upsert:
            upserted.add(spec.id)
            self._upsert(spec, spec.id in immediate)
        for oid in immediate:
            entry = self._entries.get(oid)
            if oid not in upserted and entry is not None and entry.task is None:
                self._stop_entry(entry)
                self._schedule_in(entry, 0.0)

    def _upsert(self, spec: OriginSpec, now_: bool) -> None:
        oid = spec.id
        entry = self._entries.get(oid)
        if entry is None:
            entry = self._entries[oid] = _Entry(spec)
            self._counts[Status.UNKNOWN] += 1
            self._metrics.status(oid, entry.gauges, Status.UNKNOWN)
        elif entry.spec is not spec and entry.spec != spec:  # same object: unchanged
            self._stop_entry(entry)
            same_target = entry.spec.url == spec.url
            entry.spec = spec
            if same_target:
                entry.state.rise, entry.state.fall = spec.rise, spec.fall
            else:
                self._counts[entry.state.status] -= 1
                self._counts[Status.UNKNOWN] += 1
                entry.state = OriginState.for_spec(spec)
                self._metrics.drop_tls(oid, entry.gauges)
                self._metrics.status(oid, entry.gauges, Status.UNKNOWN)
        elif now_ and entry.task is None:
            self._stop_entry(entry)
        else:
            return  # unchanged: keep its rhythm
        self._schedule_in(entry, 0.0 if now_ else initial_delay(spec))

    def origin_ids(self) -> list[str]:
        return list(self._entries)

    def status_counts(self) -> dict[Status, int]:
        """How many origins are up, down and unknown: O(1), for per-transition summaries
        (building ``views()`` on every transition is O(n) each, O(n^2) at start-up)."""
        return dict(self._counts)

    def view(self, origin_id: str) -> OriginView | None:
        entry = self._entries.get(origin_id)
        return None if entry is None else _view(entry)

    def views(self) -> Mapping[str, OriginView]:
        """Snapshots of every origin, by id."""
        return {oid: _view(e) for oid, e in self._entries.items()}

    @property
    def in_flight(self) -> int:
        return self._running

    def _remove(self, oid: str) -> None:
        entry = self._entries.pop(oid)
        self._counts[entry.state.status] -= 1
        self._stop_entry(entry)
        self._metrics.removed(oid, entry.gauges)

    def _stop_entry(self, entry: _Entry) -> None:
        """Invalidate the entry's heap item and cancel its probe (its slot frees when the
        cancelled task finishes, so the bound still counts its socket until then)."""
        entry.gen += 1
        entry.pending = None
        if entry.task is not None:
            entry.task.cancel()
            entry.task = None

    # --- scheduling ------------------------------------------------------------------------

    def _schedule_in(self, entry: _Entry, delay: float) -> None:
        if self._loop is None:
            entry.pending = delay
        else:
            self._schedule(entry, self._loop.time() + delay)

    def _schedule(self, entry: _Entry, due: float) -> None:
        if self._stopped:
            return
        entry.gen += 1
        heap = self._heap
        heapq.heappush(heap, (due, next(self._seq), entry, entry.gen))
        if len(heap) > 2 * len(self._entries) + 64:
            # Items of removed or rescheduled origins wait in the heap until they come due;
            # drop them when they outnumber the live ones (in place: the scheduler holds it).
            heap[:] = [item for item in heap if item[2].gen == item[3]]
            heapq.heapify(heap)
        if due < self._alarm.until and not self._waiting_slot:
            self._alarm.ring()

    async def _run_scheduler(self) -> None:
        loop = self._loop
        assert loop is not None
        heap = self._heap
        alarm = self._alarm
        while True:
            if not heap:
                await alarm.sleep(loop, None)
                continue
            due, _, entry, gen = heap[0]
            if entry.gen != gen:
                heapq.heappop(heap)
                continue
            now = loop.time()
            if due > now + COALESCE:
                await alarm.sleep(loop, due)
                continue
            if self._running >= self._concurrency:
                self._waiting_slot = True
                try:
                    await alarm.sleep(loop, None)
                finally:
                    self._waiting_slot = False
                continue
            heapq.heappop(heap)
            entry.gen += 1
            self._running += 1
            entry.task = task = loop.create_task(self._check(entry, entry.gen, due))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _check(self, entry: _Entry, gen: int, due: float) -> None:
        loop = self._loop
        assert loop is not None and self._session is not None
        spec = entry.spec
        start = loop.time()
        lag = start - due if start > due else 0.0
        self._metrics.lag(lag)
        if lag > entry.state.interval(spec):  # a missed deadline (bench/budget.py counts them)
            self.late += 1
            self._metrics.late(spec.kind)
        try:
            try:
                result = await self._probe(self._session, spec, clock=loop.time)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                result = self._internal_error(spec, exc, start, loop.time())
        finally:
            self._running -= 1
            if self._waiting_slot:
                self._alarm.ring()
            if entry.gen == gen:
                entry.task = None
        if entry.gen != gen or self._stopped:
            return  # removed or changed while the probe ran
        if not result.ok and entry.stalls < STALL_RETRIES and _stalled(spec, result):
            entry.stalls += 1
            self.stalled += 1
            self._metrics.stalled(spec.kind)
            log.debug(
                "check %s: stalled (%.1f s for a %.1f s timeout): again soon",
                spec.id,
                result.latency,
                spec.timeout,
            )
            self._schedule(entry, loop.time() + min(spec.interval, max(1.0, spec.timeout)))
            return
        entry.stalls = 0
        try:
            self._account(entry, result)
        except Exception:
            log.exception("check %s: recording the result failed", spec.id)
        next_due = start + entry.state.next_delay(spec, self._rng)
        self._schedule(entry, max(next_due, loop.time()))

    def _internal_error(
        self, spec: OriginSpec, exc: Exception, start: float, end: float
    ) -> ProbeResult:
        text = f"{type(exc).__name__}: {exc}"
        key = (spec.id, text)
        if key not in self._logged_errors and len(self._logged_errors) < _TRACEBACKS_MAX:
            self._logged_errors.add(key)
            log.error("check %s: internal error in probe", spec.id, exc_info=exc)
        else:
            log.debug("check %s: internal error in probe: %s", spec.id, text)
        return ProbeResult(False, end - start, f"internal error: {text}"[:200], end)

    # --- results ---------------------------------------------------------------------------

    def _account(self, entry: _Entry, result: ProbeResult) -> None:
        transition = entry.state.record(result)
        if transition is not None:
            self._counts[transition.old] -= 1
            self._counts[transition.new] += 1
        self._metrics.result(entry.spec.id, entry.spec.kind, entry.gauges, result, transition)
        if self._on_result is not None:
            try:
                self._on_result(entry.spec.id, result)
            except Exception:
                log.exception("check %s: on_result callback failed", entry.spec.id)
        if transition is not None and self._on_transition is not None:
            try:
                self._on_transition(transition)
            except Exception:
                log.exception("check %s: on_transition callback failed", entry.spec.id)


def _stalled(spec: OriginSpec, result: ProbeResult) -> bool:
    """The probe ended well past its timeout: its timer fired late (STALL_GRACE)."""
    return result.latency > spec.timeout + max(STALL_GRACE, spec.timeout / 4)


def _view(entry: _Entry) -> OriginView:
    s = entry.state
    return OriginView(
        spec=entry.spec,
        status=s.status,
        last=s.last,
        successes=s.successes,
        failures=s.failures,
        since=s.since,
        tls_expiry_days=s.tls_expiry_days,
    )
