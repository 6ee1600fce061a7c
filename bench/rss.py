"""Memory of `edge-agent run` checking 1,000 origins (every 10 s) of a local origin farm.

    .venv/bin/python bench/rss.py [--origins 1000] [--interval 10] [--seconds 30]

Prints VmRSS (resident now) and VmHWM (the peak since start) of the agent's process from
/proc/PID/status, and the goal (VmRSS <= 60 MiB). For scale, the same is measured for
prometheus-blackbox-exporter asked for the same probes at the same rate (--tools to skip).
Exits 1 only if the harness could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp
from _common import (
    MIB,
    Children,
    FarmProc,
    agent_checks,
    cancel_on_signals,
    run_async_main,
    start_agent,
    start_blackbox,
    start_farm,
    status_kib,
)

GOAL_MIB = 60.0


async def agent_rss(
    children: Children, session: aiohttp.ClientSession, farm: FarmProc, args: argparse.Namespace
) -> tuple[float, float, float]:
    """(VmRSS MiB, VmHWM MiB, checks/s in the window) of edge-agent."""
    targets = [farm.url(i) for i in range(args.origins)]
    agent = await start_agent(
        children, session, "edge-agent", targets=targets, interval=args.interval, timeout=2.0
    )
    try:
        c0, _ = await agent_checks(session, agent)
        await asyncio.sleep(args.seconds)
        agent.check_alive()
        c1, _ = await agent_checks(session, agent)
        st = status_kib(agent.pid)
    finally:
        children.stop(agent.proc)
    return st["VmRSS"] * 1024 / MIB, st["VmHWM"] * 1024 / MIB, (c1 - c0) / args.seconds


async def blackbox_rss(
    children: Children, session: aiohttp.ClientSession, farm: FarmProc, args: argparse.Namespace
) -> tuple[float, float, float]:
    bb = await start_blackbox(children, session, "blackbox")
    rate = args.origins / args.interval
    load = bb.probe_load([farm.url(i) for i in range(args.origins)], rate=rate, concurrency=256)
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    try:
        await asyncio.sleep(args.seconds)
        bb.check_alive()
        done = load.done
        st = status_kib(bb.pid)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        children.stop(bb.proc)
    return st["VmRSS"] * 1024 / MIB, st["VmHWM"] * 1024 / MIB, done / args.seconds


async def main_async(args: argparse.Namespace) -> int:
    rows: list[tuple[str, float, float, float]] = []
    cancel_on_signals()
    with Children() as children:
        farm = await start_farm(children, count=args.origins, processes=1)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            if "edge-agent" in args.tools:
                rows.append(("edge-agent", *await agent_rss(children, session, farm, args)))
            if "blackbox" in args.tools:
                rows.append(("blackbox", *await blackbox_rss(children, session, farm, args)))
    offered = args.origins / args.interval
    print(
        f"{args.origins:,} origins every {args.interval:g} s ({offered:g} checks/s offered),"
        f" after {args.seconds:g} s of checking"
    )
    print()
    print(f"{'tool':<11} {'VmRSS MiB':>10} {'VmHWM MiB':>10} {'checks/s':>9}")
    for tool, rss, hwm, rate in rows:
        print(f"{tool:<11} {rss:10.1f} {hwm:10.1f} {rate:9.0f}")
    print()
    print("VmRSS: resident now; VmHWM: the peak since the process started (start-up included).")
    for tool, rss, hwm, _ in rows:
        if tool == "edge-agent":
            ok = "PASS" if rss <= GOAL_MIB else "FAIL"
            peak = "within" if hwm <= GOAL_MIB else "above"
            print(
                f"Goal: {ok}  edge-agent VmRSS <= {GOAL_MIB:g} MiB: {rss:.1f} MiB"
                f" (peak {hwm:.1f} MiB, {peak} the goal)"
            )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--origins", type=int, default=1000, help="origins (1000)")
    ap.add_argument("--interval", type=float, default=10.0, help="check interval, s (10)")
    ap.add_argument("--seconds", type=float, default=30.0, help="checking before reading (30)")
    ap.add_argument(
        "--tools",
        type=lambda s: s.split(","),
        default=["edge-agent", "blackbox"],
        help="edge-agent,blackbox (default both)",
    )
    args = ap.parse_args()
    return run_async_main(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
