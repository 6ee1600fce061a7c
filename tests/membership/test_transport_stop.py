"""Stopping a MembershipNode: once stop() begins nothing is sent and no timer is armed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.membership import MembershipNode


async def _loop_pass() -> None:
    """One pass of the loop: what closing a datagram transport takes to drop its socket."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


async def test_nothing_is_sent_or_armed_once_stop_has_begun(tmp_path: Path) -> None:
    """A 100-node bench's nodes logged tracebacks as they stopped: events and timers that
    came in while stop() flushed the incarnation wrote to the socket it was closing."""
    a = MembershipNode("a", ("127.0.0.1", 0), incarnation_file=tmp_path / "a")
    b = MembershipNode("b", ("127.0.0.1", 0))
    await a.start()
    await b.start()
    try:
        assert await a.join([("127.0.0.1", b.port)]) == 1
        a._persist_incarnation(7)  # stop() now waits on this write, the loop running
        stopping = asyncio.ensure_future(a.stop())
        await _loop_pass()
        a.send_user(("127.0.0.1", b.port), b"during stop")
        await stopping
        await _loop_pass()
        await _loop_pass()
        a.send_user(("127.0.0.1", b.port), b"after stop")  # raised AttributeError before
        a._on_timer()  # a timer that was already due
        assert a._timer is None
    finally:
        await b.stop()
