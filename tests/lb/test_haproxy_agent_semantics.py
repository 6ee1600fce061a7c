"""What real HAProxy does with the agent's answers, as docs/load-balancers.md states it:
no cluster, a scripted agent in its place (a loopback TCP server answering what the test
says), so each claim is checked alone and fast.

- ``down #<reason with spaces>`` takes the server out; HAProxy keeps the description
  (``show stat``'s last_agt) and logs it with the state change;
- ``up`` puts it back;
- a connection closed with nothing written, and a refused connection (the node is
  down), change nothing: the server keeps its state, down or up;
- ``up`` does not override a failing regular check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_harness.haproxy import HAProxy, parse_stat
from edge_harness.port_origins import PortOrigins
from tests.conftest import free_port, wait_for
from tests.lb.conftest import LoopThread, require_haproxy

INTER = "200ms"  # agent-inter and inter: every state here is reached in a few of them


class ScriptedAgent:
    """Answers every connection with ``reply`` (None: closes with nothing written);
    ``listening`` False closes the port (connections refused)."""

    def __init__(self, loop: LoopThread, port: int) -> None:
        self.loop = loop
        self.port = port
        self.reply: bytes | None = b"up\n"
        self.asked = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.asked += 1
        try:
            await asyncio.wait_for(reader.readline(), 2)
            if self.reply is not None:
                writer.write(self.reply)
                await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    def listen(self, on: bool) -> None:
        async def switch() -> None:
            if on and self.server is None:
                self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            elif not on and self.server is not None:
                self.server.close()
                self.server = None

        self.loop.run(switch())

    def wait_asked(self, n: int = 3) -> None:
        """Until HAProxy has asked ``n`` more times (so it has seen the current reply)."""
        start = self.asked
        wait_for(lambda: self.asked >= start + n, 10, f"{n} more agent checks")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[HAProxy, ScriptedAgent, PortOrigins]]:
    require_haproxy()
    loop = LoopThread()
    origins = loop.run(PortOrigins().start(1))
    agent = ScriptedAgent(loop, free_port())
    agent.listen(True)
    sections = (
        "backend b\n"
        f"    server s {origins.address(0)} check inter {INTER} fall 2 rise 1 agent-check "
        f'agent-addr 127.0.0.1 agent-port {agent.port} agent-send "s\\n" agent-inter {INTER}\n'
    )
    hap = HAProxy(tmp_path / "haproxy", sections).start()
    try:
        yield hap, agent, origins
    finally:
        hap.stop()
        agent.listen(False)
        loop.run(origins.close())
        loop.close()


def status(hap: HAProxy) -> str:
    return hap.stat("b")["s"]["status"]


def wait_status(hap: HAProxy, want: str) -> None:
    try:
        wait_for(lambda: status(hap).startswith(want), 10, f"server {want}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{hap.diagnostics('b')}") from None


def test_down_with_a_reason_then_silence_then_up(
    rig: tuple[HAProxy, ScriptedAgent, PortOrigins],
) -> None:
    hap, agent, _ = rig
    wait_status(hap, "UP")
    reason = "n1: HTTP 500; n2: connection refused (fail open: no)"
    agent.reply = f"down #{reason}\n".encode()
    wait_status(hap, "DOWN")
    row = hap.stat("b")["s"]
    assert row["status"] == "DOWN (agent)" and reason in row["last_agt"], row
    wait_for(lambda: reason in hap.log.read_text(), 10, "the reason in HAProxy's log")
    down_line = next(x for x in hap.log.read_text().splitlines() if "is DOWN" in x)
    assert "Server b/s is DOWN" in down_line and reason in down_line, down_line

    # nothing written, then a refused connection: it stays down
    agent.reply = None
    agent.wait_asked()
    assert status(hap) == "DOWN (agent)", hap.diagnostics("b")
    agent.listen(False)
    wait_for(lambda: hap.stat("b")["s"]["agent_status"].startswith("L4"), 10, "agent refused")
    assert status(hap) == "DOWN (agent)", hap.diagnostics("b")

    agent.listen(True)
    agent.reply = b"up\n"
    wait_status(hap, "UP")


def test_silence_and_refusal_keep_an_up_server_up_and_up_does_not_override_a_failing_check(
    rig: tuple[HAProxy, ScriptedAgent, PortOrigins],
) -> None:
    hap, agent, origins = rig
    wait_status(hap, "UP")
    agent.reply = None
    agent.wait_asked()
    assert status(hap) == "UP", hap.diagnostics("b")
    agent.listen(False)
    wait_for(lambda: hap.stat("b")["s"]["agent_status"].startswith("L4"), 10, "agent refused")
    assert status(hap) == "UP", hap.diagnostics("b")

    # the origin stops listening: the regular check fails, and the agent's up is no help
    agent.listen(True)
    agent.reply = b"up\n"
    agent.wait_asked()
    agent.loop.run(origins.close())
    wait_status(hap, "DOWN")
    agent.wait_asked()
    assert status(hap) == "DOWN", hap.diagnostics("b")


def test_a_check_under_way_reads_as_its_last_result() -> None:
    """``show stat`` marks a check in progress ``* L4CON``; the harness reads the last
    result either way (a single read in a test must not depend on the moment)."""
    text = (
        "# pxname,svname,status,check_status,agent_status\n"
        "b,s,UP,* L4OK,* L4CON\n"
        "b,t,UP,L4OK,L7OK\n"
        "c,s,DOWN,L4CON,\n"
    )
    rows = parse_stat(text, "b")
    assert {n: (r["check_status"], r["agent_status"]) for n, r in rows.items()} == {
        "s": ("L4OK", "L4CON"),
        "t": ("L4OK", "L7OK"),
    }
