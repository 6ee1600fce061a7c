"""The running agent: builds the parts from a Config, wires their events, supervises
their tasks, and stops cleanly.

One asyncio loop runs everything. SIGTERM/SIGINT stop the agent within STOP_TIMEOUT
seconds; SIGHUP re-reads the config file and applies the origin list without a restart.
The jobs around the wiring each live in their own place in agent/shell/: what the node
shows (views.py, pushed by surfaces.py), what the API does (api/backend.py), when a
webhook fires (alerts.py), task restarts (supervisor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__
from agent.checks import CheckEngine, LatencyHistory, ProbeResult, Transition
from agent.checks import Status as CheckStatus
from agent.domain import ConfigError, Health
from agent.membership import Event, MemberEvent, NodeState, UserMessage
from agent.node import ReplicationDecodeError, ReplicationMessage
from agent.shell.agent_check import AgentCheckServer
from agent.shell.alarm import Alarm
from agent.shell.alert_rules import AlertRules
from agent.shell.alertmanager import AlertmanagerCollector, AlertmanagerSender
from agent.shell.alerts import AlertPolicy
from agent.shell.api.backend import ApiBackend
from agent.shell.api.events import EventHub
from agent.shell.api.server import ApiServer
from agent.shell.cluster import Cluster
from agent.shell.cluster_metrics import ClusterCollector
from agent.shell.config import Config, api_socket_path, load_config
from agent.shell.coordinator import Coordinator, CoordinatorCollector, VerdictChange, send_outputs
from agent.shell.filewatch import FileWatch
from agent.shell.gc_guard import GcCollector, GcGuard
from agent.shell.identify import IdentifyDecodeError, decode_identify, is_identify
from agent.shell.keyring_file import KeyringError
from agent.shell.leds import Leds
from agent.shell.metrics import Metrics
from agent.shell.names import node_name
from agent.shell.offloop_decode import OffLoopDecoder
from agent.shell.supervisor import Supervisor
from agent.shell.surfaces import Surfaces
from agent.shell.systemd import Notifier, Watchdog
from agent.shell.vantage_watch import VantageWatch
from agent.shell.verdict_log import VerdictLog
from agent.shell.views import Identify, NodeViews
from agent.shell.webhooks import WebhookCollector, Webhooks

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
GOSSIP_RETRY = 2.0
#: s between looks for firing alerts due a re-send (each is re-sent once a minute,
#: alert_rules.RESEND_INTERVAL; a node that came to own a down origin sends within this)
ALERT_TICK = 5.0
TOKEN_RECHECK = 5.0  # s between re-reads of a fleet token file inotify cannot watch
LEAVE_TIMEOUT = 2.0  # of the 5 s stop budget: time for the leave to be gossiped
# sections a SIGHUP reports as changed but applies only at restart
RESTART_SECTIONS = ("node", "cluster", "gossip", "api", "leds", "checks", "log", "store", "lb")

__all__ = ["Agent"]


class Agent:
    """One node. Build it with a Config, then `await run()` until a stop signal."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        *,
        pin_factory: Any = None,
        cluster: Cluster | None = None,
    ) -> None:
        """``pin_factory``: gpiozero's, for the LEDs (tests pass a MockFactory);
        ``cluster``: one whose gossip launch.py started ahead of the rest."""
        self.config = config
        self.config_path = config_path
        self.node_name = node_name(config)
        self.metrics = Metrics()
        self.health = Health()
        self.notifier = Notifier.from_env()
        self.watchdog = Watchdog.from_env(self.notifier)
        self.events = EventHub()
        self.identify = Identify()
        self.history = LatencyHistory()  # the dashboard's sparklines (checks/history.py)
        user_agent = f"{config.checks.user_agent}/{__version__}"
        self.engine = CheckEngine(
            concurrency=config.checks.concurrency,
            metrics=self.metrics,
            on_transition=self._on_transition,
            on_result=self._on_result,
            user_agent=user_agent,
        )
        self.coordinator = Coordinator(self.node_name, config, self.engine)
        self.coordinator.on_verdict = self._on_verdict
        self.coordinator.on_origins = self._on_origins
        self.metrics.bad_input.labels("file", "store-record").inc(self.coordinator.bad_records)
        self.webhooks = Webhooks(config.webhooks, user_agent)
        self.alerts = AlertPolicy(self.node_name, self.webhooks.send, enabled=bool(config.webhooks))
        self.verdict_log = VerdictLog()
        self.vantage = VantageWatch(
            lambda: self.coordinator.core,
            self.metrics,
            send=self.webhooks.send,
            alerts=bool(config.webhooks),
            wall=time.time,
            on_sites=self._on_sites,
        )
        # [[alertmanager]]: every owner sends, Alertmanager deduplicates (alert_rules.py)
        self.alertmanager = AlertmanagerSender(config.alertmanagers, user_agent)
        self.alert_rules = AlertRules(self.node_name, cluster=config.cluster.name)
        self._verdict_soon = False  # a summary check is queued for this loop pass
        self._verdict_timer: asyncio.TimerHandle | None = None  # the summary's deadline
        self.leds = Leds(config.leds, pin_factory=pin_factory)
        if cluster is None:
            cluster = Cluster(config, self.node_name)
        self.cluster = cluster
        # events held since an early gossip start are delivered in attach(), from start()
        self.coordinator.transport = lambda out: send_outputs(self.cluster.node, out)
        self.metrics.registry.register(ClusterCollector(self.cluster))
        self.metrics.registry.register(CoordinatorCollector(self.coordinator))
        self.metrics.registry.register(WebhookCollector(self.webhooks))
        self.metrics.registry.register(AlertmanagerCollector(self.alertmanager))
        self.gc_guard = GcGuard()
        self.metrics.registry.register(GcCollector(self.gc_guard))
        self.views = NodeViews(
            config=config,
            node_name=self.node_name,
            coordinator=self.coordinator,
            engine=self.engine,
            cluster=self.cluster,
            health=self.health,
            identify=self.identify,
            history=self.history,
            led_pins=self.leds.levels,
            led_kind=lambda: self.leds.kind,
            now=_loop_time,
        )
        self.surfaces = Surfaces(
            self.views,
            health=self.health,
            leds=self.leds,
            notifier=self.notifier,
            metrics=self.metrics,
            events=self.events,
            faults=lambda: {
                **self.cluster.faults,
                **self.coordinator.faults,
                **self.api.faults,
                **self.leds.faults(),
                **self.vantage.poll(),
            },
        )
        self.coordinator.on_faults = self.surfaces.refresh_soon
        self.coordinator.on_change = self.surfaces.refresh_soon
        self.api = ApiBackend(
            self.views,
            api=config.api,
            coordinator=self.coordinator,
            cluster=self.cluster,
            metrics=self.metrics,
            events=self.events,
            start_identify=self._start_identify,
            now=_loop_time,
            changed=self.surfaces.refresh_soon,
        )
        self.server = ApiServer(
            self.api,
            config.api.listen,
            self.health,
            self.surfaces.refresh,
            socket_path=api_socket_path(config),
        )
        lb = config.lb
        self.agent_check = (
            AgentCheckServer(
                lb.agent_listen,
                self.coordinator.lb_status,
                self.metrics,
                self.health,
                max_connections=lb.max_connections,
                read_timeout=lb.read_timeout,
                refresh=self.surfaces.refresh,
            )
            if lb.agent_listen is not None
            else None
        )
        self.supervisor = Supervisor(self.metrics)
        self.decoder = OffLoopDecoder(self._deliver_decoded, self.coordinator.holds_all_of)
        self._stop = asyncio.Event()
        self._wake_coordinator: Callable[[], None] = lambda: None  # set by its loop

    # --- events between the parts ------------------------------------------------------

    def _refresh_soon(self) -> None:
        self.surfaces.refresh_soon()

    def _start_identify(self, seconds: float, who: str) -> None:
        log.info("identify: blinking for %.0fs (asked by %s)", seconds, who)
        self.identify.until = _loop_time() + seconds
        self.surfaces.refresh_soon()
        self._wake_coordinator()  # its loop ends the blink: it must know the new deadline

    def _on_transition(self, t: Transition) -> None:
        """This node's own check changed status: log it, and it becomes our observation.

        A first result (from ``unknown``: at start, or when this node takes an origin
        over) is not a change, so it is logged at debug only; the fleet verdicts it
        leads to are summed up in one line (agent/shell/verdict_log.py)."""
        if t.old == CheckStatus.UNKNOWN:
            level = logging.DEBUG
        else:
            level = logging.WARNING if t.new == CheckStatus.DOWN else logging.INFO
        log.log(
            level,
            "origin %s is %s here (%s)",
            t.origin_id,
            t.new,
            t.reason,
            extra={"ORIGIN": t.origin_id, "VERDICT": str(t.new), "WAS": str(t.old)},
        )
        self.coordinator.on_transition(t)
        self.surfaces.refresh_soon()

    def _on_result(self, origin_id: str, result: ProbeResult) -> None:
        """Every probe this node runs: its latency goes into the last hour's history."""
        self.history.add(origin_id, result.latency, result.ok, result.at)

    def _on_verdict(self, change: VerdictChange) -> None:
        """The fleet's verdict on an origin changed (from any node's observations)."""
        record = change.as_dict()
        self.metrics.verdict_changes.labels(change.new).inc()
        self.events.publish("transition", record)
        if self.verdict_log.on_change(change, _loop_time()):
            log.log(
                logging.WARNING if change.new == "down" else logging.INFO,
                "verdict: origin %s is %s (was %s)",
                change.origin,
                change.new,
                change.old,
                extra={"ORIGIN": change.origin, "VERDICT": change.new, "WAS": change.old},
            )
        elif not self._verdict_soon:  # a first verdict: told in a summary
            self._verdict_soon = True
            asyncio.get_running_loop().call_soon(self._flush_verdicts)
        self.alerts.on_verdict(change, record)
        if self.alertmanager.enabled:
            self.alertmanager.send(self.alert_rules.on_verdict(change, time.time()))
        self.surfaces.refresh_soon()

    def _on_sites(self, sites: dict[str, list[str]]) -> None:
        if self.alertmanager.enabled:
            self.alertmanager.send(self.alert_rules.on_sites(sites, time.time()))

    async def _alert_loop(self) -> None:
        """Re-send firing alerts to Alertmanager on its expected cadence (alert_rules.py)."""
        while True:
            await asyncio.sleep(ALERT_TICK)
            c = self.coordinator
            self.alertmanager.send(self.alert_rules.due(time.time(), c.verdict, c.owners))

    def _flush_verdicts(self, timer: bool = False) -> None:
        """Log the summary of first verdicts once it is due (verdict_log.py): checked
        after each loop pass that brought first verdicts, and at the batch's deadline."""
        if timer:
            self._verdict_timer = None
        else:
            self._verdict_soon = False
        now = _loop_time()
        at = self.verdict_log.flush_at(len(self.coordinator.placement.origins))
        if at is None:
            return
        if now < at:
            if self._verdict_timer is None:
                loop = asyncio.get_running_loop()
                self._verdict_timer = loop.call_later(at - now, self._flush_verdicts, True)
            return
        if self._verdict_timer is not None:
            self._verdict_timer.cancel()
            self._verdict_timer = None
        for line, fields in self.verdict_log.take(self.coordinator.verdict):
            log.info("%s", line, extra=fields)

    def _on_origins(self, ids: set[str]) -> None:
        gone = [i for i in ids if i not in self.coordinator.placement.origins]
        self.alerts.forget(gone)
        if self.alertmanager.enabled:
            self.alertmanager.send(self.alert_rules.forget(gone, time.time()))
        self.history.forget(gone)
        for origin in gone:
            self.verdict_log.forget(origin)
        self.views.origins_changed(ids)  # the sorted ids listings page through
        self.surfaces.origins_changed(ids)

    def _on_cluster_event(self, ev: Event) -> None:
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
        if self.decoder.offer(ev):
            return  # a large delta: decoded on a thread, then delivered (_deliver_decoded)
        self.coordinator.on_event(ev, _loop_time(), self.cluster.members)
        if isinstance(ev, MemberEvent):
            self.api.check_token_agreement()  # a peer's token came, went or changed
        if isinstance(ev, MemberEvent) and self.events.listeners:
            for m in self.cluster.members_view():
                if m["name"] == ev.member.name:
                    self.events.publish("member", m)

    def _deliver_decoded(self, ev: Event, msg: ReplicationMessage | ReplicationDecodeError) -> None:
        self.coordinator.on_event(ev, _loop_time(), self.cluster.members, msg)

    # --- start-up ----------------------------------------------------------------------

    async def _coordinator_loop(self) -> None:
        """Group commits, drain deadlines, settling and reaping: when they fall due (see
        Coordinator.next_wakeup), or at once when a change waits to be committed."""
        loop = asyncio.get_running_loop()
        alarm = Alarm()
        self.coordinator.on_work = alarm.ring
        self._wake_coordinator = alarm.ring
        while True:
            alarm.clear()
            now = loop.time()
            alive = {
                m.name
                for m in self.cluster.members()
                if m.state in (NodeState.ALIVE, NodeState.SUSPECT)
            }
            self.coordinator.tick(now, alive)
            if self.identify.until and now >= self.identify.until:
                self.identify.until = 0.0
                self.surfaces.refresh_soon()
            at = self.coordinator.next_wakeup(loop.time())
            if self.identify.until:
                at = min(at, self.identify.until)
            await alarm.sleep(at)

    async def _token_loop(self) -> None:
        """Re-read the fleet token file when it changes (inotify: agent/shell/filewatch.py;
        every TOKEN_RECHECK seconds where it cannot be watched): a rotated token is
        advertised without a restart or a write (agent/shell/fleet_token.py). The peers'
        tokens are compared whenever a member changes (``_on_cluster_event``)."""
        path = self.config.api.token_file
        if path is None:
            return  # no file to follow: every write is refused, and says why
        loop = asyncio.get_running_loop()
        alarm = Alarm()
        watch = FileWatch(path, alarm.ring)
        try:
            while True:
                if not watch.active and watch.start():
                    self.api.check_token()  # a change just before the watch began
                # without inotify, or without the directory (yet), poll as before
                await alarm.sleep(math.inf if watch.active else loop.time() + TOKEN_RECHECK)
                self.api.check_token()
        finally:
            watch.stop()

    async def start(self) -> None:
        """Bring the node up; returns once it is READY: gossip and checks running, the API
        listening unless its port is taken (then it follows when the port frees)."""
        _raise_fd_limit()
        self._install_signals()
        self.watchdog.start()
        self.surfaces.refresh()
        await self.engine.start()
        self.webhooks.start()
        self.alertmanager.start()
        self.coordinator.start(
            self.config.origins, _loop_time(), alone=not self.cluster.may_find_peers()
        )
        self.api.check_token()
        if not await self.server.start():  # taken: the node goes on, the API follows
            self.supervisor.spawn("api", self.server.run)
        self.cluster.api_port = self.server.port or self.config.api.listen.port
        # taken: a standing fault, retried; HAProxy keeps its servers' states meanwhile
        if self.agent_check is not None and not await self.agent_check.start():
            self.supervisor.spawn("agent-check", self.agent_check.run)
        self.supervisor.spawn("decoder", self.decoder.run)  # before gossip brings deltas
        self.cluster.attach(
            on_event=self._on_cluster_event,
            local_state=self.coordinator.replicator.local_state,
            on_change=self._refresh_soon,
        )
        if self.cluster.running:  # launch.py started it: announce the API's port now
            self.cluster.refresh_meta()
            self.cluster.start_discovery()
        else:
            await start_gossip(self.cluster, self.health, self.surfaces.refresh)
        self.supervisor.spawn("surfaces", self.surfaces.run)
        self.supervisor.spawn("coordinator", self._coordinator_loop)
        self.supervisor.spawn("joiner", self.cluster.run_joiner)
        self.supervisor.spawn("fleet-token", self._token_loop)
        if self.alertmanager.enabled:
            self.supervisor.spawn("alertmanager", self._alert_loop)
        self.health.ready = True
        self.surfaces.refresh()
        # everything built at start-up lives for the whole run: keep it out of the
        # collector's full passes (which otherwise stall the loop for 100+ ms at 10k origins).
        # Start-up leaves no cyclic garbage among the old objects (a full collection here
        # found none, and cost 12 ms of a ~250 ms start): sweep only the young ones.
        gc.collect(1)
        gc.freeze()
        self.gc_guard.install(asyncio.get_running_loop())  # and what batches add later
        _trim_heap()
        self.notifier.ready(self.surfaces.summary)
        log.info("edge-agent %s ready: %s", __version__, self._ready_text())

    def _ready_text(self) -> str:
        """The origins this node knows (config, API-declared, recovered or replicated)
        and checks, not only its config's: a fleet's catalogue is wider than one file."""
        known = len(self.coordinator.placement.origins)
        noun = "origin" if known == 1 else "origins"
        if self.coordinator.settled:
            checked = f"{len(self.coordinator.mine()):,} checked here"
        else:
            checked = "checks start once the cluster is learnt"
        return f"node {self.node_name}, {known:,} {noun} known, {checked}, pid {os.getpid()}"

    # --- reload, stop --------------------------------------------------------------------

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
        changed = [s for s in RESTART_SECTIONS if getattr(new, s) != getattr(self.config, s)]
        if new.webhooks != self.config.webhooks:
            changed.append("webhook")
        if new.alertmanagers != self.config.alertmanagers:
            changed.append("alertmanager")
        if changed:
            log.warning("reload: [%s] changed; those take effect at restart", "], [".join(changed))
        problem = self.cluster.reload_keyring()
        if problem is not None:
            log.error("reload: %s", problem)
        before = {o.id for o in self.config.origins}
        after = {o.id for o in new.origins}
        self.coordinator.declare_config(new.origins, _loop_time())
        self.config = dataclasses.replace(self.config, origins=new.origins, source=new.source)
        self.metrics.reloads.labels("ok").inc()
        log.info(
            "reloaded %s: %d origins (%d added, %d removed)",
            self.config_path,
            len(after),
            len(after - before),
            len(before - after),
        )
        self.surfaces.refresh()
        self.notifier.ready()

    @property
    def api_url(self) -> str | None:
        return self.server.url

    def request_stop(self) -> None:
        self._stop.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    async def stop(self) -> None:
        """Stop everything; in-flight checks are cancelled, sockets closed."""
        self.notifier.stopping()
        try:
            async with asyncio.timeout(STOP_TIMEOUT - 0.5):
                await self.supervisor.stop()
                await self.cluster.leave_and_stop(LEAVE_TIMEOUT)
                await self.engine.stop()
                await self.webhooks.stop()
                await self.alertmanager.stop()
                self.events.close()
                await self.server.stop()
                if self.agent_check is not None:
                    await self.agent_check.stop()
        except TimeoutError:
            log.error("shutdown took longer than %.0fs; exiting anyway", STOP_TIMEOUT)
        finally:
            if self._verdict_timer is not None:
                self._verdict_timer.cancel()
            self.gc_guard.remove()
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


async def start_gossip(cluster: Cluster, health: Health, refresh: Callable[[], None]) -> None:
    """Start gossip, retrying while the port is taken; a bad keyring is a standing fault
    (health failing, red LED), not a crash that systemd would repeat forever."""
    bind = cluster.config.cluster.bind
    while True:
        try:
            await cluster.start()
            break
        except KeyringError as e:
            log.error("gossip disabled: keyring %s", e)
            health.fail("keyring", str(e))
            refresh()
            return
        except OSError as e:
            reason = f"cannot bind gossip port {bind}: {e.strerror or e}"
            if "gossip" not in health.failing:
                log.error("%s; retrying every %.0fs", reason, GOSSIP_RETRY)
            health.fail("gossip", reason)
            refresh()
            await asyncio.sleep(GOSSIP_RETRY)
    health.clear("gossip")


def _loop_time() -> float:
    """The running loop's clock: the engine's and the coordinator's ``now``."""
    return asyncio.get_running_loop().time()


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
