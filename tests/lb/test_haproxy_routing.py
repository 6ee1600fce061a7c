"""HAProxy routes by the fleet's verdict (issue 18): real HAProxy, real traffic, a real
3-node cluster answering its agent checks (the setup: tests/lb/conftest.py).

The tests share one setup and run in file order; the kill -9 of node 0 comes last.
Every deadline is computed from the config (BOUND), and an absence ("0 requests from
then on") is shown over a window of WINDOW seconds in which the load kept flowing to
the other origins.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections import Counter

from tests.conftest import wait_for
from tests.lb.conftest import AGENT_INTER, BOUND, ORIGINS, RATE, Lb, new_event

WINDOW = 5.0  # s of load that must bring a taken-out origin no request
BAD = re.compile(r'^edge_agent_bad_input_total\{kind="([^"]+)",source="agent-check"\} (\S+)', re.M)


def ask_agent(port: int, origin_id: str) -> str:
    """What the agent-check port answers for ``origin_id``, as HAProxy asks."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"{origin_id}\n".encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1024)
            if not chunk:
                break
            data += chunk
    return data.decode().rstrip("\n")


def wait_window(lb: Lb, busy: list[int], start: float, what: str) -> None:
    """Until WINDOW seconds after ``start`` have passed with load flowing: the ``busy``
    origins together received at least half the requests the rate promises."""
    want = int(RATE * WINDOW / 2 * len(busy) / ORIGINS)

    def done() -> bool:
        got = sum(lb.origins[i].traffic_since(start) for i in busy)
        return time.monotonic() >= start + WINDOW and got >= want

    try:
        wait_for(done, max(0.0, start - time.monotonic()) + WINDOW + 60, what)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{lb.diagnostics()}") from None


def fail_and_recover(lb: Lb, i: int, mode: str) -> tuple[float, float, tuple[str, str]]:
    """Switch origin ``i`` to ``mode`` and back; (seconds from the failure to the last
    request it received, seconds from the recovery to its first request, (what HAProxy
    recorded from the agent while it was down, what node 0's agent port answered then)).
    Asserts both within BOUND, and no request in a window of load after it was taken
    out."""
    oid = lb.id(i)
    o = lb.origins[i]
    others = [j for j in range(ORIGINS) if j != i]
    lb.wait_all_serving(time.monotonic(), "every origin in service before the failure")

    t_fail = time.monotonic()
    o.set(mode)
    cutoff = t_fail + BOUND
    wait_window(lb, others, cutoff, f"a window of load after {oid} failed ({mode})")
    late = o.traffic_since(cutoff)
    last = o.last_traffic()
    assert late == 0 and last is not None, (
        f"{late} requests reached {oid} more than {BOUND:.1f} s after it failed ({mode}); "
        f"the last {last - t_fail if last else float('nan'):.2f} s after\n{lb.diagnostics()}"
    )
    out = last - t_fail
    assert lb.hap is not None
    row = lb.hap.stat("origins")[oid]
    assert row["status"].startswith("DOWN"), lb.diagnostics()
    said = (row["last_agt"], ask_agent(lb.agent_ports[0], oid))

    t_up = time.monotonic()
    o.set("up")
    try:
        wait_for(lambda: o.traffic_since(t_up) > 0, BOUND + 60, f"traffic to {oid} again")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{lb.diagnostics()}") from None
    first = next(t for t in o.traffic if t >= t_up)
    back = first - t_up
    assert back <= BOUND, (
        f"{oid} got traffic {back:.2f} s after it recovered (bound {BOUND:.1f} s)\n"
        f"{lb.diagnostics()}"
    )
    print(
        f"{oid} ({mode}): last request {out:.2f} s after the failure, first {back:.2f} s "
        f"after the recovery (bound {BOUND:.1f} s)"
    )
    return out, back, said


def test_every_origin_gets_traffic_while_up(lb: Lb) -> None:
    t0 = time.monotonic()
    lb.wait_all_serving(t0, "every origin UP in HAProxy and receiving traffic")
    assert lb.load is not None
    wait_for(lambda: sum(lb.load.answered.values()) >= 20, 30, "answers through HAProxy")
    assert set(lb.load.answered) == {200}, lb.diagnostics()


def test_a_failing_origin_is_taken_out_by_the_agent_and_back_in_on_recovery(lb: Lb) -> None:
    out, back, (said, line) = fail_and_recover(lb, 1, "500")
    assert out <= BOUND and back <= BOUND
    # the agent said why, and HAProxy kept the description, spaces and all:
    # "down #n0: status 500 (expected 200); n1: ..." -> "via agent : down (n0: ...)"
    assert line.startswith("down #") and "status 500" in line, line
    reason = line.removeprefix("down #")
    assert said == f"via agent : down ({reason})", (said, line)
    # and logged it with the state change
    assert lb.hap is not None
    log = lb.hap.log.read_text(errors="replace")
    logged = f'Server origins/o1 is DOWN, reason: Layer7 wrong status, code: 0, info: "{said}"'
    assert logged in log, lb.hap.tail()
    assert re.search(r"Server origins/o1 is UP", log), lb.hap.tail()


