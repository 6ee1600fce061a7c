"""The running agent: builds the parts from a Config, supervises them, stops cleanly.

One asyncio loop runs everything. SIGTERM/SIGINT stop the agent within
STOP_TIMEOUT seconds; SIGHUP re-reads the config file and applies the origin
list without a restart. A background task that crashes is logged, counted in
/metrics and restarted with backoff, so one bug never leaves a silently
half-dead agent behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from agent import __version__
from agent.api.app import build_app
from agent.api.events import EventHub
from agent.checks.engine import CheckEngine
from agent.checks.state import Status as CheckStatus
from agent.checks.state import Transition
from agent.cluster import Cluster, ClusterCollector, KeyringError
from agent.config import Config, ConfigError, load_config, parse_origin
from agent.coordinator import (
    Conflict,
    Coordinator,
    CoordinatorCollector,
    VerdictChange,
    send_outputs,
)
from agent.health import Health
from agent.health import Status as HealthStatus
from agent.identify import (
    IdentifyDecodeError,
    IdentifyRequest,
    decode_identify,
    encode_identify,
    is_identify,
)
from agent.identity import node_name
from agent.leds import Condition, Leds, LedState, led_state_for, meaning
from agent.membership.messages import NodeState
from agent.membership.protocol import Event, MemberEvent, UserMessage
from agent.metrics import Metrics
from agent.systemd import Notifier, Watchdog
from agent.webhooks import Webhooks

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
API_RETRY = 2.0
LEAVE_TIMEOUT = 2.0  # of the 5 s stop budget: time for the leave to be gossiped


class Supervisor:
    """Runs named background tasks and restarts any that crash, with capped backoff."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.tasks[name] = asyncio.create_task(self._run(name, factory), name=name)

    async def _run(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        backoff = 0.1
        while True:
            started = time.monotonic()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s crashed; restarting in %.1fs", name, backoff)
                self.metrics.task_restarts.labels(name).inc()
            if time.monotonic() - started > 60:
                backoff = 0.1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def stop(self) -> None:
        for t in self.tasks.values():
            t.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()


class Agent:
    """One node. Build it with a Config, then `await run()` until a stop signal."""

    def __init__(
        self, config: Config, config_path: Path | None = None, *, pin_factory: Any = None
    ) -> None:
        """``pin_factory``: gpiozero's, for the LEDs (tests pass a MockFactory)."""
        self.config = config
        self.config_path = config_path
        self.node_name = node_name(config)
        self.metrics = Metrics()
        self.health = Health()
        self.notifier = Notifier.from_env()
        self.watchdog = Watchdog.from_env(self.notifier)
        self.started_at = time.time()
        self.events = EventHub()
        self.engine = CheckEngine(
            concurrency=config.checks.concurrency,
            metrics=self.metrics,
            on_transition=self._on_transition,
            user_agent=f"{config.checks.user_agent}/{__version__}",
        )
        self.coordinator = Coordinator(self.node_name, config, self.engine)
        self.coordinator.on_verdict = self._on_verdict
        self.coordinator.on_origins = self._on_origins
        self.metrics.bad_input.labels("file", "store-record").inc(self.coordinator.bad_records)
        self.webhooks = Webhooks(config.webhooks, f"{config.checks.user_agent}/{__version__}")
        self.leds = Leds(config.leds, pin_factory=pin_factory)
        self.cluster = Cluster(
            config,
            self.node_name,
            on_change=self._refresh_soon,
            on_event=self._on_cluster_event,
            local_state=self.coordinator.replicator.local_state,
        )
        self.coordinator.transport = lambda out: send_outputs(self.cluster.node, out)
        self.metrics.registry.register(ClusterCollector(self.cluster))
        self.metrics.registry.register(CoordinatorCollector(self.coordinator))
        self.supervisor = Supervisor(self.metrics)
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.api_url: str | None = None
        self._summary = ""
        self._refresh_pending = False
        self._synced: set[str] = set()
        self._dirty_origins: set[str] = set()
        self._last_health: dict[str, Any] | None = None
        self._alerted: dict[str, str] = {}  # origin -> last settled verdict (up/down)
        self.identify_until = 0.0  # loop time; the LEDs show identify until then

    # --- views the API reads -------------------------------------------------------------

    @staticmethod
    def _wall(loop_time: float | None) -> float | None:
        """Engine times are loop.time() (monotonic); the API speaks wall-clock seconds."""
        if loop_time is None:
            return None
        return round(time.time() - (asyncio.get_running_loop().time() - loop_time), 3)

    def _origin_dict(self, origin_id: str) -> dict[str, Any] | None:
        co = self.coordinator
        spec = co.state.spec(origin_id)
        if spec is None:
            return None
        mine = origin_id in co.mine()
        view = self.engine.view(origin_id) if mine else None
        observations = []
        for observer, obs in sorted(co.state.observations(origin_id).items()):
            entry: dict[str, Any] = {
                "observer": observer,
                "status": obs.status,
                "since": round(obs.since.wall_ms / 1000, 3),
                "latency_band": obs.latency_band,
                "latency_ms": None,
                "reason": obs.reason,
            }
            if observer == self.node_name and view is not None and view.last is not None:
                entry["latency_ms"] = round(view.last.latency * 1000, 1)
                entry["checked_at"] = self._wall(view.last.at)
                entry["tls_expiry_days"] = view.tls_expiry_days
            observations.append(entry)
        return {
            "id": origin_id,
            "spec": spec.to_dict(),
            "verdict": co.verdict(origin_id),
            "owners": list(co.owners(origin_id)),
            "mine": mine,
            "declared_by": [
                {"node": n, "source": src} for n, src, _ in co.state.declarations(origin_id)
            ],
            "observations": observations,
        }

    def origins_view(self) -> list[dict[str, Any]]:
        out = []
        for origin_id in sorted(self.coordinator.placement.origins):
            d = self._origin_dict(origin_id)
            if d is not None:
                out.append(d)
        return out

    def origin_view(self, origin_id: str) -> dict[str, Any] | None:
        return self._origin_dict(origin_id)

    def counts(self) -> dict[str, int]:
        """Every origin in the fleet catalogue, by verdict (kept incrementally)."""
        return self.coordinator.counts()

    def summary(self) -> str:
        c = self.counts()
        total = sum(c.values())
        parts = [f"{c['up']} up", f"{c['down']} down"]
        for extra in ("disputed", "unknown"):
            if c[extra]:
                parts.append(f"{c[extra]} {extra}")
        word = "origin" if total == 1 else "origins"
        mine = self.coordinator.mine_counts()["owned"]
        return f"{total} {word}: " + ", ".join(parts) + f"; checking {mine}"

    def members_view(self) -> list[dict[str, Any]]:
        return self.cluster.members_view()

    def transitions_view(self) -> list[dict[str, Any]]:
        return [t.as_dict() for t in self.coordinator.transitions]

    def storage_view(self) -> dict[str, Any]:
        store = self.coordinator.store
        s = store.stats
        return {
            "status": "ok" if store.fault is None else "fault",
            "reason": store.fault,
            "bytes_written": s.bytes_written,
            "fsyncs": s.fsyncs,
            "snapshots": s.snapshots,
            "pending_records": s.pending_records,
        }

    def _identify_left(self) -> float:
        left = self.identify_until - asyncio.get_running_loop().time()
        return round(left, 1) if left > 0 else 0.0

    def health_view(self) -> dict[str, Any]:
        state = self._led_state()
        return {
            "cluster": {"name": self.config.cluster.name, "peers": self.cluster.peers()},
            "status": str(self.health.status),
            "node": self.node_name,
            "version": __version__,
            "reasons": self.health.reasons(),
            "summary": self.summary(),
            "origins": self.counts(),
            "mine": self.coordinator.mine_counts(),
            "led": {
                "state": str(state),
                "meaning": meaning(state),
                "pins": self.leds.levels(),
            },
            "storage": self.storage_view(),
            "identify_s": self._identify_left(),
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def api_token(self) -> str | None:
        path = self.config.api.token_file
        if path is None:
            return None
        try:
            token = path.read_text().strip()
        except OSError as e:
            log.error("cannot read the API token file %s: %s", path, e.strerror or e)
            return "\0unreadable"  # no client can send this: writes are refused
        return token or "\0empty"

    # --- writes the API makes ------------------------------------------------------------

    async def put_origin(self, origin_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = dict(body)
        if data.setdefault("id", origin_id) != origin_id:
            return 400, {"error": f"id: {data['id']!r} does not match the URL's {origin_id!r}"}
        try:
            spec = parse_origin(data, where="body")
        except ConfigError as e:
            return 400, {"error": "; ".join(e.problems)}
        new = self.coordinator.put(spec, asyncio.get_running_loop().time())
        log.info("origin %s %s through the API", origin_id, "added" if new else "updated")
        durable = await self.coordinator.durable()  # the answer promises it survives a crash
        view = self._origin_dict(origin_id) or {}
        return (201 if new else 200), {**view, "durable": durable}

    async def delete_origin(self, origin_id: str) -> tuple[int, dict[str, Any]]:
        try:
            found = self.coordinator.delete(origin_id, asyncio.get_running_loop().time())
        except Conflict as e:
            return 409, {"error": str(e)}
        if not found:
            return 404, {"error": f"no origin with id {origin_id!r}"}
        log.info("origin %s removed through the API", origin_id)
        durable = await self.coordinator.durable()
        return 200, {"id": origin_id, "removed": True, "durable": durable}

    def identify(self, node: str | None, seconds: float) -> tuple[int, dict[str, Any]]:
        target = node or self.node_name
        if target == self.node_name:
            self._start_identify(seconds, "the API")
            return 202, {"node": target, "seconds": seconds}
        member = next((m for m in self.cluster.members() if m.name == target), None)
        if member is None or member.state not in (NodeState.ALIVE, NodeState.SUSPECT):
            return 404, {"error": f"no live member named {target!r}"}
        if self.cluster.node is None or self.cluster.node.core is None:
            return 503, {"error": "gossip is not running on this node"}
        msg = encode_identify(IdentifyRequest(target, seconds, self.node_name))
        self.cluster.node.send_reliable(member.address, msg)
        return 202, {"node": target, "seconds": seconds, "via": self.node_name}

    def _start_identify(self, seconds: float, who: str) -> None:
        log.info("identify: blinking for %.0fs (asked by %s)", seconds, who)
        self.identify_until = asyncio.get_running_loop().time() + seconds
        self._refresh_soon()

    # --- events --------------------------------------------------------------------------

    def _on_transition(self, t: Transition) -> None:
        """This node's own check changed status: log it, and it becomes our observation."""
        level = logging.WARNING if t.new == CheckStatus.DOWN else logging.INFO
        log.log(
            level,
            "origin %s is %s here (%s)",
            t.origin_id,
            t.new,
            t.reason,
            extra={"ORIGIN": t.origin_id, "VERDICT": str(t.new)},
        )
        self.coordinator.on_transition(t)
        self._refresh_soon()

    def _on_verdict(self, change: VerdictChange) -> None:
        """The fleet's verdict on an origin changed (from any node's observations)."""
        record = change.as_dict()
        self.metrics.transitions.labels(change.new).inc()
        self.events.publish("transition", record)
        if change.old != "unknown" or change.new != "up":
            log.info("verdict: origin %s is %s (was %s)", change.origin, change.new, change.old)
        self._alert(change, record)
        self._refresh_soon()

    def _alert(self, change: VerdictChange, record: dict[str, Any]) -> None:
        """Webhooks fire on settled changes between up and down: a brief "disputed" while
        the second owner catches up is not a transition of its own, and the first
        verdict after start is a baseline, not news. Every node keeps the baseline; only
        the rank-1 owner sends."""
        if change.new not in ("up", "down"):
            return
        before = self._alerted.get(change.origin)
        self._alerted[change.origin] = change.new
        if before is None or before == change.new or not self.config.webhooks:
            return
        if (change.owners[0] if change.owners else None) != self.node_name:
            return
        key = f"{change.origin}/{change.new}/{int(change.at * 1000)}"
        self.webhooks.send(key, {**record, "from": before, "node": self.node_name})

    def _on_origins(self, ids: set[str]) -> None:
        for origin_id in ids:
            if origin_id not in self.coordinator.placement.origins:
                self._alerted.pop(origin_id, None)
        if self.events.listeners:
            self._dirty_origins |= ids
        self._refresh_soon()

    def _on_cluster_event(self, ev: Event) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(ev, UserMessage) and is_identify(ev.payload):
            try:
                req = decode_identify(ev.payload)
            except IdentifyDecodeError as e:
                self.metrics.bad_input.labels("packet", "identify").inc()
                log.warning("dropped an identify message: %s", e)
                return
            if req.node == self.node_name:
                self._start_identify(req.seconds, req.sender)
            return
        self.coordinator.on_event(ev, loop.time(), self.cluster.members)
        if isinstance(ev, MemberEvent) and self.events.listeners:
            for m in self.cluster.members_view():
                if m["name"] == ev.member.name:
                    self.events.publish("member", m)

    def _refresh_soon(self) -> None:
        """Coalesce: 10,000 origins reporting at once refresh the surfaces once, not 10,000x."""
        if not self._refresh_pending:
            self._refresh_pending = True
            asyncio.get_running_loop().call_soon(self._refresh_surfaces)

    def led_condition(self) -> Condition:
        """What the LEDs report, from the node's real state (docs/leds.md)."""
        mine = self.coordinator.mine_counts()
        health = self.health
        storage = self.coordinator.store.fault
        others_degraded = [w for w in health.degraded if w != "storage"]
        node = self.cluster.node
        score = node.core.health_score if node is not None and node.core is not None else 0
        loop = asyncio.get_running_loop()
        return Condition(
            starting=not health.ready,
            fault="; ".join(f"{k}: {v}" for k, v in health.failing.items()) or None,
            storage_fault=storage,
            suspected=score > 0 or bool(others_degraded),
            alone=self.cluster.peers() == 0 and self.cluster.may_find_peers(),
            owned=mine["owned"],
            down=mine["down"],
            disputed=mine["disputed"],
            identify=self.identify_until > loop.time(),
        )

    def _led_state(self) -> LedState:
        return led_state_for(self.led_condition())

    def _refresh_surfaces(self) -> None:
        """Push the current state to the places a person looks: LEDs, systemd, /metrics."""
        self._refresh_pending = False
        self._sync_faults({**self.cluster.faults, **self.coordinator.faults})
        c = self.counts()
        status = self.health.status
        self.leds.set(self._led_state())
        for s in HealthStatus:
            self.metrics.health.labels(str(s)).set(1 if s == status else 0)
        for verdict, n in c.items():
            self.metrics.origins_by_verdict.labels(verdict).set(n)
        summary = self.summary()
        if status != HealthStatus.OK:
            reasons = "; ".join(self.health.reasons())
            summary = f"{status}: {reasons} | {summary}" if reasons else f"{status} | {summary}"
        if summary != self._summary:
            self._summary = summary
            self.notifier.status(summary)
        if self._dirty_origins:
            dirty, self._dirty_origins = self._dirty_origins, set()
            for origin_id in sorted(dirty):
                d = self._origin_dict(origin_id)
                if d is None:
                    self.events.publish("origin-removed", {"id": origin_id})
                else:
                    self.events.publish("origin", d)

    def _publish_health(self) -> None:
        """At most once a second, and only when something in it changed."""
        if not self.events.listeners:
            return
        view = self.health_view()
        same = {k: v for k, v in view.items() if k != "uptime_s"}
        if same != self._last_health:
            self._last_health = same
            self.events.publish("health", view)

    # --- lifecycle -----------------------------------------------------------------------

    def _sync_faults(self, faults: dict[str, tuple[str, str]]) -> None:
        """Mirror a part's own fault list ({what: (level, reason)}) into node health."""
        for what, (level, reason) in faults.items():
            if level == "failing":
                self.health.fail(what, reason)
            else:
                self.health.degrade(what, reason)
        for what in self._synced - faults.keys():
            self.health.clear(what)
        self._synced = set(faults)

    async def _serve_api(self) -> None:
        """Bind the API, retrying while the port is taken (health failing, red LED)."""
        listen = self.config.api.listen
        app = build_app(self)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        while True:
            try:
                site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
                await site.start()
                break
            except OSError as e:
                reason = f"cannot listen on {listen}: {e.strerror or e}"
                if "api" not in self.health.failing:
                    log.error("API %s; retrying every %.0fs", reason, API_RETRY)
                self.health.fail("api", reason)
                self._refresh_surfaces()
                await asyncio.sleep(API_RETRY)
        self.health.clear("api")
        bound = runner.addresses
        port = bound[0][1] if bound else listen.port
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        self.api_url = f"http://{host}:{port}"
        log.info("API listening on %s", self.api_url)

    async def _start_cluster(self) -> None:
        """Start gossip, retrying while the port is taken; a bad keyring is a standing fault."""
        self.cluster.api_port = int(self.api_url.rsplit(":", 1)[1]) if self.api_url else 0
        bind = self.config.cluster.bind
        while True:
            try:
                await self.cluster.start()
                break
            except KeyringError as e:
                log.error("gossip disabled: keyring %s", e)
                self.health.fail("keyring", str(e))
                self._refresh_surfaces()
                return
            except OSError as e:
                reason = f"cannot bind gossip port {bind}: {e.strerror or e}"
                if "gossip" not in self.health.failing:
                    log.error("%s; retrying every %.0fs", reason, API_RETRY)
                self.health.fail("gossip", reason)
                self._refresh_surfaces()
                await asyncio.sleep(API_RETRY)
        self.health.clear("gossip")

    def request_stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply the origins, keep everything else until restart."""
        if self.config_path is None:
            log.warning("SIGHUP ignored: no config file to reload")
            return
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            self.metrics.reloads.labels("error").inc()
            log.error("reload failed; keeping the running config:\n%s", e)
            self.notifier.ready()
            return
        changed = [
            name
            for name in ("node", "cluster", "gossip", "api", "leds", "checks", "log", "store")
            if getattr(new, name) != getattr(self.config, name)
        ]
        if new.webhooks != self.config.webhooks:
            changed.append("webhook")
        if changed:
            log.warning("reload: [%s] changed; those take effect at restart", "], [".join(changed))
        problem = self.cluster.reload_keyring()
        if problem is not None:
            log.error("reload: %s", problem)
        before = {o.id for o in self.config.origins}
        after = {o.id for o in new.origins}
        self.coordinator.declare_config(new.origins, asyncio.get_running_loop().time())
        self.config = Config(
            node=self.config.node,
            cluster=self.config.cluster,
            gossip=self.config.gossip,
            api=self.config.api,
            leds=self.config.leds,
            checks=self.config.checks,
            log=self.config.log,
            origins=new.origins,
            source=new.source,
            store=self.config.store,
            webhooks=self.config.webhooks,
        )
        self.metrics.reloads.labels("ok").inc()
        log.info(
            "reloaded %s: %d origins (%d added, %d removed)",
            self.config_path,
            len(after),
            len(after - before),
            len(before - after),
        )
        self._refresh_surfaces()
        self.notifier.ready()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    async def _surfaces_loop(self) -> None:
        while True:
            self._refresh_surfaces()
            self._publish_health()
            await asyncio.sleep(1.0)

    async def _coordinator_loop(self) -> None:
        """Group commits, drain deadlines, settling and reaping: when they fall due (see
        Coordinator.next_wakeup), or at once when a change waits to be committed."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        self.coordinator.on_work = wake.set
        while True:
            wake.clear()
            now = loop.time()
            alive = {
                m.name
                for m in self.cluster.members()
                if m.state in (NodeState.ALIVE, NodeState.SUSPECT)
            }
            had_fault = "storage" in self.coordinator.faults
            self.coordinator.tick(now, alive)
            if had_fault != ("storage" in self.coordinator.faults):
                self._refresh_soon()
            if self.identify_until and now >= self.identify_until:
                self.identify_until = 0.0
                self._refresh_soon()
            at = self.coordinator.next_wakeup(loop.time())
            if self.identify_until:
                at = min(at, self.identify_until)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), max(at - loop.time(), 0.0))

    async def start(self) -> None:
        """Bring the node up; returns once it is READY (API listening, origins applied)."""
        _raise_fd_limit()
        self._install_signals()
        self.watchdog.start()
        self._refresh_surfaces()
        await self.engine.start()
        self.webhooks.start()
        self.coordinator.start(
            self.config.origins,
            asyncio.get_running_loop().time(),
            alone=not self.cluster.may_find_peers(),
        )
        await self._serve_api()
        await self._start_cluster()
        self.supervisor.spawn("surfaces", self._surfaces_loop)
        self.supervisor.spawn("coordinator", self._coordinator_loop)
        self.supervisor.spawn("joiner", self.cluster.run_joiner)
        self.health.ready = True
        self._refresh_surfaces()
        # everything built at start-up lives for the whole run: keep it out of the
        # collector's full passes (which otherwise stall the loop for 100+ ms at 10k origins).
        # Start-up leaves no cyclic garbage among the old objects (a full collection here
        # found none, and cost 12 ms of a ~250 ms start): sweep only the young ones.
        gc.collect(1)
        gc.freeze()
        _trim_heap()
        self.notifier.ready(self._summary)
        log.info(
            "edge-agent %s ready: node %s, %d origins, pid %d",
            __version__,
            self.node_name,
            len(self.config.origins),
            os.getpid(),
        )

    async def stop(self) -> None:
        """Stop everything; in-flight checks are cancelled, sockets closed."""
        self.notifier.stopping()
        try:
            async with asyncio.timeout(STOP_TIMEOUT - 0.5):
                await self.supervisor.stop()
                await self.cluster.leave_and_stop(LEAVE_TIMEOUT)
                await self.engine.stop()
                await self.webhooks.stop()
                self.events.close()
                if self._runner is not None:
                    await self._runner.cleanup()
        except TimeoutError:
            log.error("shutdown took longer than %.0fs; exiting anyway", STOP_TIMEOUT)
        finally:
            self.coordinator.close()
            self.watchdog.stop()
            self.leds.close()
            with contextlib.suppress(RuntimeError):
                self._remove_signals()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (which may arrive mid-start), then stop."""
        starter = asyncio.create_task(self.start(), name="start")
        stopper = asyncio.create_task(self._stop.wait(), name="stop-signal")
        try:
            await asyncio.wait({starter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if starter.done():
                starter.result()  # a failed start raises here
                await stopper
            log.info("stopping")
        finally:
            for t in (starter, stopper):
                t.cancel()
            await asyncio.gather(starter, stopper, return_exceptions=True)
            await self.stop()
        log.info("stopped")


def _raise_fd_limit() -> None:
    """Keep-alive connections to thousands of origins need more than the usual 1,024 fds."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 65536), hard))
    except (ValueError, OSError) as e:
        log.debug("cannot raise the open-file limit: %s", e)


def _trim_heap() -> None:
    """Hand the heap pages freed after start-up (import-time garbage) back to the OS.

    A Pi Zero 2 W has 512 MB for everything; glibc keeps freed memory mapped unless
    asked. Harmless where malloc_trim does not exist.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
