"""Membership timings and limits, defaulting to memberlist's DefaultLANConfig.

Matching memberlist's defaults matters: a Serf agent in the same cluster judges
our liveness on its own timers, and mismatched ones cause needless suspicion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    disable_tcp_pings: bool = False
    awareness_max_multiplier: int = 8
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    # the gossip tick sleeps while nothing is queued and, after a long sleep, sends a
    # newly queued message at once; False ticks every gossip_interval as memberlist's
    # ticker does, where a message waits for the next tick (bench/simulate.py compares)
    gossip_park: bool = True
    gossip_to_the_dead_time: float = 30.0
    push_pull_interval: float = 30.0
    tcp_timeout: float = 10.0
    udp_buffer_size: int = 1400
    enable_compression: bool = True
    # memberlist's default is 0 (never): a node whose address changed stays in conflict
    # until its dead record is reaped. Pis change address with DHCP, so we let a dead or
    # left node come back at a new address after this long.
    dead_node_reclaim_time: float = 10.0
    # Serf's MaxQueueDepth: user broadcasts (replication deltas, Serf intents) beyond this
    # are pruned, most-sent first, so a burst cannot grow the queue without bound; push/
    # pull repairs what they carried. memberlist's own queue needs none: it holds at most
    # one message per node.
    max_queue_depth: int = 4096


def suspicion_timeout(suspicion_mult: int, n: int, interval: float) -> float:
    """Lifeguard's minimum suspicion timeout: mult * max(1, log10(n)) * interval."""
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    # Go computes in whole milliseconds of scale; keep the same rounding
    return suspicion_mult * (math.floor(node_scale * 1000) / 1000) * interval


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times a broadcast is sent: mult * ceil(log10(n + 1))."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


PUSH_PULL_SCALE_THRESHOLD = 32


def push_pull_scale(interval: float, n: int) -> float:
    """Push/pull less often in big clusters: one more interval per doubling past 32."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1.0
    return multiplier * interval
