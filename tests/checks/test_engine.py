"""The check engine against real origins: transitions, reconfiguration, shutdown, bounds.

Every wait is on a condition with a deadline (a queue of transitions, or the origin's
own record of what it saw), never on a sleep.
"""

from __future__ import annotations

import asyncio
import gc
import http.server
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.checks.engine import CheckEngine
from agent.checks.probes import probe
from agent.checks.state import ProbeResult, Status, Transition, initial_delay
from agent.domain.origin import OriginSpec
from agent.shell.metrics import Metrics

from .conftest import WAIT, OriginServer, make_spec


def served(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    """A sample's value as /metrics serves it (parsed back), or None if it is absent."""
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


FAST = {"interval": 0.1, "timeout": 0.1}


class Recorder:
    """Collects results and transitions; each transition notes how many results preceded it."""

    def __init__(self) -> None:
        self.results: dict[str, list[ProbeResult]] = {}
        self.transitions: asyncio.Queue[tuple[Transition, int]] = asyncio.Queue()
        self.cond = asyncio.Condition()

    def on_result(self, oid: str, r: ProbeResult) -> None:
        self.results.setdefault(oid, []).append(r)
        asyncio.get_running_loop().create_task(self._notify())

    def on_transition(self, t: Transition) -> None:
        self.transitions.put_nowait((t, len(self.results.get(t.origin_id, []))))

    async def _notify(self) -> None:
        async with self.cond:
            self.cond.notify_all()

    async def next(self) -> tuple[Transition, int]:
        return await asyncio.wait_for(self.transitions.get(), WAIT)

    async def wait_results(self, oid: str, n: int) -> list[ProbeResult]:
        async with self.cond:
            await asyncio.wait_for(
                self.cond.wait_for(lambda: len(self.results.get(oid, [])) >= n), WAIT
            )
        return self.results[oid]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def make_engine(rec: Recorder) -> AsyncIterator[Callable[..., CheckEngine]]:
    engines: list[CheckEngine] = []

    def make(**kw: Any) -> CheckEngine:
        kw.setdefault("on_transition", rec.on_transition)
        kw.setdefault("on_result", rec.on_result)
        kw.setdefault("seed", 1)
        e = CheckEngine(**kw)
        engines.append(e)
        return e

    yield make
    for e in engines:
        await e.stop()


async def test_flapping_origin_gives_exactly_the_expected_transitions(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    # rise=2 fall=3; result index:  0    1    2    3    4    5    6    7    8    9    10
    origin.script["a"] = [200, 500, 500, 200, 500, 500, 500, 200, 500, 200, 200]
    engine = make_engine()
    engine.set_origins([make_spec(origin.url("/script/a"), "a", rise=2, fall=3, **FAST)])
    await engine.start()
    got = [await rec.next() for _ in range(3)]
    assert [(t.old, t.new, n) for t, n in got] == [
        (Status.UNKNOWN, Status.UP, 1),  # result 0 decides
        (Status.UP, Status.DOWN, 7),  # results 4, 5, 6; 1-2 were reset by 3
        (Status.DOWN, Status.UP, 11),  # results 9, 10; 7 was reset by 8
    ]
    assert got[1][0].reason == "status 500 (expected 200)"
    assert got[2][0].reason == "status 200"
    # The script is over (200 from now on): more results, and no more transitions.
    await rec.wait_results("a", 16)
    assert rec.transitions.empty()
    v = engine.view("a")
    assert v is not None and v.status is Status.UP and v.successes >= 5 and v.failures == 0
    assert v.since == got[2][0].at


async def test_first_check_after_spread_delay_or_at_once_when_immediate(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    slow = make_spec(origin.url("/ok"), "spread", interval=3600.0)
    assert initial_delay(slow) > 60  # precondition: this id's phase is far from now
    now = make_spec(origin.url("/ok"), "now", interval=3600.0)
    engine = make_engine()
    await engine.start()
    engine.set_origins([slow, now], immediate={"now"})
    t, _ = await rec.next()
    assert (t.origin_id, t.new) == ("now", Status.UP)
    views = engine.views()
    assert views["now"].status is Status.UP
    assert views["spread"].status is Status.UNKNOWN and views["spread"].last is None
    engine.set_origins([slow, now], immediate=True)  # unchanged but wanted now
    t, _ = await rec.next()
    assert (t.origin_id, t.new) == ("spread", Status.UP)


async def test_update_changes_only_what_it_names(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    """The node's diff (EngineUpdate): an upsert adds, a remove stops, an id in
    ``immediate`` alone checks a waiting origin at once; the rest keeps its rhythm."""
    slow = make_spec(origin.url("/ok"), "spread", interval=3600.0)
    assert initial_delay(slow) > 60  # precondition: this id's phase is far from now
    hang = make_spec(origin.url("/hang"), "hang", interval=10.0, timeout=10.0)
    engine = make_engine()
    await engine.start()
    engine.update([slow, hang], immediate={"hang"})
    await origin.wait_for(lambda: origin.hanging == 1)
    assert engine.view("spread").last is None  # type: ignore[union-attr]
    engine.update([], remove=["hang", "never-there"])
    await origin.wait_for(lambda: origin.hang_cancelled == 1)
    assert engine.origin_ids() == ["spread"]
    engine.update([], immediate={"spread"})  # no spec: only "now"
    t, _ = await rec.next()
    assert (t.origin_id, t.new) == ("spread", Status.UP)
    assert engine.status_counts() == {Status.UP: 1, Status.DOWN: 0, Status.UNKNOWN: 0}


async def test_set_origins_add_remove_change(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    metrics = Metrics()
    engine = make_engine(metrics=metrics)
    await engine.start()
    a = make_spec(origin.url("/ok"), "a", **FAST)
    b = make_spec(origin.url("/ok"), "b", **FAST)
    hang = make_spec(origin.url("/hang"), "hang", interval=10.0, timeout=10.0)
    engine.set_origins([a, b, hang], immediate=True)
    ups = {(await rec.next())[0].origin_id for _ in range(2)}
    assert ups == {"a", "b"}
    await origin.wait_for(lambda: origin.hanging == 1)
    assert served(metrics, "edge_agent_origin_up", {"origin": "a"}) == 1.0
    # unknown (its first check still running) has no series: no number to sum by mistake
    assert served(metrics, "edge_agent_origin_up", {"origin": "hang"}) is None

    # remove: the in-flight probe is cancelled (the origin sees its client go away)
    engine.set_origins([a, b])
    await origin.wait_for(lambda: origin.hang_cancelled == 1)
    assert set(engine.views()) == {"a", "b"} and engine.view("hang") is None
    assert served(metrics, "edge_agent_origin_up", {"origin": "hang"}) is None

    # change, same target: status kept, new rules apply (fall=1 takes it down on one failure)
    a2 = make_spec(origin.url("/ok"), "a", interval=0.1, timeout=0.1, fall=1, expect_status=(204,))
    engine.set_origins([a2, b], immediate=True)
    assert engine.view("a").status is Status.UP  # type: ignore[union-attr]
    t, _ = await rec.next()
    assert (t.origin_id, t.old, t.new) == ("a", Status.UP, Status.DOWN)
    assert t.reason == "status 200 (expected 204)"
    assert engine.view("a").spec == a2  # type: ignore[union-attr]

    assert engine.status_counts() == {Status.UP: 1, Status.DOWN: 1, Status.UNKNOWN: 0}

    # change of target: starts again from unknown
    b2 = make_spec(origin.url("/status/503"), "b", **FAST)
    engine.set_origins([a2, b2], immediate=True)
    assert engine.view("b").status is Status.UNKNOWN  # type: ignore[union-attr]
    assert engine.status_counts() == {Status.UP: 0, Status.DOWN: 1, Status.UNKNOWN: 1}
    t, _ = await rec.next()
    assert (t.origin_id, t.old, t.new) == ("b", Status.UNKNOWN, Status.DOWN)
    assert rec.transitions.empty()
    assert engine.status_counts() == {Status.UP: 0, Status.DOWN: 2, Status.UNKNOWN: 0}
    counted: dict[Status, int] = dict.fromkeys(Status, 0)
    for v in engine.views().values():
        counted[v.status] += 1
    assert counted == engine.status_counts()
    engine.set_origins([a2])
    assert engine.status_counts() == {Status.UP: 0, Status.DOWN: 1, Status.UNKNOWN: 0}


async def test_changing_a_spec_cancels_its_probe_in_flight(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    engine = make_engine()
    engine.set_origins([make_spec(origin.url("/hang"), "x", interval=10.0, timeout=10.0)])
    await engine.start()
    engine.set_origins(
        [make_spec(origin.url("/hang"), "x", interval=10.0, timeout=10.0)], immediate=True
    )
    await origin.wait_for(lambda: origin.hanging == 1)
    engine.set_origins([make_spec(origin.url("/ok"), "x", **FAST)], immediate=True)
    await origin.wait_for(lambda: origin.hang_cancelled == 1)
    t, n = await rec.next()
    assert (t.origin_id, t.old, t.new, n) == ("x", Status.UNKNOWN, Status.UP, 1)


async def test_reconfiguring_often_does_not_grow_the_schedule(
    make_engine: Callable[..., CheckEngine],
) -> None:
    engine = make_engine()
    await engine.start()
    for i in range(2000):
        interval = 3600.0 + i  # a changed spec every time: rescheduled, old item stale
        engine.set_origins(
            [make_spec(f"http://127.0.0.1:9/{j}", f"o{j}", interval=interval) for j in range(10)]
        )
    assert len(engine._heap) <= 2 * 10 + 64 + 1
    assert len(engine.views()) == 10


async def test_a_bug_in_a_probe_is_a_failed_result_not_a_dead_scheduler(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    async def buggy(
        session: aiohttp.ClientSession, spec: OriginSpec, *, clock: Callable[[], float]
    ) -> ProbeResult:
        if spec.id == "bug":
            raise ZeroDivisionError("boom")
        return await probe(session, spec, clock=clock)

    metrics = Metrics()
    engine = make_engine(probe_fn=buggy, metrics=metrics)
    engine.set_origins(
        [make_spec(origin.url("/ok"), "bug", **FAST), make_spec(origin.url("/ok"), "ok", **FAST)],
        immediate=True,
    )
    await engine.start()
    seen = {}
    for _ in range(2):
        t, _ = await rec.next()
        seen[t.origin_id] = t
    assert seen["bug"].new is Status.DOWN
    assert seen["bug"].reason == "internal error: ZeroDivisionError: boom"
    assert seen["ok"].new is Status.UP
    # both keep being checked
    await rec.wait_results("bug", 3)
    await rec.wait_results("ok", 3)
    fails = metrics.registry.get_sample_value(
        "edge_agent_checks_total", {"kind": "http", "result": "fail"}
    )
    assert fails is not None and fails >= 3


async def test_a_failing_callback_does_not_stop_checks(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    def bad_transition(t: Transition) -> None:
        raise RuntimeError("callback bug")

    engine = make_engine(on_transition=bad_transition)
    engine.set_origins([make_spec(origin.url("/ok"), "a", **FAST)], immediate=True)
    await engine.start()
    results = await rec.wait_results("a", 3)
    assert all(r.ok for r in results)
    assert engine.view("a").status is Status.UP  # type: ignore[union-attr]


async def test_metrics_are_recorded(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    metrics = Metrics()
    engine = make_engine(metrics=metrics)
    engine.set_origins(
        [
            make_spec(origin.url("/ok"), "up", **FAST),
            make_spec(origin.url("/status/500"), "down", **FAST),
            make_spec(f"tcp://127.0.0.1:{origin.port}", "tcp", **FAST),
        ],
        immediate=True,
    )
    await engine.start()
    for oid in ("up", "down", "tcp"):
        await rec.wait_results(oid, 2)
    get = metrics.registry.get_sample_value
    assert served(metrics, "edge_agent_origin_up", {"origin": "up"}) == 1.0
    assert served(metrics, "edge_agent_origin_up", {"origin": "down"}) == 0.0
    assert served(metrics, "edge_agent_origin_up", {"origin": "tcp"}) == 1.0
    assert (get("edge_agent_checks_total", {"kind": "http", "result": "ok"}) or 0) >= 2
    assert (get("edge_agent_checks_total", {"kind": "http", "result": "fail"}) or 0) >= 2
    assert (get("edge_agent_checks_total", {"kind": "tcp", "result": "ok"}) or 0) >= 2
    assert (get("edge_agent_check_latency_seconds_count", {"kind": "http"}) or 0) >= 4
    assert get("edge_agent_origin_transitions_total", {"status": "up"}) == 2.0
    assert get("edge_agent_origin_transitions_total", {"status": "down"}) == 1.0
    assert (get("edge_agent_check_start_lag_seconds_count") or 0) >= 6
    for oid in ("up", "down", "tcp"):  # the last check's duration, in seconds
        took = served(metrics, "edge_agent_origin_check_duration_seconds", {"origin": oid})
        assert took is not None and 0 < took < 1, (oid, took)
    assert b"_created" not in metrics.exposition()


async def test_tls_expiry_reaches_views_and_metrics(
    tls_origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    metrics = Metrics()
    engine = make_engine(metrics=metrics)
    spec = make_spec(tls_origin.url("/ok"), "tls", tls_verify=False, **FAST)
    engine.set_origins([spec], immediate=True)
    await engine.start()
    await rec.wait_results("tls", 2)
    v = engine.view("tls")
    assert v is not None and v.tls_expiry_days == pytest.approx(30, abs=0.01)
    expiry = served(metrics, "edge_agent_origin_tls_expiry_timestamp_seconds", {"origin": "tls"})
    assert expiry == pytest.approx(time.time() + 30 * 86400, abs=60)


async def test_concurrency_bound_is_never_exceeded(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    bound = 5
    metrics = Metrics()
    engine = make_engine(concurrency=bound, metrics=metrics)
    specs = [make_spec(origin.url("/gated"), f"g{i}", interval=0.1, timeout=5.0) for i in range(40)]
    engine.set_origins(specs, immediate=True)  # all 40 are due at once
    await engine.start()
    assert engine.session is not None and engine.session.connector is not None
    assert engine.session.connector.limit == bound  # the connector agrees with the bound
    for batch in range(1, 13):  # let batches through one at a time

        def full(n: int = batch * bound) -> bool:
            return len(origin.seen) >= n and origin.in_flight == bound

        await origin.wait_for(full)
        assert engine.in_flight == bound
        assert metrics.registry.get_sample_value("edge_agent_checks_in_flight") == bound
        assert len(origin.seen) == batch * bound  # nobody got past the bound
        origin.open_gate()
    assert origin.max_in_flight == bound


async def test_concurrency_is_clamped_to_a_given_sessions_limit(
    origin: OriginServer, make_engine: Callable[..., CheckEngine]
) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=3)) as s:
        engine = make_engine(session=s, concurrency=50)
        await engine.start()
        assert engine.concurrency == 3
        await engine.stop()
        assert not s.closed  # not the engine's to close


async def test_checks_reuse_keepalive_connections(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    engine = make_engine()
    engine.set_origins(
        # a generous timeout: on a loaded machine a 50 ms one can expire before the
        # request is sent, and then the server never sees it
        [make_spec(origin.url("/ok"), f"k{i}", interval=0.05, timeout=1.0) for i in range(3)],
        immediate=True,
    )
    await engine.start()
    for i in range(3):
        await rec.wait_results(f"k{i}", 10)
    peers = {s.peer for s in origin.seen}
    assert len(origin.seen) >= 30 and len(peers) <= 3  # at most one connection per concurrent probe


async def test_stop_leaves_no_tasks_and_no_unclosed_session(
    origin: OriginServer, tls_origin: OriginServer, rec: Recorder, closed_port: int
) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    before = asyncio.all_tasks()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine = CheckEngine(on_result=rec.on_result, on_transition=rec.on_transition)
        engine.set_origins(
            [
                make_spec(origin.url("/ok"), "a", **FAST),
                make_spec(f"http://127.0.0.1:{closed_port}/", "refused", **FAST),
                make_spec(origin.url("/hang"), "hang", interval=10.0, timeout=10.0),
                make_spec(origin.url("/hang"), "gone", interval=10.0, timeout=10.0),
                make_spec(f"tcp://127.0.0.1:{origin.port}", "tcp", **FAST),
                make_spec(tls_origin.url("/ok"), "tls", tls_verify=False, **FAST),
                make_spec(tls_origin.url("/hang"), "tls-hang", tls_verify=False, timeout=5.0),
            ],
            immediate=True,
        )
        await engine.start()
        await rec.wait_results("a", 2)
        await rec.wait_results("tls", 2)
        await tls_origin.wait_for(lambda: tls_origin.hanging == 1)
        await origin.wait_for(lambda: origin.hanging == 2)
        session = engine.session
        assert session is not None
        # Replace everything: the removed hanging probes are cancelled, a new one starts.
        engine.set_origins(
            [make_spec(origin.url("/hang"), "hang3", interval=10.0, timeout=10.0)],
            immediate=True,
        )
        await origin.wait_for(lambda: len([s for s in origin.seen if s.path == "/hang"]) == 3)
        await engine.stop()
        assert session.closed
        leftover = [t for t in asyncio.all_tasks() - before if not t.done()]
        ours = [t for t in leftover if "CheckEngine" in repr(t.get_coro())]
        assert ours == []
        del engine, session
        gc.collect()
    assert [e.get("message") for e in errors] == []


async def test_stop_before_start_and_twice_is_harmless(
    make_engine: Callable[..., CheckEngine],
) -> None:
    engine = make_engine()
    engine.set_origins([make_spec("http://127.0.0.1:9/", "a")])
    await engine.stop()
    await engine.stop()
    assert engine.session is None
    with pytest.raises(RuntimeError):
        await engine.start()


class _Answering(http.server.BaseHTTPRequestHandler):
    """200 after ``delay`` seconds, on its own thread: it answers while the test blocks
    the event loop (an origin that is fine, behind a node that is stalled)."""

    delay = 0.1
    arrived: threading.Event

    def do_GET(self) -> None:
        self.arrived.set()
        time.sleep(self.delay if self.path != "/slow" else 2.0)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left first

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def threaded_origin() -> Iterator[tuple[str, threading.Event]]:
    arrived = threading.Event()
    handler = type("Handler", (_Answering,), {"arrived": arrived})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", arrived
    finally:
        server.shutdown()
        server.server_close()


async def test_a_timeout_caused_by_this_nodes_own_stall_is_not_recorded(
    threaded_origin: tuple[str, threading.Event],
    rec: Recorder,
    make_engine: Callable[..., CheckEngine],
) -> None:
    """The origin answers in 0.1 s, but this node's loop is blocked for 1.5 s meanwhile:
    the 0.3 s timeout fires late, ahead of the waiting answer. That failure is the
    node's, not the origin's: not recorded, tried again soon, and the origin is up."""
    base, arrived = threaded_origin
    metrics = Metrics()
    engine = make_engine(metrics=metrics)
    await engine.start()
    engine.set_origins([make_spec(base + "/", "a", interval=60.0, timeout=0.3)], immediate=True)
    assert await asyncio.to_thread(arrived.wait, WAIT)  # the request is with the origin
    time.sleep(1.5)  # the fault injected: this node's event loop is stalled
    t, n = await rec.next()
    assert (t.old, t.new, n) == (Status.UNKNOWN, Status.UP, 1)  # never down
    assert engine.stalled == 1
    assert served(metrics, "edge_agent_checks_total", {"kind": "http", "result": "stalled"}) == 1
    assert served(metrics, "edge_agent_checks_total", {"kind": "http", "result": "fail"}) is None


async def test_a_timeout_with_the_loop_running_is_a_failure(
    threaded_origin: tuple[str, threading.Event],
    rec: Recorder,
    make_engine: Callable[..., CheckEngine],
) -> None:
    base, _ = threaded_origin
    engine = make_engine()
    await engine.start()
    engine.set_origins([make_spec(base + "/slow", "a", interval=60.0, timeout=0.3)], immediate=True)
    t, n = await rec.next()
    assert (t.old, t.new, n) == (Status.UNKNOWN, Status.DOWN, 1)
    assert t.reason == "timeout after 300ms" and engine.stalled == 0


async def test_a_probe_started_more_than_one_interval_late_is_a_missed_deadline(
    origin: OriginServer, rec: Recorder, make_engine: Callable[..., CheckEngine]
) -> None:
    """bench/budget.py's "missed check deadlines": probes on time are not counted; one
    that starts more than an interval after it was due (this node's loop blocked) is."""
    metrics = Metrics()
    engine = make_engine(metrics=metrics)
    engine.set_origins([make_spec(origin.url("/ok"), "a", interval=0.5)], immediate=True)
    await engine.start()
    await rec.wait_results("a", 2)
    assert engine.late == 0
    assert served(metrics, "edge_agent_checks_late_total", {"kind": "http"}) is None
    n = len(rec.results["a"])
    # the fault injected: the loop is blocked right after a result, so the next probe
    # (due 0.45-0.55 s after the last one started) starts about a second past its due time
    time.sleep(1.5)
    await rec.wait_results("a", n + 1)
    assert engine.late == 1
    assert served(metrics, "edge_agent_checks_late_total", {"kind": "http"}) == 1
