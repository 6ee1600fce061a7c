"""Load balancers that check every origin themselves vs routing by the fleet's verdict (issue 18).

    .venv/bin/python bench/lb.py [--origins 100] [--instances 1,5,20] [--seconds 10]
                                 [--interval 2] [--fall 3] [--rise 2] [--inter 2]
                                 [--tcp-inter 30] [--failures 3]

Everything runs on 127.0.0.1: --origins origins, each on a port of its own
(edge_harness.port_origins, served from this process), a 3-node edge-agent cluster
(`edge-agent run` from this checkout, as bench/api.py starts one: every node joins the
others, replicas = 2, [lb] agent_listen on a port of its own), and M real `haproxy`
processes (Debian's; edge_harness.haproxy: own config, stats socket and PID, one thread
each), for each M in --instances, in two configurations:

 (i)  own checks: each HAProxy checks every origin itself, `option httpchk GET
      /check/lb` with `check inter <--inter> fall <--fall> rise <--rise>` (HAProxy's
      defaults: 2 s, 3, 2), as a load balancer does without the fleet.
 (ii) agent-check: each HAProxy's backend is what `edge-agent haproxy-config` prints,
      asking node (instance number mod 3) every --inter seconds (agent-inter), plus a
      regular TCP-connect check every --tcp-inter seconds (0: no regular check), as
      docs/load-balancers.md recommends. The origins are checked by the fleet only:
      GET /check/fleet, every --interval seconds by each of the 2 owners, with the same
      --fall and --rise.

Load at the origins: after the M instances answer on their stats sockets and a warm-up
of two check intervals, the origins' counters are read at the start and the end of
consecutive windows of one check period (the longer of --inter and --interval), for
--seconds seconds in all; the figure is the median of those windows' rates, for the
requests of the configuration's own checks (/check/lb in (i); /check/fleet in (ii),
whatever M is), and the TCP connections the origins' server accepted (each HAProxy HTTP
check is a connection of its own; the fleet keeps its connections alive; HAProxy's
connect-only TCP checks never reach accept(): HAProxy aborts each once the handshake
succeeds, so only the kernel answers them, M x origins / --tcp-inter a second). For
(ii), the agent-check answers the three nodes gave (from /metrics,
edge_agent_lb_answers_total) over the whole window.

Failover, with the largest M running, in each configuration, --failures times (a
different origin each time): the origin is switched to answer 500 (a TCP connect still
succeeds), and each instance's stats socket is asked for that server's status every
100 ms; the figure is the time from the switch until the last instance reports it DOWN,
i.e. until no HAProxy routes to it. Then it is switched back, and the time until the
last instance reports it UP again is the recovery. Medians.

This machine's cores are shared by the origins, the nodes, the M instances and the
bench: figures from a busy machine are pessimistic. Exits 1 only when it could not
measure.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    LOOPBACK,
    PYTHON,
    REPO,
    Children,
    HarnessError,
    cancel_on_signals,
    compile_agent,
    duration,
    median,
    run_async_main,
)
from _procs import free_ports
from api import AUTH, Cluster, Node

from edge_harness import haproxy
from edge_harness.haproxy import HAProxy, HAProxyError
from edge_harness.port_origins import PortOrigins

BACKEND = "origins"
NODES = 3
POLL = 0.1  # s between reads of every instance's server status (failover)
ANSWERS = re.compile(r"^edge_agent_lb_answers_total\{([^}]*)\} (\S+)", re.M)


@dataclass
class Setup:
    args: argparse.Namespace
    children: Children
    session: aiohttp.ClientSession
    origins: PortOrigins
    cluster: Cluster
    agent_ports: dict[str, int]
    backends: list[str] = field(default_factory=list)  # (ii)'s backend, asking node k


def own_checks_backend(origins: PortOrigins, a: argparse.Namespace) -> str:
    lines = [
        f"backend {BACKEND}",
        "    balance roundrobin",
        "    option httpchk GET /check/lb",
        f"    default-server check inter {duration(a.inter)} fall {a.fall} rise {a.rise}",
    ]
    lines += [f"    server o{i} {origins.address(i)}" for i in range(len(origins))]
    return "\n".join(lines) + "\n"


def agent_backend(generated: str, a: argparse.Namespace) -> str:
    """`edge-agent haproxy-config`'s backend, with the regular check's settings."""
    if a.tcp_inter > 0:
        settings = f"    default-server inter {duration(a.tcp_inter)} fall 3 rise 2\n"
    else:  # agent-check alone
        generated = generated.replace(" check agent-check ", " agent-check ")
        settings = ""
    return generated.replace(
        f"backend {BACKEND}\n", f"backend {BACKEND}\n    balance roundrobin\n{settings}"
    )


async def haproxy_config(setup: Setup, node: Node) -> str:
    argv = [PYTHON, "-m", "agent.shell.cli", "haproxy-config", "--api", node.api]
    argv += ["--backend", BACKEND]
    argv += ["--agent-addr", LOOPBACK, "--agent-port", str(setup.agent_ports[node.name])]
    argv += ["--inter", f"{duration(setup.args.inter)}"]
    out = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    if out.returncode != 0 or out.stdout.count("    server ") != len(setup.origins):
        raise HarnessError(f"edge-agent haproxy-config failed: {out.stderr}\n{out.stdout[:500]}")
    return out.stdout


async def declare(setup: Setup) -> float:
    """POST the origins to node 0; seconds until every node judges all of them up."""
    a = setup.args
    body = [
        {
            "id": f"o{i}",
            "url": setup.origins.url(i, "/check/fleet"),
            "interval": duration(a.interval),
            "fall": a.fall,
            "rise": a.rise,
        }
        for i in range(len(setup.origins))
    ]
    t0 = time.monotonic()
    node = setup.cluster.nodes[0]
    async with setup.session.post(f"{node.api}/v1/origins", json=body, headers=AUTH) as r:
        if r.status != 200:
            raise HarnessError(f"POST /v1/origins answered {r.status}: {(await r.text())[:300]}")
    n = len(body)
    while True:
        ups = []
        for x in setup.cluster.nodes:
            async with setup.session.get(f"{x.api}/v1/health") as r:
                ups.append(((await r.json()).get("origins") or {}).get("up", 0))
        if all(u == n for u in ups):
            return time.monotonic() - t0
        setup.cluster.check_alive()
        if time.monotonic() - t0 > 120:
            raise HarnessError(f"origins not all up on every node in 120 s: {ups}")
        await asyncio.sleep(0.25)


async def agent_answers(setup: Setup) -> float:
    total = 0.0
    for node in setup.cluster.nodes:
        async with setup.session.get(f"{node.api}/metrics") as r:
            text = await r.text()
        total += sum(float(n) for labels, n in ANSWERS.findall(text) if "agent-check" in labels)
    return total


async def start_instances(setup: Setup, kind: str, m: int) -> list[HAProxy]:
    haps = []
    for k in range(m):
        if kind == "own":
            sections = own_checks_backend(setup.origins, setup.args)
        else:
            sections = agent_backend(setup.backends[k % NODES], setup.args)
        hap = HAProxy(setup.children.dir / f"haproxy-{kind}-{m}-{k}", sections, maxconn=1024)
        haps.append(hap)
        try:
            # in a thread: this loop serves the origins the instances start checking
            await asyncio.to_thread(hap.start)
        except HAProxyError as e:
            await stop_instances(haps)
            raise HarnessError(str(e)) from None
    return haps


async def stop_instances(haps: Sequence[HAProxy]) -> None:
    await asyncio.gather(*(asyncio.to_thread(h.stop) for h in haps))


async def measure_load(setup: Setup, kind: str, haps: Sequence[HAProxy]) -> dict[str, float]:
    """Median rates at the origins over windows of one check period (and agent answers/s
    over them all)."""
    a = setup.args
    period = max(a.inter, a.interval)
    await asyncio.sleep(2 * period)  # warm-up: checks in steady state
    path = "/check/lb" if kind == "own" else "/check/fleet"
    o = setup.origins
    samples: dict[str, list[float]] = {"checks": [], "connections": []}
    answers0, t_start = await agent_answers(setup), time.monotonic()
    last = (o.checks(path), o.connections(), time.monotonic())
    for _ in range(max(1, round(a.seconds / period))):
        await asyncio.sleep(period)
        for h in haps:
            h.check_alive()
        now = (o.checks(path), o.connections(), time.monotonic())
        dt = now[2] - last[2]
        samples["checks"].append((now[0] - last[0]) / dt)
        samples["connections"].append((now[1] - last[1]) / dt)
        last = now
    answers = (await agent_answers(setup) - answers0) / (time.monotonic() - t_start)
    return {
        "checks": median(samples["checks"]),
        "connections": median(samples["connections"]),
        "answers": answers,
    }


async def status(h: HAProxy, server: str, sid: str) -> str:
    try:
        return (await h.astat(BACKEND, sid))[server]["status"]
    except (OSError, TimeoutError, KeyError) as e:
        return f"? ({e!r})"


async def until_all(haps: Sequence[HAProxy], server: str, word: str, limit: float) -> float:
    """Seconds until every instance has reported ``server`` in a status starting with
    ``word`` (an instance is not asked again once it has)."""
    t0 = time.monotonic()
    sid = (await haps[0].astat(BACKEND))[server]["sid"]  # the same in every instance
    left = list(haps)
    while True:
        got = await asyncio.gather(*(status(h, server, sid) for h in left))
        left = [h for h, s in zip(left, got, strict=True) if not s.startswith(word)]
        if not left:
            return time.monotonic() - t0
        if time.monotonic() - t0 > limit:
            raise HarnessError(
                f"{server} not {word} on {len(left)} instances in {limit:.0f} s: {got}"
            )
        await asyncio.sleep(POLL)


async def measure_failover(
    setup: Setup, haps: Sequence[HAProxy]
) -> tuple[list[float], list[float]]:
    a = setup.args
    limit = 10 * max(a.interval, a.inter) * max(a.fall, a.rise) + 60
    outs, backs = [], []
    for f in range(a.failures):
        i = (7 + 13 * f) % len(setup.origins)
        server = f"o{i}"
        await until_all(haps, server, "UP", limit)
        origin = setup.origins[i]
        origin.set("500")
        try:
            outs.append(await until_all(haps, server, "DOWN", limit))
        finally:
            origin.set("up")
        backs.append(await until_all(haps, server, "UP", limit))
        print(
            f"      failure {f + 1} ({server}): out of every instance in {outs[-1]:.2f} s, "
            f"back in {backs[-1]:.2f} s"
        )
    return outs, backs


def describe(kind: str, a: argparse.Namespace) -> str:
    if kind == "own":
        return f"own checks (httpchk, inter {duration(a.inter)} fall {a.fall} rise {a.rise})"
    tcp = f"TCP check every {a.tcp_inter:g} s" if a.tcp_inter > 0 else "no regular check"
    return (
        f"agent-check (agent-inter {duration(a.inter)}, {tcp}; fleet interval "
        f"{duration(a.interval)} fall {a.fall} rise {a.rise}, 2 owners)"
    )


async def run(args: argparse.Namespace) -> int:
    cancel_on_signals()
    if not haproxy.available():
        raise HarnessError("no haproxy (apt-get install haproxy; scripts/bootstrap.sh test)")
    compile_agent()
    print("Method: everything runs" + __doc__.split("Everything runs", 1)[1].rstrip())
    print()
    print(f"{haproxy.version()}; {args.origins} origins; M = {args.instances}")
    ms = [int(x) for x in args.instances.split(",")]
    results: dict[tuple[str, int], dict[str, float]] = {}
    failover: dict[str, tuple[list[float], list[float]]] = {}
    with Children() as children:
        origins = await PortOrigins(LOOPBACK).start(args.origins)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                ports = dict(zip([f"n{i}" for i in range(NODES)], free_ports(NODES), strict=True))

                def lb_table(node: Node) -> list[str]:
                    return ["[lb]", f'agent_listen = "{LOOPBACK}:{ports[node.name]}"']

                cluster = Cluster(children, session, NODES, "lb", extra=lb_table)
                took = await cluster.start()
                print(f"{NODES}-node cluster ready in {took:.1f} s")
                setup = Setup(args, children, session, origins, cluster, ports)
                try:
                    up = await declare(setup)
                    print(f"{args.origins} origins declared, up on every node in {up:.1f} s")
                    setup.backends = [await haproxy_config(setup, x) for x in cluster.nodes]
                    for m in ms:
                        for kind in ("own", "agent"):
                            haps = await start_instances(setup, kind, m)
                            try:
                                r = await measure_load(setup, kind, haps)
                                results[kind, m] = r
                                print(
                                    f"   M={m:>2} {kind:>5}: {r['checks']:7.1f} check req/s at "
                                    f"the origins, {r['connections']:7.1f} connections/s"
                                    + (
                                        f", {r['answers']:.0f} agent answers/s"
                                        if kind == "agent"
                                        else ""
                                    )
                                )
                                if m == max(ms) and args.failures > 0:
                                    print(f"   failover, M={m}, {describe(kind, args)}:")
                                    failover[kind] = await measure_failover(setup, haps)
                            finally:
                                await stop_instances(haps)
                    cluster.check_alive()
                finally:
                    cluster.stop()
        finally:
            await origins.close()
    print_results(args, ms, results, failover)
    return 0


def print_results(
    args: argparse.Namespace,
    ms: list[int],
    results: dict[tuple[str, int], dict[str, float]],
    failover: dict[str, tuple[list[float], list[float]]],
) -> None:
    print()
    period = duration(max(args.inter, args.interval))
    print(f"Health checks reaching {args.origins} origins (medians of {period} windows):")
    print(f"  (i)  {describe('own', args)}")
    print(f"  (ii) {describe('agent', args)}")
    print(
        f"  {'M':>3}  {'(i) req/s':>10}  {'(ii) req/s':>10}  {'ratio':>6}  "
        f"{'(i) conn/s':>10}  {'(ii) conn/s':>11}  {'(ii) agent answers/s':>20}"
    )
    for m in ms:
        own, agent = results["own", m], results["agent", m]
        ratio = own["checks"] / agent["checks"] if agent["checks"] else float("inf")
        print(
            f"  {m:>3}  {own['checks']:>10.1f}  {agent['checks']:>10.1f}  {ratio:>5.1f}x  "
            f"{own['connections']:>10.1f}  {agent['connections']:>11.1f}  "
            f"{agent['answers']:>20.0f}"
        )
    big = max(ms)
    own, agent = results["own", big], results["agent", big]
    expect = 2 * args.origins / args.interval
    print(
        f"  at M={big}: {own['checks'] / max(agent['checks'], 1e-9):.1f}x fewer check requests "
        f"with agent-check (the fleet's k x origins / interval = {expect:.0f}/s, whatever M is)"
    )
    if failover:
        print()
        print(
            f"Failover with M={big} (medians of {args.failures}): from the origin failing to "
            "the last HAProxy routing away / from recovery to the last routing to it again"
        )
        for kind in ("own", "agent"):
            if kind in failover:
                outs, backs = failover[kind]
                print(
                    f"  {describe(kind, args)}: {median(outs):.2f} s / {median(backs):.2f} s "
                    f"(each: {', '.join(f'{x:.1f}' for x in outs)} / "
                    f"{', '.join(f'{x:.1f}' for x in backs)})"
                )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--origins", type=int, default=100, help="origins, each on its own port")
    p.add_argument("--instances", default="1,5,20", help="HAProxy instance counts M")
    p.add_argument("--seconds", type=float, default=10.0, help="load window per M, s")
    p.add_argument("--interval", type=float, default=2.0, help="the fleet's check interval, s")
    p.add_argument("--fall", type=int, default=3, help="fall, of HAProxy (i) and the fleet")
    p.add_argument("--rise", type=int, default=2, help="rise, of HAProxy (i) and the fleet")
    p.add_argument("--inter", type=float, default=2.0, help="HAProxy's inter (i), agent-inter (ii)")
    p.add_argument("--tcp-inter", type=float, default=30.0, help="(ii)'s TCP check, s; 0: none")
    p.add_argument("--failures", type=int, default=3, help="failovers timed per config; 0: none")
    args = p.parse_args()
    sys.exit(run_async_main(run(args)))


if __name__ == "__main__":
    main()
