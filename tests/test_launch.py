"""Gossip first (agent/shell/launch.py): a real `edge-agent run` joins its seed before
it has loaded the rest of itself, and still ends up with the fleet's catalogue at once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from tests.conftest import AgentProcess, free_port, wait_for


class HoldingSeed:
    """A TCP listener that accepts and holds connections (a join then waits on it), and
    notes whether the agent had sent READY=1 when its first connection came in."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.sock.settimeout(0.1)
        self.ready_at_first: bool | None = None
        self.agent: AgentProcess | None = None
        self.held: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            if self.ready_at_first is None and self.agent is not None:
                self.ready_at_first = "READY=1" in self.agent.recv_notify()
            self.held.append(conn)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        for c in self.held:
            c.close()
        self.sock.close()


def test_the_join_goes_out_before_the_node_is_ready(
    agent_process: Callable[..., AgentProcess],
) -> None:
    """The seed's first connection arrives before READY: membership did not wait for the
    HTTP stack, the check engine and the API to load (before launch.py it came after)."""
    seed = HoldingSeed()
    try:
        a = agent_process(cluster=f'join = ["127.0.0.1:{seed.port}"]')
        seed.agent = a
        a.start()
        a.wait_notify("READY=1")
        wait_for(lambda: seed.ready_at_first is not None, 10, "the seed's first connection")
        assert seed.ready_at_first is False, "the join went out only after READY"
    finally:
        seed.close()


def test_a_node_that_gossips_first_has_the_catalogue_at_once(
    agent_process: Callable[..., AgentProcess],
) -> None:
    """The push/pull of an early join carries no digest of ours (there is no store yet):
    once the rest is attached the node pushes/pulls again, so it holds the fleet's
    catalogue within seconds, not a push/pull interval (30 s) later, and the seed holds
    the node's own config origins as well."""
    first = agent_process(
        '[[origin]]\nid = "from-a"\nurl = "http://127.0.0.1:9/a"\ninterval = "60s"\n', name="a"
    ).start()
    first.wait_notify("READY=1")
    second = agent_process(
        '[[origin]]\nid = "from-b"\nurl = "http://127.0.0.1:9/b"\ninterval = "60s"\n',
        name="b",
        cluster=f'join = ["127.0.0.1:{first.gossip_port}"]',
    ).start()
    second.wait_notify("READY=1")

    def ids(node: AgentProcess) -> set[str]:
        status, body = node.get("/v1/origins")
        assert status == 200
        return {o["id"] for o in body}

    wait_for(lambda: ids(second) == {"from-a", "from-b"} or None, 8, "b holding a's origin")
    wait_for(lambda: ids(first) == {"from-a", "from-b"} or None, 8, "a holding b's origin")
    status, members = second.get("/v1/members")
    assert status == 200
    assert {m["name"] for m in members if m["state"] == "alive"} == {"a", "b"}
