"""HTTP checks per second and CPU per check: edge-agent vs prometheus-blackbox-exporter.

Both tools probe the same N origins of a local origin farm (all "up") at the same offered
rate, in the same run, alternating tool by tool; the medians of --runs runs are reported.

    .venv/bin/python bench/checks.py [--origins 1000,10000] [--seconds 20] [--runs 3]

See bench/README.md for the method and how to read the figures. Exits 1 only if the
harness could not measure (a process failed to start or crashed); missed goals are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from _common import (
    BLACKBOX,
    CLK_TCK,
    EDGE_AGENT,
    Children,
    FarmProc,
    HarnessError,
    agent_checks,
    cancel_on_signals,
    cpu_seconds,
    host_jiffies,
    log_problems,
    median,
    run_async_main,
    self_cpu,
    start_agent,
    start_blackbox,
    start_farm,
)

AGENT, BLACKBOX_NAME = "edge-agent", "blackbox"
GOAL_RATE = 2000.0  # checks/s at 10,000 origins
GOAL_CPU_RATIO = 2.0  # agent CPU per check at most 2x blackbox's


@dataclass
class Window:
    """What one measurement window saw; CPU figures are in CPU-seconds."""

    checks: float  # completed checks (ok + failed)
    failed: float
    seconds: float
    cpu: float  # the tool's own process
    farm_cpu: float
    gen_cpu: float  # this process (for blackbox: the load generator)
    host_procs: float  # CPU-seconds of all the host's processes (user + nice + system)
    host_kernel: float  # irq + softirq + steal


@dataclass
class Sample:
    tool: str
    n: int
    w: Window
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.w.checks / self.w.seconds

    @property
    def cpu_per_1k(self) -> float:
        return self.w.cpu / self.w.checks * 1000 if self.w.checks else float("inf")

    def share(self, cpu_seconds: float) -> float:
        """CPU-seconds in the window as a share of one core."""
        return cpu_seconds / self.w.seconds

    @property
    def other(self) -> float:
        """Share of a core that other processes on the host used in the window."""
        w = self.w
        return max(0.0, self.share(w.host_procs - w.cpu - w.farm_cpu - w.gen_cpu))

    @property
    def host_busy(self) -> float:
        """Share of all the host's cores in use."""
        w = self.w
        return self.share(w.host_procs + w.host_kernel) / (os.cpu_count() or 1)


def probe_timeout(n: int, args: argparse.Namespace) -> float:
    """2 s, but no longer than the agent's interval (its config refuses that)."""
    return min(2.0, n / args.rate)


async def measure_window(
    pid: int,
    farm: FarmProc,
    seconds: float,
    count: Callable[[], Awaitable[tuple[float, float]]],
    alive: Callable[[], None],
) -> Window:
    """Readings at the start and end of one window of ``seconds``, and their differences."""

    def readings() -> tuple[float, ...]:
        procs, kernel, _ = host_jiffies()
        return time.monotonic(), cpu_seconds(pid), farm.cpu(), self_cpu(), procs, kernel

    alive()
    c0, f0 = await count()
    r0 = readings()
    await asyncio.sleep(seconds)
    alive()
    c1, f1 = await count()
    r1 = readings()
    t, cpu, farm_cpu, own, procs, kernel = (b - a for a, b in zip(r0, r1, strict=True))
    return Window(c1 - c0, f1 - f0, t, cpu, farm_cpu, own, procs / CLK_TCK, kernel / CLK_TCK)


async def run_agent(
    children: Children,
    session: aiohttp.ClientSession,
    farm: FarmProc,
    n: int,
    args: argparse.Namespace,
    name: str,
) -> Sample:
    targets = [farm.url(i) for i in range(n)]
    agent = await start_agent(
        children,
        session,
        name,
        targets=targets,
        interval=n / args.rate,
        timeout=probe_timeout(n, args),
        concurrency=args.concurrency,
    )
    notes: list[str] = []
    try:
        await asyncio.sleep(args.warmup)

        async def count() -> tuple[float, float]:
            t0 = time.monotonic()
            c = await agent_checks(session, agent)
            if (dt := time.monotonic() - t0) > 1.0:
                notes.append(f"GET /metrics took {dt:.1f} s (the agent's event loop is busy)")
            return c

        window = await measure_window(agent.pid, farm, args.seconds, count, agent.check_alive)
    finally:
        code = children.stop(agent.proc)
        if code != 0:
            what = "had to be killed" if code is None else f"exited {code}"
            notes.append(f"edge-agent {what} on SIGTERM")
        notes += log_problems(agent.log)
    return Sample(AGENT, n, window, notes)


