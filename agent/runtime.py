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
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from agent import __version__
from agent.api.app import build_app
from agent.checks.engine import CheckEngine
from agent.checks.state import Status as CheckStatus
from agent.checks.state import Transition
from agent.cluster import Cluster, ClusterCollector, KeyringError
from agent.config import Config, ConfigError, OriginSpec, load_config
from agent.health import Health
from agent.health import Status as HealthStatus
from agent.identity import node_name
from agent.leds import Leds, led_state
from agent.metrics import Metrics
from agent.systemd import Notifier, Watchdog

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
API_RETRY = 2.0
TRANSITIONS_KEPT = 200
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

    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.node_name = node_name(config)
        self.metrics = Metrics()
        self.health = Health()
        self.notifier = Notifier.from_env()
        self.watchdog = Watchdog.from_env(self.notifier)
        self.transitions: deque[dict[str, Any]] = deque(maxlen=TRANSITIONS_KEPT)
        self.started_at = time.time()
        self.engine = CheckEngine(
            concurrency=config.checks.concurrency,
            metrics=self.metrics,
            on_transition=self._on_transition,
            user_agent=f"{config.checks.user_agent}/{__version__}",
        )
        self.leds = Leds(config.leds)
        self.cluster = Cluster(config, self.node_name, on_change=self._refresh_soon)
        self.metrics.registry.register(ClusterCollector(self.cluster))
        self.supervisor = Supervisor(self.metrics)
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.api_url: str | None = None
        self._summary = ""
        self._refresh_pending = False
        self._synced: set[str] = set()

    # --- views the API reads -------------------------------------------------------------

    @staticmethod
    def _wall(loop_time: float | None) -> float | None:
        """Engine times are loop.time() (monotonic); the API speaks wall-clock seconds."""
        if loop_time is None:
            return None
        return round(time.time() - (asyncio.get_running_loop().time() - loop_time), 3)

    def _origin_dict(self, view: Any) -> dict[str, Any]:
        spec: OriginSpec = view.spec
        last = view.last
        status = str(view.status)
        observations = []
        if last is not None:
            observations.append(
                {
                    "observer": self.node_name,
                    "status": status,
                    "since": self._wall(view.since),
                    "latency_ms": round(last.latency * 1000, 1),
                    "reason": last.reason,
                    "checked_at": self._wall(last.at),
                    "tls_expiry_days": view.tls_expiry_days,
                }
            )
        return {
            "id": spec.id,
            "spec": spec.to_dict(),
            "verdict": status,
            "owners": [self.node_name],
            "observations": observations,
        }

    def origins_view(self) -> list[dict[str, Any]]:
        views = self.engine.views()
        return [self._origin_dict(views[k]) for k in sorted(views)]

    def origin_view(self, origin_id: str) -> dict[str, Any] | None:
        view = self.engine.view(origin_id)
        return None if view is None else self._origin_dict(view)

    def counts(self) -> dict[str, int]:
        """Origins by status; O(1) (kept by the engine), so it is cheap on every event."""
        c = {"up": 0, "down": 0, "unknown": 0}
        for status, n in self.engine.status_counts().items():
            c[str(status)] = n
        return c

    def summary(self) -> str:
        c = self.counts()
        total = sum(c.values())
        parts = [f"{c['up']} up", f"{c['down']} down"]
        if c["unknown"]:
            parts.append(f"{c['unknown']} unknown")
        word = "origin" if total == 1 else "origins"
        return f"{total} {word}: " + ", ".join(parts)

    def members_view(self) -> list[dict[str, Any]]:
        return self.cluster.members_view()

    def health_view(self) -> dict[str, Any]:
        return {
            "cluster": {"name": self.config.cluster.name, "peers": self.cluster.peers()},
            "status": str(self.health.status),
            "node": self.node_name,
            "version": __version__,
            "reasons": self.health.reasons(),
            "summary": self.summary(),
            "origins": self.counts(),
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    # --- events --------------------------------------------------------------------------

    def _on_transition(self, t: Transition) -> None:
        record = {
            "origin": t.origin_id,
            "from": str(t.old),
            "to": str(t.new),
            "reason": t.reason,
            "latency_ms": round(t.latency * 1000, 1),
            "at": self._wall(t.at),
        }
        self.transitions.append(record)
        level = logging.WARNING if t.new == CheckStatus.DOWN else logging.INFO
        log.log(
            level,
            "origin %s is %s (%s)",
            t.origin_id,
            t.new,
            t.reason,
            extra={"ORIGIN": t.origin_id, "VERDICT": str(t.new)},
        )
        self._refresh_soon()

    def _refresh_soon(self) -> None:
        """Coalesce: 10,000 origins reporting at once refresh the surfaces once, not 10,000x."""
        if not self._refresh_pending:
            self._refresh_pending = True
            asyncio.get_running_loop().call_soon(self._refresh_surfaces)

    def _refresh_surfaces(self) -> None:
        """Push the current state to the places a person looks: LEDs, systemd, /metrics."""
        self._refresh_pending = False
        self._sync_faults(self.cluster.faults)
        c = self.counts()
        status = self.health.status
        self.leds.set(led_state(status, c["up"], c["down"]))
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
            for name in ("node", "cluster", "gossip", "api", "leds", "checks", "log")
            if getattr(new, name) != getattr(self.config, name)
        ]
        if changed:
            log.warning("reload: [%s] changed; those take effect at restart", "], [".join(changed))
        before = {o.id for o in self.config.origins}
        after = {o.id for o in new.origins}
        self.engine.set_origins(new.origins)
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
            await asyncio.sleep(1.0)

    async def start(self) -> None:
        """Bring the node up; returns once it is READY (API listening, origins applied)."""
        _raise_fd_limit()
        self._install_signals()
        self.watchdog.start()
        self._refresh_surfaces()
        await self.engine.start()
        self.engine.set_origins(self.config.origins)
        await self._serve_api()
        await self._start_cluster()
        self.supervisor.spawn("surfaces", self._surfaces_loop)
        self.supervisor.spawn("joiner", self.cluster.run_joiner)
        self.health.ready = True
        self._refresh_surfaces()
        # everything built at start-up lives for the whole run: keep it out of the
        # collector's full passes (which otherwise stall the loop for 100+ ms at 10k origins)
        gc.collect()
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
                if self._runner is not None:
                    await self._runner.cleanup()
        except TimeoutError:
            log.error("shutdown took longer than %.0fs; exiting anyway", STOP_TIMEOUT)
        finally:
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
