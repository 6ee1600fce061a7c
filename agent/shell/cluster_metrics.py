"""Membership figures for /metrics, read at scrape time (no per-packet metric calls)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.membership import DAMAGE as meta_damage
from agent.shell.cluster import Cluster


class ClusterCollector(Collector):
    """Exports membership counters at scrape time."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def collect(self) -> Iterable[Any]:
        node = self.cluster.node
        states = GaugeMetricFamily(
            "edge_agent_members",
            "Cluster members by state, as this node sees them.",
            labels=["state"],
        )
        counts = {"alive": 0, "suspect": 0, "dead": 0, "left": 0}
        for m in self.cluster.members():
            counts[m.state_name] += 1
        for k, v in counts.items():
            states.add_metric([k], v)
        yield states
        if node is None:
            return
        c = node.counters
        for name, help_, value in (
            ("edge_agent_gossip_packets_received", "UDP gossip packets received.", c.packets_in),
            ("edge_agent_gossip_packets_sent", "UDP gossip packets sent.", c.packets_out),
            ("edge_agent_gossip_bytes_received", "UDP gossip bytes received.", c.bytes_in),
            ("edge_agent_gossip_bytes_sent", "UDP gossip bytes sent.", c.bytes_out),
            ("edge_agent_gossip_streams_received", "TCP gossip streams accepted.", c.streams_in),
            ("edge_agent_gossip_streams_opened", "TCP gossip streams opened.", c.streams_out),
            (
                "edge_agent_advertise_moves",
                "Times this node moved to a new advertise address without a restart.",
                self.cluster.follower.moves,
            ),
        ):
            yield CounterMetricFamily(name, help_, value=value)
        reconnects = CounterMetricFamily(
            "edge_agent_reconnect_attempts",
            "Joins tried to members seen failed, by schedule (fast, slow, long_lost, mdns)"
            " and result (joined, no_answer).",
            labels=["kind", "result"],
        )
        for (kind, result), n in sorted(self.cluster.rejoiner.attempts.items()):
            reconnects.add_metric([kind, result], n)
        yield reconnects
        bad = CounterMetricFamily(
            "edge_agent_gossip_bad_input",
            "Gossip input dropped as malformed or unacceptable, by kind.",
            labels=["kind"],
        )
        for kind, n in sorted({**c.bad_input, "bad_meta": meta_damage.count}.items()):
            bad.add_metric([kind], n)
        yield bad
        broken = CounterMetricFamily(
            "edge_agent_gossip_stream_errors",
            "Accepted TCP gossip streams that broke before the exchange completed, by kind.",
            labels=["kind"],
        )
        for kind, n in sorted(c.stream_errors.items()):
            broken.add_metric([kind], n)
        yield broken
        if node.running:
            yield GaugeMetricFamily(
                "edge_agent_gossip_health_score",
                "Lifeguard local health score (0 = healthy; timeouts scale by score + 1).",
                value=node.health_score,
            )
            yield GaugeMetricFamily(
                "edge_agent_gossip_incarnation",
                "This node's incarnation.",
                value=node.incarnation,
            )
            dropped = CounterMetricFamily(
                "edge_agent_gossip_broadcasts_dropped",
                "Broadcasts dropped unsent (push/pull repairs them), by queue and reason.",
                labels=["queue", "reason"],
            )
            for (queue, reason), n in sorted(node.dropped_broadcasts().items()):
                dropped.add_metric([queue, reason], n)
            yield dropped