async def run_blackbox(
    children: Children,
    session: aiohttp.ClientSession,
    farm: FarmProc,
    n: int,
    args: argparse.Namespace,
    name: str,
) -> Sample:
    bb = await start_blackbox(children, session, name, timeout=probe_timeout(n, args))
    load = bb.probe_load(
        [farm.url(i) for i in range(n)], rate=args.rate, concurrency=args.concurrency
    )
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    notes: list[str] = []
    try:
        await asyncio.sleep(args.warmup)

        async def count() -> tuple[float, float]:
            if task.done():
                task.result()  # re-raise what killed the generator
            return float(load.done), float(load.failed)

        window = await measure_window(bb.pid, farm, args.seconds, count, bb.check_alive)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        children.stop(bb.proc)
    if load.errors:
        notes.append(f"{load.errors} requests to blackbox failed (last: {load.last_error})")
    return Sample(BLACKBOX_NAME, n, window, notes)


# The table's columns after origins and tool: header, value of one run, format.
COLUMNS: list[tuple[str, Callable[[Sample], float], str]] = [
    ("checks/s", lambda s: s.rate, "{:9.0f}"),
    ("CPU-s/1k", lambda s: s.cpu_per_1k, "{:9.3f}"),
    ("failed", lambda s: s.w.failed, "{:7.0f}"),
    ("tool CPU", lambda s: s.share(s.w.cpu), "{:9.0%}"),
    ("farm CPU", lambda s: s.share(s.w.farm_cpu), "{:9.0%}"),
    ("bench CPU", lambda s: s.share(s.w.gen_cpu), "{:9.0%}"),
    ("other", lambda s: s.other, "{:6.0%}"),
    ("irq+steal", lambda s: s.share(s.w.host_kernel), "{:9.0%}"),
    ("host busy", lambda s: s.host_busy, "{:9.0%}"),
]


def cells(runs: list[Sample]) -> str:
    return " ".join(fmt.format(median([get(s) for s in runs])) for _, get, fmt in COLUMNS)


def header() -> str:
    widths = [len(fmt.format(0.0)) for _, _, fmt in COLUMNS]
    return f"{'origins':>8}  {'tool':<10} " + " ".join(
        f"{h:>{w}}" for (h, _, _), w in zip(COLUMNS, widths, strict=True)
    )


def show_run(s: Sample) -> None:
    print(f"{s.n:>8,}  {s.tool:<10} {cells([s])}", flush=True)
    for note in s.notes:
        print(f"    note: {note}", flush=True)


