"""Prometheus metrics for the whole agent, in one registry that /metrics serves.

One object owns every metric so that parts record into it without importing
each other, and tests can build a fresh, isolated registry per agent.
Per-origin series are gauges only; histograms are labelled by kind, not origin,
so 10,000 origins do not become 10,000 x buckets series. The per-origin gauges are kept
outside the registry as ready-made lines (agent/shell/origin_gauge.py), so a scrape at
100,000 origins takes milliseconds, not seconds; ``exposition`` serves both.

Names follow Prometheus' conventions (base units, ``_total`` on counters, one unit a
metric) and /metrics passes ``promtool check metrics``; CHANGELOG.md lists the renames.
No ``_created`` series: they double every counter's series for a figure no rule uses.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from agent import __version__
from agent.shell.origin_gauge import OriginGauge

# process-wide in prometheus_client: every registry of this process drops them
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("edge_agent_build", "Version of this agent.", registry=r).info(
            {"version": __version__}
        )
        self.checks = Counter(
            "edge_agent_checks",
            "Probes run, by origin kind and result (ok, fail, or stalled: a failure not "
            "recorded because this node's event loop was stalled past the timeout).",
            ["kind", "result"],
            registry=r,
        )
        self.check_latency = Histogram(
            "edge_agent_check_latency_seconds",
            "Probe latency, by origin kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.transitions = Counter(
            "edge_agent_origin_transitions",
            "Origin status transitions seen by this node's checks, by new status.",
            ["status"],
            registry=r,
        )
        self.verdict_changes = Counter(
            "edge_agent_verdict_changes",
            "Changes of the fleet's verdict on an origin, by new verdict (every node counts "
            "the same changes).",
            ["verdict"],
            registry=r,
        )
        self.origins_by_verdict = Gauge(
            "edge_agent_origins",
            "Origins in the fleet by the fleet's current verdict (up, down, disputed, "
            "unknown); every node reports the same counts.",
            ["verdict"],
            registry=r,
        )
        # one series per origin this node checks: written out apart (origin_gauge.py)
        self.origin_up = OriginGauge(
            "edge_agent_origin_up",
            "This node's checks' status of each origin it checks: 1 up, 0 down; no series "
            "while unknown (edge_agent_origins has the fleet's counts by verdict).",
        )
        self.check_duration = OriginGauge(
            "edge_agent_origin_check_duration_seconds",
            "How long the last check of each origin this node checks took, failed or not.",
        )
        self.tls_expiry = OriginGauge(
            "edge_agent_origin_tls_expiry_timestamp_seconds",
            "When the origin's TLS certificate expires (its notAfter), in seconds since "
            "the epoch; https origins only.",
        )
        self.checks_in_flight = Gauge(
            "edge_agent_checks_in_flight", "Probes running right now.", registry=r
        )
        self.check_lag = Histogram(
            "edge_agent_check_start_lag_seconds",
            "How late probes started versus their schedule (concurrency bound or a busy loop).",
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
            registry=r,
        )
        self.checks_late = Counter(
            "edge_agent_checks_late",
            "Probes that started more than one interval after they were due (a missed "
            "check deadline: the concurrency bound, or a busy or starved event loop), by "
            "origin kind.",
            ["kind"],
            registry=r,
        )
        self.bad_input = Counter(
            "edge_agent_bad_input",
            "Rejected input, by source (api, config, packet, stream, file) and kind.",
            ["source", "kind"],
            registry=r,
        )
        self.unknown_origin_lookups = Counter(
            "edge_agent_unknown_origin_lookups",
            "Lookups of an origin id the fleet does not know, by surface (api: "
            "GET /v1/origins/{id}, ready: .../ready, agent-check): not bad input, e.g. a "
            "load balancer still asking about a removed origin.",
            ["surface"],
            registry=r,
        )
        self.task_restarts = Counter(
            "edge_agent_task_restarts",
            "Background tasks that crashed and were restarted, by task.",
            ["task"],
            registry=r,
        )
        self.reloads = Counter(
            "edge_agent_config_reloads", "SIGHUP reloads, by result.", ["result"], registry=r
        )
        self.health = Gauge(
            "edge_agent_health",
            "1 for the node's current health status, 0 for the others.",
            ["status"],
            registry=r,
        )
        self.fault = Gauge(
            "edge_agent_fault",
            "1 while a part of the node has a standing fault (api, gossip, storage, ...), by "
            "part and level (failing or degraded); 0 once it cleared.",
            ["what", "level"],
            registry=r,
        )
        self.fault_starts = Counter(
            "edge_agent_fault_starts",
            "Times a standing fault began, by part: a fault that comes and goes shows here.",
            ["what"],
            registry=r,
        )

        # impaired vantage points (agent/node/vantage.py, agent/shell/vantage_watch.py)
        self.vantage_impaired = Gauge(
            "edge_agent_vantage_impaired",
            "1 while this node is an impaired vantage point: most of its checks fail while "
            "other sites see those origins up, so its checks do not count towards verdicts.",
            registry=r,
        )
        self.vantage_impairments = Counter(
            "edge_agent_vantage_impairments",
            "Times this node became an impaired vantage point.",
            registry=r,
        )
        self.impaired_observers = Gauge(
            "edge_agent_impaired_observers",
            "Members of the fleet that are impaired vantage points right now (as this node "
            "computes it; every node computes the same).",
            registry=r,
        )
        self.impaired_sites = Gauge(
            "edge_agent_impaired_sites",
            "Sites whose every live member is an impaired vantage point: sites that cannot "
            "reach the origins.",
            registry=r,
        )
        self.confirm_sites = Gauge(
            "edge_agent_confirm_sites",
            "Sites whose owners must agree before an origin is down (confirm_sites in effect).",
            registry=r,
        )

        # the load-balancer surfaces (agent/shell/agent_check.py, GET /v1/origins/{id}/ready)
        self.lb_answers = Counter(
            "edge_agent_lb_answers",
            "Answers given to load balancers, by surface (agent-check, ready) and answer "
            "(up, down).",
            ["surface", "answer"],
            registry=r,
        )
        self.lb_refused = Counter(
            "edge_agent_lb_agent_refused",
            "Agent-check connections closed unread: max_connections were already open.",
            registry=r,
        )
        self.lb_accept_paused = Counter(
            "edge_agent_lb_agent_accept_paused",
            "Times the agent-check port stopped accepting for a second: the process was out "
            "of file descriptors (or memory).",
            registry=r,
        )
        self.lb_connections = Gauge(
            "edge_agent_lb_agent_connections",
            "Agent-check connections open right now.",
            registry=r,
        )

    def exposition(self) -> bytes:
        """What /metrics serves: the registry, then the per-origin families."""
        return b"".join(
            [
                generate_latest(self.registry),
                self.origin_up.render_bytes(),
                self.check_duration.render_bytes(),
                self.tls_expiry.render_bytes(),
            ]
        )
