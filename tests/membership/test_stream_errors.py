"""Inbound TCP gossip streams that break are counted by kind and exported in /metrics.

A peer that connects and stalls, or resets the connection mid-request, used to vanish
without a trace (`except (TimeoutError, OSError): pass` in the transport); an operator
chasing a flaky link had nothing to look at. Real sockets on loopback, a real Cluster.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from agent.membership import MembershipNode, Settings
from agent.shell.cluster import Cluster
from agent.shell.cluster_metrics import ClusterCollector
from agent.shell.config import parse_config
from tests.conftest import async_wait_for


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    return s


async def test_a_stalled_stream_is_counted_and_exported(tmp_path: Path) -> None:
    config = parse_config(
        {
            "node": {"name": "a", "data_dir": str(tmp_path)},
            "cluster": {"bind": "127.0.0.1:0", "discover": False},
            "gossip": {"tcp_timeout": "300ms"},
        }
    )
    cluster = Cluster(config, "a")
    await cluster.start()
    try:
        node = cluster.node
        assert node is not None
        s = connect(node.port)
        s.send(b"\x06")  # the first byte of a push/pull, then nothing
        await async_wait_for(
            lambda: node.counters.stream_errors.get("timeout") == 1, 5, "a timeout"
        )
        s.close()
        registry = CollectorRegistry()
        registry.register(ClusterCollector(cluster))
        text = generate_latest(registry).decode()
        assert 'edge_agent_gossip_stream_errors_total{kind="timeout"} 1.0' in text
    finally:
        await cluster.leave_and_stop(1.0)


async def test_a_reset_stream_is_counted_as_reset() -> None:
    node = MembershipNode("a", ("127.0.0.1", 0), settings=Settings(tcp_timeout=5.0))
    await node.start()
    try:
        s = connect(node.port)
        s.send(b"\x06")
        await async_wait_for(lambda: node.counters.streams_in == 1, 5, "the stream")
        # SO_LINGER 0: close() sends a RST instead of a FIN
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        await async_wait_for(lambda: node.counters.stream_errors.get("reset") == 1, 5, "a reset")
        assert node.counters.bad_input == {}  # not malformed: broken
    finally:
        await node.stop()