def test_the_agent_is_answered_while_its_port_is_abused(lb: Lb) -> None:
    """Garbage, 1 MB lines, silent and half-open clients on node 0's agent port, all the
    while HAProxy asks it: an origin that fails (closing connections, this time) is
    still taken out and put back within the bound, and the abuse is counted."""
    port = lb.agent_ports[0]
    node = lb.nodes[0]
    before = bad_counts(node.get("/metrics")[1])
    stop = lb.loop.run(new_event())
    tally: Counter[str] = Counter()
    abuse = asyncio.run_coroutine_threadsafe(abuse_port(port, stop, tally), lb.loop.loop)
    try:
        wait_for(lambda: tally["too-long"] >= 2 and tally["garbage"] >= 10, 30, "abuse under way")
        out, back, _ = fail_and_recover(lb, 2, "close")
        assert out <= BOUND and back <= BOUND
    finally:
        lb.loop.loop.call_soon_threadsafe(stop.set)
        abuse.result(30)
    after = bad_counts(node.get("/metrics")[1])
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in ("not-an-id", "too-long", "timeout")}
    assert all(v > 0 for v in grew.values()), (grew, dict(tally))
    lb.wait_all_serving(time.monotonic(), "every origin in service after the abuse")


def test_kill_9_of_the_node_haproxy_asks_marks_no_origin_down(lb: Lb) -> None:
    lb.wait_all_serving(time.monotonic(), "every origin in service before the kill")
    node = lb.nodes[0]
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)
    t_kill = time.monotonic()
    assert lb.hap is not None
    hap = lb.hap

    def agent_unreachable() -> bool:
        rows = hap.stat("origins")
        return len(rows) == ORIGINS and all(
            r["agent_status"].startswith("L4") for r in rows.values()
        )

    try:
        wait_for(agent_unreachable, 3 * AGENT_INTER + 30, "HAProxy failing to reach the agent")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{lb.diagnostics()}") from None
    # a window of load in which HAProxy kept asking the dead node, from the moment every
    # server had found it unreachable
    start = time.monotonic()
    wait_window(lb, list(range(ORIGINS)), start, "a window of load with node 0 dead")
    statuses = lb.statuses()
    assert all(statuses[lb.id(i)] == "UP" for i in range(ORIGINS)), lb.diagnostics()
    quiet = [lb.id(i) for i in range(ORIGINS) if lb.origins[i].traffic_since(start) == 0]
    assert not quiet, f"{quiet} got no traffic with node 0 dead\n{lb.diagnostics()}"
    assert agent_unreachable(), lb.diagnostics()
    print(f"node 0 killed; {time.monotonic() - t_kill:.1f} s later every origin still UP")


# --- helpers ---------------------------------------------------------------------------------


def bad_counts(metrics: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in BAD.finditer(metrics)}


async def abuse_port(port: int, stop: asyncio.Event, tally: Counter[str]) -> None:
    """Clients that are not HAProxy, on the agent port until ``stop``: 100 that connect
    and say nothing, 50 that send half an id and stall (each reconnecting when the
    agent's read timeout closes it), 5 sending garbage lines as fast as answered, 2
    sending 1 MB without a newline (short pauses between, so the abuse is steady, not a
    CPU hog on a 2-core machine)."""

    async def client(kind: str, payload: bytes, wait_answer: bool, pause: float = 0.0) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                tally["refused"] += 1
                await asyncio.sleep(0.1)
                continue
            try:
                if payload:
                    writer.write(payload)
                    await writer.drain()
                stopping = asyncio.ensure_future(stop.wait())
                answer = asyncio.ensure_future(reader.read(4096))
                await asyncio.wait({stopping, answer}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if answer.done() and (answer.result() or not wait_answer):
                    tally[kind] += 1
                answer.cancel()
            except OSError:
                tally[kind] += 1  # the agent closed on a 1 MB write: as intended
            finally:
                writer.close()
            if pause:
                await asyncio.sleep(pause)

    garbage = bytes(range(128, 256)) + b"\n"
    tasks = [client("silent", b"", False) for _ in range(100)]
    tasks += [client("half", b"o", False) for _ in range(50)]
    tasks += [client("garbage", garbage, True, 0.05) for _ in range(5)]
    tasks += [client("too-long", b"x" * (1 << 20), True, 0.5) for _ in range(2)]
    await asyncio.gather(*tasks)
