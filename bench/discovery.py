"""Discovery figures of issue 4: seconds from process start to full membership, by mDNS
alone, for edge-agent and for Debian's `serf agent -discover`, in one run.

    sudo .venv/bin/python bench/discovery.py [--sizes 5,10] [--trials 2]

For each N and trial: N hosts (network namespaces on a private bridge,
harness/edge_harness/fleet.py; the machine's own network is untouched), no seeds
anywhere. The clock starts just before the first process is spawned (all N are spawned
back to back) and stops when every node lists all N alive: ours polled through GET
/v1/members, serf's through `serf members` in its namespace, both every 20 ms (polling
flat out would take a core from the agents). The namespaces of both are made before the
clock starts.

Python start-up counts against us, and Go starts in milliseconds. So the same run also
measures the floor of our stack: N interpreters started together that do nothing, that
only import asyncio, and that only import asyncio, aiohttp.web and zeroconf.asyncio
(what any Python agent with an aiohttp API and python-zeroconf must load before it can
answer), each timed until the last has exited. With N processes sharing this machine's
cores, a floor alone can exceed serf's whole convergence; the figures show how much of
our time is the stack and how much is ours.

Serf polls mDNS once at start and then every 60 s (hashicorp/mdns, 1 s listen), and
joins whatever answered; edge-agent browses continuously and sees each announcement.

Needs root, iproute2 and the Debian package serf. Exits 1 if it could not measure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import HarnessError, compile_agent

from edge_harness.fleet import Fleet, FleetError, Host, missing_prerequisites, wait

PREFIX = "eabench-"
DEADLINE = 150.0  # serf's second poll is at 60 s; a third at 120 s
POLL = 0.02  # seconds between membership polls, for both
LATE = 5.0  # how long the processes run before the network comes up


FLOORS = {  # what N interpreters started together run, and then exit
    "the interpreter alone": "pass",
    "import asyncio": "import asyncio",
    "import asyncio, aiohttp.web, zeroconf.asyncio": (
        "import asyncio, aiohttp.web, zeroconf.asyncio"
    ),
}


def floor(n: int, code: str) -> float:
    """N interpreters started together, running only `code`; until the last has exited."""
    env = {**os.environ, "SSL_CERT_FILE": os.devnull}  # as the agent does (lazy_ca_store)
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(n)]
    if any(p.wait() != 0 for p in procs):
        raise FleetError(f"{sys.executable} -c {code!r} failed")
    return time.monotonic() - t0


def _ours_converged(f: Fleet, hosts: list[Host], t0: float) -> float:
    """Seconds from t0 until every host lists all of them alive (GET /v1/members)."""
    wait(
        lambda: f.converged(hosts),
        DEADLINE,
        f"{len(hosts)} edge-agents to converge",
        f.describe,
        interval=POLL,
    )
    return time.monotonic() - t0


def _serf_converged(f: Fleet, hosts: list[Host], t0: float) -> float:
    """Seconds from t0 until every serf agent lists all of them alive (`serf members`)."""
    names = {h.name for h in hosts}

    def converged() -> bool:
        return all(
            {k for k, v in f.serf_members(h).items() if v == "alive"} == names for h in hosts
        )

    wait(converged, DEADLINE, f"{len(hosts)} serf agents to converge", interval=POLL)
    return time.monotonic() - t0


def ours(n: int, tmp: Path) -> float:
    with Fleet(tmp / f"ours{n}", prefix=PREFIX, log_level="warning") as f:
        hosts = f.add_many(n)
        t0 = time.monotonic()
        f.start()
        return _ours_converged(f, hosts, t0)


def serf(n: int, tmp: Path) -> float:
    with Fleet(tmp / f"serf{n}", prefix=PREFIX) as f:
        plain = [f.add_plain(f"s{i + 1}") for i in range(n)]
        t0 = time.monotonic()
        hosts = [f.start_serf(label=h.name, host=h) for h in plain]
        return _serf_converged(f, hosts, t0)


def ours_late(n: int, tmp: Path) -> float:
    """Processes up before the network (a Pi booting faster than the switch)."""
    with Fleet(tmp / f"ours-late{n}", prefix=PREFIX, log_level="info") as f:
        hosts = f.add_many(n)
        for h in hosts:
            h.unplug()
        f.start()
        wait(lambda: all("mDNS: advertising" in h.log() for h in hosts), 30, "agents up")
        time.sleep(LATE)
        t0 = time.monotonic()
        for h in hosts:
            h.plug()
        return _ours_converged(f, hosts, t0)


def serf_late(n: int, tmp: Path) -> float:
    with Fleet(tmp / f"serf-late{n}", prefix=PREFIX) as f:
        hosts = [f.add_plain(f"s{i + 1}") for i in range(n)]
        for h in hosts:
            h.unplug()
        hosts = [f.start_serf(label=h.name, host=h) for h in hosts]
        wait(lambda: all(f.serf_members(h) for h in hosts), 30, "serf agents up")
        time.sleep(LATE)
        t0 = time.monotonic()
        for h in hosts:
            h.plug()
        return _serf_converged(f, hosts, t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="5,10")
    ap.add_argument("--trials", type=int, default=2)
    args = ap.parse_args()
    missing = missing_prerequisites()
    import shutil

    if shutil.which("serf") is None:
        missing.append("Debian package serf")
    if missing:
        print("bench/discovery.py needs " + ", ".join(missing), file=sys.stderr)
        return 1
    sizes = [int(s) for s in args.sizes.split(",")]
    scenarios = {
        "started together, network up": (ours, serf),
        f"network up {LATE:.0f} s after the processes": (ours_late, serf_late),
    }
    try:
        compile_agent()  # load bytecode like an installed node, not compile at each start
    except HarnessError as e:
        print(f"could not measure: {e}", file=sys.stderr)
        return 1
    rows = []
    floors: dict[tuple[str, int], list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="edge-agent-bench-discovery-") as tmp:
            for title, (fa, fs) in scenarios.items():
                for n in sizes:
                    a = [fa(n, Path(tmp)) for _ in range(args.trials)]
                    s = [fs(n, Path(tmp)) for _ in range(args.trials)]
                    rows.append((title, n, a, s))
                    a_s = ", ".join(f"{x:.2f}" for x in a)
                    s_s = ", ".join(f"{x:.2f}" for x in s)
                    print(f"{title}, N={n}: edge-agent [{a_s}]  serf [{s_s}]", flush=True)
            for what, code in FLOORS.items():
                for n in sizes:
                    floors[(what, n)] = [floor(n, code) for _ in range(5)]
    except (FleetError, TimeoutError) as e:  # each Fleet has torn down its own namespaces
        print(f"could not measure: {e}", file=sys.stderr)
        return 1
    print()
    print("seconds to full membership by mDNS alone (median of trials); the clock starts at")
    print("the first process spawn (first scenario) or when the network comes up (second)")
    print(f"{'scenario':<34} {'N':>3}  {'edge-agent':>10}  {'serf':>7}  {'ours/serf':>9}")
    for title, n, a, s in rows:
        ma, ms = statistics.median(a), statistics.median(s)
        print(f"{title:<34} {n:>3}  {ma:>10.2f}  {ms:>7.2f}  {ma / ms:>8.2f}x")
    print()
    print("floor: N interpreters started together that only do this and exit (median of 5),")
    print("against serf's whole convergence when started together")
    together = {n: statistics.median(s) for t, n, _, s in rows if t.startswith("started")}
    for what in FLOORS:
        cells = []
        for n in sizes:
            fl = statistics.median(floors[(what, n)])
            cells.append(f"N={n}: {fl:.2f} s ({fl / together[n]:.2f}x serf)")
        print(f"  {what:<48} " + "   ".join(cells))
    for title in scenarios:
        ok = all(statistics.median(a) <= statistics.median(s) for t, _, a, s in rows if t == title)
        print(f"goal (no slower than serf), {title}: {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
