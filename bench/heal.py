"""Heal time after a partition (issue 19): how long a fleet split by a dead site router
takes to be whole again once the router is back.

    sudo .venv/bin/python bench/heal.py [--trials 5] [--hold 40] [--sites 3] [--per-site 2]
                                        [--deadline 120]

A routed fleet of network namespaces (harness/edge_harness/sites.py; the machine's own
network is untouched): S sites of P `edge-agent run` nodes, each site a LAN behind its
own router, the routers joined by a core. Nodes join by seeds (the first node of every
site; `discover = false`, since mDNS does not cross routers) and have no origins. Once
every node lists every other alive, each trial:

1. isolate("a"): site a's router forwards nothing (nftables in its forward hook);
2. waits until both sides see the other dead: every site-a node lists every other node
   as neither alive nor suspect, and every other node so lists site a's (the time is
   printed as "split");
3. holds the partition --hold seconds more: 40 by default, past memberlist's 30 s
   GossipToTheDeadTime, after which nobody gossips to a dead member, so only a
   reconnect or rejoin can heal it, as after a real outage;
4. restore("a"), then times until every node lists every other alive ("heal"), and
   when the first node of either side first saw one of the other alive ("first link").

Every node is polled through GET /v1/members every 0.1 s. A trial not healed by
--deadline counts as missed; site a's nodes are then restarted (they rejoin their
seeds) so the next trial starts whole, and the output says so.

Goal: median heal <= 5 s. Needs root, iproute2 and nftables. Exits 1 if it could not
measure; a missed goal is printed, not an exit code.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import HarnessError, compile_agent

from edge_harness.fleet import TRANSIENT, FleetError, Host, missing_prerequisites, wait
from edge_harness.sites import SiteFleet

PREFIX = "eabench-"
GOAL = 5.0  # seconds from the router's return to a whole fleet
POLL = 0.1
SPLIT_DEADLINE = 60.0
CONVERGE_DEADLINE = 60.0
SITE_NAMES = "abcdefghij"


def views(hosts: list[Host]) -> dict[str, dict[str, str]]:
    """node -> {member -> state}; a node that cannot answer has an empty view."""
    out: dict[str, dict[str, str]] = {}
    for h in hosts:
        try:
            out[h.name] = {n: s for n, (s, _) in h.members().items()}
        except TRANSIENT:
            out[h.name] = {}
    return out


def split_seen(v: dict[str, dict[str, str]], inside: set[str], outside: set[str]) -> bool:
    def gone(node: str, others: set[str]) -> bool:
        return bool(v[node]) and all(v[node].get(m) not in ("alive", "suspect") for m in others)

    return all(gone(n, outside) for n in inside) and all(gone(n, inside) for n in outside)


def whole(v: dict[str, dict[str, str]], names: set[str]) -> bool:
    return all(names <= {m for m, s in view.items() if s == "alive"} for view in v.values())


def linked(v: dict[str, dict[str, str]], inside: set[str], outside: set[str]) -> bool:
    """Some node sees some node of the other side alive."""
    return any(v[n].get(m) == "alive" for n in inside for m in outside) or any(
        v[n].get(m) == "alive" for n in outside for m in inside
    )


def trial(f: SiteFleet, hold: float, deadline: float) -> tuple[float, float, float | None]:
    """(split, first link, heal) seconds; heal is None when not whole by the deadline."""
    hosts = f.hosts
    names = {h.name for h in hosts}
    inside = {h.name for h in f.inside("a")}
    outside = names - inside
    t0 = time.monotonic()
    f.isolate("a")
    wait(
        lambda: split_seen(views(hosts), inside, outside),
        SPLIT_DEADLINE,
        "both sides to see the other dead",
        f.describe,
        interval=POLL,
    )
    split = time.monotonic() - t0
    time.sleep(hold)  # the partition itself
    f.restore("a")
    t1 = time.monotonic()
    first: float | None = None
    while time.monotonic() - t1 < deadline:
        v = views(hosts)
        if first is None and linked(v, inside, outside):
            first = time.monotonic() - t1
        if whole(v, names):
            return split, first if first is not None else 0.0, time.monotonic() - t1
        time.sleep(POLL)
    return split, first if first is not None else float("nan"), None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--hold", type=float, default=40.0, help="seconds the split is held")
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--per-site", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=120.0, help="seconds to wait for a heal")
    args = ap.parse_args()
    missing = missing_prerequisites(need_nft=True)
    if missing:
        print("bench/heal.py needs " + ", ".join(missing), file=sys.stderr)
        return 1
    if not 2 <= args.sites <= len(SITE_NAMES) or args.per_site < 1 or args.trials < 1:
        ap.error(f"--sites 2..{len(SITE_NAMES)}, --per-site >= 1, --trials >= 1")
    try:
        compile_agent()  # load bytecode like an installed node, not compile at each start
    except HarnessError as e:
        print(f"could not measure: {e}", file=sys.stderr)
        return 1
    sites = list(SITE_NAMES[: args.sites])
    print(
        f"{args.sites} sites x {args.per_site} nodes, seeds = first node of each site;"
        f" site a isolated, held {args.hold:g} s after both sides saw the split, then restored"
    )
    heals: list[float | None] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="edge-agent-bench-heal-") as tmp,
            SiteFleet(Path(tmp), sites, prefix=PREFIX, log_level="warning") as f,
        ):
            f.add_sites(args.per_site)
            f.start()
            took = f.wait_converged(CONVERGE_DEADLINE)
            print(f"fleet whole {took:.1f} s after start", flush=True)
            for i in range(args.trials):
                split, first, heal = trial(f, args.hold, args.deadline)
                heals.append(heal)
                shown = f"{heal:.1f} s" if heal is not None else f"NOT within {args.deadline:g} s"
                print(
                    f"trial {i + 1}: split seen after {split:.1f} s; restored after"
                    f" {args.hold:g} s more; first link {first:.1f} s, whole {shown}",
                    flush=True,
                )
                if heal is None:
                    print("  restarting site a's nodes so the next trial starts whole", flush=True)
                    for h in f.inside("a"):
                        h.stop()
                        h.start()
                    f.wait_converged(CONVERGE_DEADLINE)
    except (FleetError, TimeoutError) as e:  # the fleet has torn down its own namespaces
        print(f"could not measure: {e}", file=sys.stderr)
        return 1
    done = [h for h in heals if h is not None]
    med = statistics.median([h if h is not None else float("inf") for h in heals])
    print()
    print("seconds from the router's return until every node lists every other alive")
    print("  trials: " + ", ".join(f"{h:.1f}" if h is not None else "-" for h in heals))
    if done:
        print(f"  min {min(done):.1f}  max {max(done):.1f}  ({len(heals) - len(done)} not healed)")
    print(f"  median {med:.1f} s   goal <= {GOAL:g} s: {'met' if med <= GOAL else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
