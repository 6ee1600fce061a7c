"""Where an idle agent's wakeups and CPU go (issue 21, item 1).

    .venv/bin/python bench/wakeups.py [--nodes 2] [--warmup 10] [--seconds 30]
                                      [--no-encrypt] [--no-leds] [--discover] [--top 15]

Starts N `edge-agent run` nodes on 127.0.0.1 (node 0 the seed, no origins, encrypted by
default, LEDs on gpiozero's mock pins as a Pi drives its LEDs), each with
bench/_wakeup_probe.py loaded into its process: every pass of the event loop (one
`epoll_wait`) is charged to the first callback it runs, and every callback's runs and
CPU time are counted, for --seconds after --warmup. Prints per node: wakeups/s, passes
with a zero timeout (callbacks left ready by the pass before), CPU % of one core over the
window (utime + stime from /proc), then the top wakers and the top callbacks by CPU,
summed over the nodes.

memberlist's own schedule, for comparison: a gossip tick every 200 ms (5/s, nothing sent
when no broadcast waits), a probe every second and its ack, and the peers' probes of us.
The probe's own cost (a Python wrapper around every callback) inflates CPU, not counts.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LOOPBACK, cpu_sample, cpu_used, free_port, tail

BENCH = Path(__file__).resolve().parent
STOP_GRACE = 5.0  # s between the end of the window and the SIGTERM
ROOT = BENCH.parent


def config(d: Path, i: int, ports: list[tuple[int, int]], args: argparse.Namespace) -> Path:
    api, gossip = ports[i]
    lines = [
        "[node]",
        f'name = "w{i}"',
        f'data_dir = "{d / "data"}"',
        "[cluster]",
        f'bind = "{LOOPBACK}:{gossip}"',
        f'advertise = "{LOOPBACK}:{gossip}"',
        f"discover = {'true' if args.discover else 'false'}",
    ]
    if i:
        lines.append(f'join = ["{LOOPBACK}:{ports[0][1]}"]')
    if not args.no_encrypt:
        lines.append(f'keyring_file = "{d.parent / "keyring"}"')
    lines += ["[api]", f'listen = "{LOOPBACK}:{api}"', f'socket = "{d / "api.sock"}"']
    if args.no_leds:
        lines += ["[leds]", "enabled = false"]
    lines += ["[log]", 'level = "warning"']
    p = d / "agent.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--no-encrypt", action="store_true")
    ap.add_argument("--no-leds", action="store_true")
    ap.add_argument("--discover", action="store_true")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also run node 1's window under cProfile and print its top functions "
        "(node 0 is the seed; the profiler inflates that node's CPU)",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ea-wakeups-"))
    (work / "keyring").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    ports = [(free_port(), free_port()) for _ in range(args.nodes)]
    procs: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    env = {
        **os.environ,
        "EA_WAKEUP_WARMUP": str(args.warmup),
        "EA_WAKEUP_SECONDS": str(args.seconds),
        "PYTHONPATH": f"{BENCH}{os.pathsep}{ROOT}",
    }
    env.pop("NOTIFY_SOCKET", None)
    code = (
        "import sys, _wakeup_probe\n"
        "from agent.shell.cli import main\n"
        "sys.exit(main(['run', '--config', sys.argv[1]]))\n"
    )
    try:
        for i in range(args.nodes):
            d = work / f"w{i}"
            d.mkdir()
            cfg = config(d, i, ports, args)
            out = d / "wakeups.json"
            log = d / "agent.log"
            extra = {"EA_WAKEUP_OUT": str(out)}
            if args.profile and i == min(1, args.nodes - 1):
                extra["EA_WAKEUP_PROFILE"] = str(work / "profile.pstats")
            p = subprocess.Popen(
                [sys.executable, "-c", code, str(cfg)],
                stdout=log.open("ab"),
                stderr=subprocess.STDOUT,
                env={**env, **extra},
            )
            procs.append((p, out, log))
        time.sleep(args.warmup)  # a benchmark's fixed window, not synchronisation
        cpu0 = [cpu_sample(p.pid) for p, _, _ in procs]
        t0 = time.monotonic()
        time.sleep(args.seconds)
        cpu1 = [cpu_sample(p.pid) for p, _, _ in procs]
        wall = time.monotonic() - t0
        # each probe's window began at its import, a little after the spawn: let it end
        # before the SIGTERM, so the leave's own wakeups are not counted as idle ones
        time.sleep(STOP_GRACE)
        for p, _, log in procs:
            if p.poll() is not None:
                print(f"a node exited early:\n{tail(log)}", file=sys.stderr)
                return 1
            p.send_signal(signal.SIGTERM)
        for p, _, _ in procs:
            p.wait(timeout=30)
    finally:
        for p, _, _ in procs:
            if p.poll() is None:
                p.kill()

    print(
        f"{args.nodes} idle nodes, no origins, encryption {'off' if args.no_encrypt else 'on'}, "
        f"LEDs {'off' if args.no_leds else 'on (mock pins)'}, "
        f"mDNS {'on' if args.discover else 'off'}; "
        f"window {args.seconds:.0f} s after {args.warmup:.0f} s"
    )
    wakers: Counter[str] = Counter()
    cpu: Counter[str] = Counter()
    runs: Counter[str] = Counter()
    total_s = 0.0
    for i, (_, out, _log) in enumerate(procs):
        data = json.loads(out.read_text())
        s = data["seconds"] or 1.0
        total_s += s
        pct = cpu_used(cpu0[i], cpu1[i]) / wall * 100
        print(
            f"  w{i}: {data['passes'] / s:.1f} wakeups/s ({data['zero_timeout'] / s:.1f}/s with a "
            f"zero timeout, {data['idle_passes'] / s:.1f}/s running nothing), CPU {pct:.3f} % "
            "(with the probe)"
        )
        wakers.update(data["wakers"])
        cpu.update(data["cpu"])
        runs.update(data["runs"])
    n = len(procs)
    per = total_s / n
    print(f"\nwakers, per node per second (the first callback of a pass), top {args.top}:")
    for name, c in wakers.most_common(args.top):
        print(f"  {c / n / per:7.2f}/s  {name}")
    print(f"\ncallbacks by CPU, per node (µs per second of wall time; runs/s), top {args.top}:")
    for name, t in cpu.most_common(args.top):
        print(f"  {t / n / per * 1e6:8.1f} µs/s  {runs[name] / n / per:7.2f}/s  {name}")
    if args.profile:
        profiled = min(1, args.nodes - 1)
        print(f"\nw{profiled} under cProfile over the window, by own time, top {args.top}:")
        stats = pstats.Stats(str(work / "profile.pstats"), stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