def report(samples: list[Sample], args: argparse.Namespace, errors: list[str]) -> None:
    ncpu = os.cpu_count() or 1
    print()
    print(
        f"Medians of {args.runs} runs; offered rate {args.rate:g} checks/s; window "
        f"{args.seconds:g} s after {args.warmup:g} s warm-up; {ncpu} cores; "
        f"farm: {args.farm_processes} processes; {args.concurrency} probes in flight at most.\n"
        "Each origin's interval is N / rate; the probe timeout is 2 s or the interval if less,"
        " for both tools."
    )
    print()
    head = header() + f" {'CPU/check agent/bb':>19}"
    print(head)
    print("-" * len(head))
    rate: dict[tuple[int, str], float] = {}  # median checks/s by (origins, tool)
    cpk: dict[tuple[int, str], float] = {}  # median CPU-s per 1,000 checks
    for n in args.origins:
        for tool in (AGENT, BLACKBOX_NAME):
            runs = [s for s in samples if s.n == n and s.tool == tool]
            if not runs:
                print(f"{n:>8,}  {tool:<10} {'(no successful run)':>30}")
                continue
            rate[n, tool] = median([s.rate for s in runs])
            cpk[n, tool] = median([s.cpu_per_1k for s in runs])
            ratio = ""
            if tool == BLACKBOX_NAME and (n, AGENT) in cpk:
                ratio = f"{cpk[n, AGENT] / cpk[n, tool]:19.2f}"
            print(f"{n:>8,}  {tool:<10} {cells(runs)} {ratio}")
    print()
    print(
        "CPU-s/1k = CPU-seconds (user+system, /proc/PID/stat) the tool's own process spent per\n"
        "1,000 completed checks; CPU columns are % of one core. 'bench CPU' is this process:\n"
        "for blackbox it is the load generator standing in for Prometheus, NOT counted as\n"
        "blackbox's, but it competes with blackbox and the farm for the same cores\n"
        "(for edge-agent it is only the two /metrics scrapes). edge-agent keeps connections\n"
        "to origins alive; blackbox opens a new connection per probe, as it always does.\n"
        "'other' is CPU other processes on the host used: well above 0% means something\n"
        "else competed for the cores, and the run is suspect. 'irq+steal' is the kernel's\n"
        "interrupt work (loopback networking included) and time stolen by the hypervisor."
    )
    print()
    print("Goals:")
    if (10000, AGENT) in rate:
        r = rate[10000, AGENT]
        ok = "PASS" if r >= GOAL_RATE else "FAIL"
        print(f"  {ok}  edge-agent >= {GOAL_RATE:,.0f} checks/s at 10,000 origins: {r:,.0f}")
    else:
        print(f"  n/a   edge-agent >= {GOAL_RATE:,.0f} checks/s at 10,000 origins: not measured")
    for n in args.origins:
        if (n, AGENT) in cpk and (n, BLACKBOX_NAME) in cpk:
            x = cpk[n, AGENT] / cpk[n, BLACKBOX_NAME]
            ok = "PASS" if x <= GOAL_CPU_RATIO else "FAIL"
            print(
                f"  {ok}  edge-agent CPU per check <= {GOAL_CPU_RATIO:g}x blackbox's at"
                f" {n:,} origins: {x:.2f}x"
            )
        else:
            print(f"  n/a   CPU per check ratio at {n:,} origins: a side has no successful run")
    if errors:
        print()
        print("Harness errors:")
        for e in errors:
            print("  " + e.replace("\n", "\n  "))


async def main_async(args: argparse.Namespace) -> int:
    errors: list[str] = []
    samples: list[Sample] = []
    tools = [t for t in (AGENT, BLACKBOX_NAME) if t in args.tools]
    cancel_on_signals()
    with Children() as children:
        farm = await start_farm(children, count=max(args.origins), processes=args.farm_processes)
        print(
            f"farm: port {farm.port}, pids {','.join(map(str, farm.pids))};"
            f" edge-agent: {EDGE_AGENT}; blackbox: {BLACKBOX}",
            flush=True,
        )
        print(f"\nEach run:\n{header()}", flush=True)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for n in args.origins:
                for r in range(args.runs):
                    for tool in tools:
                        run = run_agent if tool == AGENT else run_blackbox
                        name = f"{tool}-{n}-{r}"
                        try:
                            s = await run(children, session, farm, n, args, name)
                        except (HarnessError, aiohttp.ClientError, TimeoutError) as e:
                            msg = f"{tool}, {n} origins, run {r + 1}: {str(e) or repr(e)}"
                            print(f"  ERROR {msg}", flush=True)
                            errors.append(msg)
                            continue
                        samples.append(s)
                        show_run(s)
                        if farm.proc.poll() is not None:
                            raise HarnessError("the farm exited")
    report(samples, args, errors)
    return 1 if errors else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--origins",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1000, 10000],
        help="origin counts, comma-separated (default 1000,10000)",
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window (20)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before the window (5)")
    ap.add_argument("--runs", type=int, default=3, help="runs per tool and size (3)")
    ap.add_argument("--rate", type=float, default=2500.0, help="offered checks/s (2500)")
    ap.add_argument("--concurrency", type=int, default=256, help="probes in flight, both (256)")
    ap.add_argument("--farm-processes", type=int, default=2, help="farm processes (2)")
    ap.add_argument(
        "--tools",
        type=lambda s: s.split(","),
        default=[AGENT, BLACKBOX_NAME],
        help="edge-agent,blackbox (default both)",
    )
    args = ap.parse_args()
    return run_async_main(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
