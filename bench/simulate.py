"""The membership simulator at fleet scale (issue 21 item 6), beside memberlist's and SWIM's bounds.

    .venv/bin/python bench/simulate.py [--nodes 100,1000,2000,10000] [--seed 7]
                                       [--fp-window 30] [--push-pull] [--plaintext]

Every node is the same GossipEndpoint a live node runs (agent/membership/simulator.py), in
virtual time: what crosses the simulated network is whole datagrams as on the wire
(compound, CRC, LZW compression, AES-GCM with a cluster key), decoded on arrival by the
same packet layer. Each N runs in a fresh child process, so its wall time and peak RSS
are its own. Per N:

* converged start (Simulator.converge): every node holds every other as alive, from one
  table of shared member records that each core copies the first time it changes one
  (Membership.adopt_members). 10,000 protocol joins would take hours: the converged start
  is the one shortcut past the protocol, and no join events are emitted;
* detection: one random node is killed (kill -9) after 5 s of steady state; the time until
  each survivor marks it dead, as median, p90, p99 and max over the N-1 survivors; the
  first suspicion; beside the SWIM paper's expected time to the first detection
  (e/(e-1) = 1.58 protocol periods) plus memberlist's suspicion timeout, Lifeguard's
  minimum SuspicionMult * log10(N) * ProbeInterval and its maximum (x SuspicionMaxTimeoutMult);
* broadcast: three nodes, one after another, update their tags (an alive with a higher
  incarnation and new meta, gossiped); gossip rounds (GossipInterval) from the update until
  every other node has applied it, beside memberlist's retransmit limit RetransmitMult *
  ceil(log10(N+1)) (transmissions of the message by each node);
* false positives: 5 % packet loss on every datagram and 1 % of the nodes stalled, each
  once, at a random time in a window (--fp-window, 30 s). A stalled node (SIGSTOP, a Pi
  stuck on SD-card I/O) runs no timers and reads nothing; at the end of its stall it
  processes its backlog at once. Its stall lasts half of Lifeguard's minimum suspicion
  timeout (8 s at N=10,000, 6 s at 1,000): long enough that several peers' probes fail and
  it is suspected, short enough that Lifeguard must tolerate it, since it reads the
  suspicion and refutes it with the other half of the timeout (more than the few seconds
  the refutation's gossip takes) to spare. Loss stays on after the window until no live
  node suspects a live member (at most the maximum suspicion timeout). A false positive is
  a live member declared dead; suspicions of live members are printed too;
* the simulator's own wall time per phase and peak RSS (ru_maxrss of the child), and the
  bytes each member entry costs (RSS growth of the converged start / N^2).

Push/pull (anti-entropy) is off unless --push-pull: at N=10,000 each exchange carries all
10,000 members through pure-Python msgpack, LZW and the merge (the "push/pull exchange"
line prints its wall time at each N), and memberlist's schedule (every 30 s, scaled x10 at
10,000) would make the run hours. Detection, suspicion and broadcasts do not depend on it.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

E_OVER_E_MINUS_1 = math.e / (math.e - 1)  # SWIM: expected protocol periods to first detection


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[k - 1]


class _CountRefutes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "refuting" in record.getMessage():
            self.count += 1


def run_one(
    n: int,
    seed: int,
    fp_window: float,
    push_pull: bool,
    encrypt: bool,
    broadcasts: int = 3,
    memberlist_ticker: bool = False,
    skip_fp: bool = False,
    only_fp: bool = False,
) -> dict[str, Any]:
    """One simulation of n nodes; the figures as a dict (printed as JSON by the child)."""
    from agent.membership.messages import NodeState
    from agent.membership.settings import Settings, retransmit_limit, suspicion_timeout
    from agent.membership.simulator import Simulator

    out: dict[str, Any] = {"n": n, "seed": seed, "encrypted": encrypt, "push_pull": push_pull}
    wall: dict[str, float] = {}  # per phase, seconds of wall time
    cpu: dict[str, float] = {}  # and of this process's CPU (the machine may be shared)
    refutes = _CountRefutes()
    core_log = logging.getLogger("agent.membership")
    core_log.addHandler(refutes)
    core_log.propagate = False  # counted, not printed: 10^4 nodes log a lot at WARNING
    settings = Settings(
        push_pull_interval=Settings().push_pull_interval if push_pull else 0.0,
        gossip_park=not memberlist_ticker,
    )
    out["memberlist_ticker"] = memberlist_ticker
    out["skip_fp"] = skip_fp
    out["only_fp"] = only_fp
    rng = random.Random(seed + 1)

    def note(msg: str) -> None:
        print(f"# N={n} {msg}", file=sys.stderr, flush=True)

    def checkpoint() -> None:
        """The figures so far, one JSON line: a long run killed midway still has them."""
        out["wall"] = wall
        out["cpu"] = cpu
        out["peak_rss_mib"] = peak_rss_mib()
        out["sim_seconds"] = sim.now
        print(json.dumps(out), flush=True)

    # --- build and converge ------------------------------------------------------------
    r0, w, c = rss_mib(), time.monotonic(), time.process_time()
    sim = Simulator(n, seed=seed, settings=settings, encrypt=encrypt, freeze_every=1.0)
    wall["build"] = time.monotonic() - w
    cpu["build"] = time.process_time() - c
    r1, w, c = rss_mib(), time.monotonic(), time.process_time()
    sim.converge()
    gc.collect()
    gc.freeze()  # the tables are long-lived: keep the collector from walking them again
    wall["converge"] = time.monotonic() - w
    cpu["converge"] = time.process_time() - c
    r2 = rss_mib()
    out["rss_base_mib"] = r0
    out["rss_endpoints_mib"] = r1 - r0
    out["rss_tables_mib"] = r2 - r1
    out["bytes_per_entry"] = (r2 - r1) * 2**20 / (n * n)
    out["rss_converged_mib"] = r2
    note(f"converged in {wall['build'] + wall['converge']:.1f} s wall, RSS {r2:.0f} MiB")
    checkpoint()

    w, c = time.monotonic(), time.process_time()
    i0 = len(sim.observed)  # before: each node's join event for itself, at its start
    sim.run_for(5.0)
    wall["steady"] = time.monotonic() - w
    cpu["steady"] = time.process_time() - c
    out["steady_events"] = len(sim.observed) - i0  # any here: it was not converged
    gossip = settings.gossip_interval

    def run_until(cond: Callable[[], bool], deadline: float, step: float, what: str) -> bool:
        while not cond():
            if sim.now >= deadline:
                note(f"{what}: not reached by t={deadline:.0f} s")
                return False
            sim.run_for(step)
        return True

    min_t = suspicion_timeout(settings.suspicion_mult, n, settings.probe_interval)
    max_t = settings.suspicion_max_timeout_mult * min_t
    if not only_fp:  # --only-fp: straight from the steady state to the false positives
        # --- detection -----------------------------------------------------------------------
        names = list(sim.nodes)
        victim = names[rng.randrange(1, n)]
        w, c = time.monotonic(), time.process_time()
        t_kill = sim.now
        sim.kill(victim)
        live = [x.name for x in sim.live_nodes()]
        dead_at: dict[str, float] = {}
        suspect_at: list[float] = []
        i = len(sim.observed)

        def scan_dead() -> bool:
            nonlocal i
            for o in sim.observed[i:]:
                if o.member == victim:
                    if o.kind == "dead":
                        dead_at.setdefault(o.observer, o.at)
                    elif o.kind == "suspect":
                        suspect_at.append(o.at)
            i = len(sim.observed)
            return len(dead_at) >= len(live)

        done = run_until(scan_dead, t_kill + max_t + 60, 0.5, "detection")
        times = [dead_at[x] - t_kill for x in live if x in dead_at]
        wall["detection"] = time.monotonic() - w
        cpu["detection"] = time.process_time() - c
        out["detect"] = {
            "observers": len(live),
            "reached": len(times),
            "complete": done,
            "first_suspect": (min(suspect_at) - t_kill) if suspect_at else math.nan,
            "first": min(times) if times else math.nan,
            "median": pct(times, 50),
            "p90": pct(times, 90),
            "p99": pct(times, 99),
            "max": max(times) if times else math.nan,
            "dead_spread_rounds": (max(times) - min(times)) / gossip if times else math.nan,
            "suspicion_min": min_t,
            "suspicion_max": max_t,
            "swim_first": E_OVER_E_MINUS_1 * settings.probe_interval,
        }
        note(f"detection: median {out['detect']['median']:.2f} s ({wall['detection']:.0f} s wall)")
        checkpoint()

        # --- broadcast spread ----------------------------------------------------------------
        w, c = time.monotonic(), time.process_time()
        rounds: list[float] = []
        unreached: list[int] = []
        sim.run_for(3.0)  # let the dead broadcast finish (~1.5 s), so the update travels alone
        for k in range(broadcasts):
            src = rng.choice([x.name for x in sim.live_nodes()])
            others = {x.name for x in sim.live_nodes()} - {src}
            seen: dict[str, float] = {}
            j = len(sim.observed)
            t0 = sim.now
            sim.nodes[src].endpoint.update_meta(f"v{k}".encode(), sim.now)
            sim.flush(src)

            def scan_update(src: str = src, others: set[str] = others, seen: dict = seen) -> bool:
                nonlocal j
                for o in sim.observed[j:]:
                    if o.member == src and o.kind == "update" and o.observer in others:
                        seen.setdefault(o.observer, o.at)
                j = len(sim.observed)
                return len(seen) >= len(others)

            run_until(scan_update, t0 + 60, gossip, f"broadcast {k}")
            if seen:
                rounds.append((max(seen.values()) - t0) / gossip)
            unreached.append(len(others) - len(seen))
            sim.run_for(2.0)  # the queues drain (7 ticks at 10,000) before the next one
        wall["broadcast"] = time.monotonic() - w
        cpu["broadcast"] = time.process_time() - c
        out["broadcast"] = {
            "rounds": rounds,
            "unreached": unreached,
            "retransmit_limit": retransmit_limit(settings.retransmit_mult, n),
            "retransmit_log": settings.retransmit_mult * math.log10(n + 1),
            "gossip_nodes": settings.gossip_nodes,
        }
        note(f"broadcast: rounds {rounds} ({wall['broadcast']:.0f} s wall)")
        checkpoint()

    def finish() -> dict[str, Any]:
        out["wall"] = wall
        out["cpu"] = cpu
        out["wall_total"] = sum(wall.values())
        out["sim_seconds"] = sim.now
        out["packets"] = sim.packets_sent
        out["bad_input"] = sim.bad_input()
        out["peak_rss_mib"] = peak_rss_mib()
        if sim.memo is not None:  # the simulator's exact codec cache (CodecMemo)
            out["codec_memo"] = {"calls": sim.memo.calls, "hits": sim.memo.hits}
        core_log.removeHandler(refutes)
        core_log.propagate = True
        return out

    if skip_fp:
        return finish()

    # --- false positives: 5 % loss, 1 % stalled ------------------------------------------
    w, c = time.monotonic(), time.process_time()
    stall_s = min_t / 2
    live_names = [x.name for x in sim.live_nodes()]
    stalled = rng.sample(live_names, max(1, round(0.01 * len(live_names))))
    t_w = sim.now
    plan = sorted((t_w + rng.random() * (fp_window - stall_s), s) for s in stalled)
    j = len(sim.observed)
    pkts0, bytes0 = sim.packets_sent, sim.bytes_sent
    refutes0 = refutes.count
    sim.loss = 0.05
    live_set = set(live_names)
    fp_seen = 0  # events scanned so far
    fp_dead: list[str] = []
    fp_suspect = 0

    def fp_progress(every: float = 2.0) -> None:
        """The window so far, every few simulated seconds: one JSON line ("fp_progress")
        and a note, so a run stopped in the window still says what it saw."""
        nonlocal fp_seen, fp_suspect
        for o in sim.observed[j + fp_seen :]:
            if o.member in live_set:
                if o.kind == "dead":
                    fp_dead.append(o.member)
                elif o.kind == "suspect":
                    fp_suspect += 1
        fp_seen = len(sim.observed) - j
        out["fp_progress"] = {
            "simulated": sim.now - t_w,
            "dead_events": len(fp_dead),
            "dead_members": len(set(fp_dead)),
            "suspect_events": fp_suspect,
            "wall": time.monotonic() - w,
            "cpu": time.process_time() - c,
        }
        note(
            f"false positives so far: {len(fp_dead)} dead, {fp_suspect} suspect at "
            f"{sim.now - t_w:.0f} s of the window ({time.monotonic() - w:.0f} s wall)"
        )
        checkpoint()

    marks = [t_w + k * 2.0 for k in range(1, int(fp_window / 2.0) + 1)]
    for at, what in sorted([(a, s) for a, s in plan] + [(m, "") for m in marks]):
        sim.run_until(at)
        if what:
            sim.stall(what, stall_s)
        else:
            fp_progress()
    sim.run_until(t_w + fp_window)

    def quiet() -> bool:
        """No live node suspects a live member any more."""
        return all(not any(m in live_set for m in x.core.suspicions) for x in sim.live_nodes())

    run_until(quiet, t_w + fp_window + max_t + 10, 1.0, "quiet after the loss window")
    t_end = sim.now
    sim.loss = 0.0
    wall["false_positives"] = time.monotonic() - w
    cpu["false_positives"] = time.process_time() - c
    evs = [o for o in sim.observed[j:] if o.member in live_set]
    dead = [o for o in evs if o.kind == "dead"]
    sus = [o for o in evs if o.kind == "suspect"]
    sus_members = {o.member for o in sus}
    # every member that was suspected or stalled, as each live node sees it at the end
    watch = sus_members | set(stalled) | {o.member for o in dead}
    still = 0
    for x in sim.live_nodes():
        for name in watch:
            m = x.core.node_map.get(name)
            still += m is None or m.state != NodeState.ALIVE
    out["fp"] = {
        "window": fp_window,
        "measured": t_end - t_w,
        "loss": 0.05,
        "stalled": len(stalled),
        "stall_s": stall_s,
        "dead_events": len(dead),
        "dead_members": len({o.member for o in dead}),
        "suspect_events": len(sus),
        "suspect_members": len(sus_members),
        "suspect_members_stalled": len(sus_members & set(stalled)),
        "suspect_members_not_stalled": len(sus_members - set(stalled)),
        "refutes": refutes.count - refutes0,
        "not_alive_at_end": still,
        "packets_per_node_s": (sim.packets_sent - pkts0) / (t_end - t_w) / len(live_names),
        "bytes_per_node_s": (sim.bytes_sent - bytes0) / (t_end - t_w) / len(live_names),
    }
    fp_wall = wall["false_positives"]
    note(f"false positives: {len(dead)} dead, {len(sus)} suspect ({fp_wall:.0f} s wall)")
    checkpoint()

    # --- what one push/pull exchange costs at this N -------------------------------------
    a, b = sim.live_nodes()[:2]
    w, c = time.monotonic(), time.process_time()
    a.endpoint.join([b.addr], sim.now)
    sim.flush(a.name)
    sim.run_for(0.02)
    out["pushpull_exchange_s"] = time.monotonic() - w

    return finish()


# --- the parent: one child per N, then the tables -------------------------------------------


def f(x: float, d: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def table(rows: Sequence[tuple[str, ...]], head: tuple[str, ...]) -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def report(r: dict[str, Any]) -> None:
    n, d = r["n"], r.get("detect")
    b = r.get("broadcast", {"rounds": [], "unreached": [], "retransmit_limit": 0})
    b.setdefault("retransmit_log", math.nan)
    ticker = "memberlist's ticker" if r.get("memberlist_ticker") else "parked gossip tick"
    print(
        f"\n## N={n:,} (seed {r['seed']}, {'AES-GCM' if r['encrypted'] else 'plaintext'}, "
        f"push/pull {'on' if r['push_pull'] else 'off'}, {ticker}; "
        f"{r['sim_seconds']:.0f} s simulated)\n"
    )
    rows: list[tuple[str, str, str]] = []
    if d is not None:
        lo, hi, swim = d["suspicion_min"], d["suspicion_max"], d["swim_first"]
        rows += [
            ("detection: first suspicion (s)", f(d["first_suspect"]),
             f"SWIM e/(e-1) x ProbeInterval = {f(swim)}"),
            ("detection: first survivor (s)", f(d["first"]),
             f"SWIM + Lifeguard min: {f(swim)} + {f(lo)} = {f(swim + lo)}"),
            ("detection, all survivors: median (s)", f(d["median"]),
             f"SWIM + Lifeguard min..max: {f(swim + lo)} .. {f(swim + hi)}"),
            ("detection, all survivors: p90 (s)", f(d["p90"]), ""),
            ("detection, all survivors: p99 (s)", f(d["p99"]), ""),
            ("detection, all survivors: max (s)", f(d["max"]),
             f"SWIM + Lifeguard max = {f(swim + hi)}"),
            ("  survivors that marked it dead", f"{d['reached']}/{d['observers']}", "all"),
            ("  dead: first to last survivor (rounds)", f(d["dead_spread_rounds"], 1), ""),
        ]  # fmt: skip
    if "broadcast" in r:
        rows += [
        ("broadcast: rounds to every node (each)",
         " / ".join(f(x, 1) for x in b["rounds"]),
         f"retransmit limit {b['retransmit_limit']} = 4 x ceil(log10(N+1)) "
         f"(4 x log10(N+1) = {f(b['retransmit_log'], 1)}) sends per node"),
        ("  nodes never reached (each)", " / ".join(str(x) for x in b["unreached"]), "0"),
    ]  # fmt: skip
    fp, so_far = r.get("fp"), r.get("fp_progress")
    if fp is None and so_far is not None:  # stopped in the window: what it saw until then
        rows += [
            (f"false positives so far ({f(so_far['simulated'], 0)} s of the window)",
             f"{so_far['dead_events']} events, {so_far['dead_members']} members", "0"),
            ("  suspicions of live members so far", f"{so_far['suspect_events']} events", ""),
        ]  # fmt: skip
    if fp is not None:
        rows += [
        (f"false positives: dead, live members ({f(fp['measured'], 0)} s)",
         f"{fp['dead_events']} events, {fp['dead_members']} members", "0"),
        ("  suspicions of live members",
         f"{fp['suspect_events']} events, {fp['suspect_members']} members", ""),
        ("  of which stalled / not stalled",
         f"{fp['suspect_members_stalled']} / {fp['suspect_members_not_stalled']}",
         f"{fp['stalled']} stalled {f(fp['stall_s'], 1)} s = Lifeguard min / 2"),
        ("  refutations", str(fp["refutes"]), ""),
        ("  live members not alive somewhere, at end", str(fp["not_alive_at_end"]), "0"),
        ("  packets / bytes per node-second", f"{f(fp['packets_per_node_s'])} / "
         f"{f(fp['bytes_per_node_s'], 0)}", "5 % loss"),
        ("one push/pull exchange (s wall)", f(r["pushpull_exchange_s"], 2),
         "all N members, both ways"),
        ]  # fmt: skip
    rows += [
        ("simulator: wall time total (s)", f(r["wall_total"], 0),
         ", ".join(f"{k} {v:.0f}" for k, v in r["wall"].items())),
        ("simulator: CPU time total (s)", f(sum(r.get("cpu", {}).values()) or math.nan, 0),
         ", ".join(f"{k} {v:.0f}" for k, v in r.get("cpu", {}).items())),
        ("simulator: peak RSS (MiB)", f(r["peak_rss_mib"], 0),
         f"tables {f(r['rss_tables_mib'], 0)} MiB = {f(r['bytes_per_entry'], 0)} B per entry"),
    ]  # fmt: skip
    memo = r.get("codec_memo")
    if memo:
        rows.append(
            ("simulator: codec memo hits", f"{memo['hits']:,} of {memo['calls']:,}",
             "exact cache of LZW and message decoding (CodecMemo)"),
        )  # fmt: skip
    table(rows, ("figure", "measured", "bound / note"))
    if ("broadcast" not in r and not r.get("only_fp")) or ("fp" not in r and not r.get("skip_fp")):
        print("NOTE: the run stopped before its last phases (figures so far)")
    if r["steady_events"]:
        print(f"NOTE: {r['steady_events']} member events in the 5 s of steady state")
    if r.get("bad_input"):
        print(f"bad input: {r['bad_input']}")


def scaling(results: list[dict[str, Any]]) -> None:
    """Per phase, the seconds the simulator spent: CPU where the run recorded it (the
    machine may be shared), else wall; idle is the 5 s of steady state per node-second."""
    print("\n## scaling of the simulator itself\n")
    rows = []
    for r in results:
        n, t = r["n"], r.get("cpu") or r["wall"]
        kind = "CPU" if r.get("cpu") else "wall"

        def cell(phase: str, t: dict[str, float] = t) -> str:
            return f(t[phase], 0) if phase in t else "-"

        rows.append(
            (
                f"{n:,}",
                kind,
                f(t["build"] + t["converge"], 1),
                f(t["steady"] / 5.0 / n * 1e6, 0) if "steady" in t else "-",
                cell("detection"),
                cell("broadcast"),
                cell("false_positives"),
                f(r["peak_rss_mib"], 0),
                f(r["bytes_per_entry"], 0),
            )
        )
    head = (
        "N",
        "seconds of",
        "start",
        "idle us/node-s",
        "detection",
        "broadcast",
        "false pos.",
        "peak RSS MiB",
        "B per entry",
    )
    table(rows, head)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", default="100,1000,2000", help="comma-separated cluster sizes")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fp-window", type=float, default=30.0)
    ap.add_argument("--broadcasts", type=int, default=3, help="tag updates to time")
    ap.add_argument(
        "--memberlist-ticker",
        action="store_true",
        help="gossip every interval as memberlist does (no parked tick sending at once)",
    )
    ap.add_argument("--skip-fp", action="store_true", help="no false-positive phase")
    ap.add_argument(
        "--only-fp",
        action="store_true",
        help="no detection or broadcast phase: the false positives",
    )
    ap.add_argument("--push-pull", action="store_true", help="keep memberlist's push/pull on")
    ap.add_argument("--plaintext", action="store_true", help="no cluster key (no AES-GCM)")
    ap.add_argument("--report", help="print the tables from a child's JSON lines (a file)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child: one N, JSON out
    args = ap.parse_args()
    if args.report:  # format the figures a child printed (the last JSON line of a file)
        with open(args.report) as fh:
            res = json.loads(fh.read().strip().splitlines()[-1])
        res.setdefault("wall_total", sum(res["wall"].values()))
        report(res)
        return 0
    if args.one:
        res = run_one(
            args.one,
            args.seed,
            args.fp_window,
            args.push_pull,
            not args.plaintext,
            args.broadcasts,
            args.memberlist_ticker,
            args.skip_fp,
            args.only_fp,
        )
        print(json.dumps(res))
        return 0
    results = []
    for n in [int(x) for x in args.nodes.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(n), "--seed", str(args.seed)]
        cmd += ["--fp-window", str(args.fp_window), "--broadcasts", str(args.broadcasts)]
        cmd += ["--push-pull"] if args.push_pull else []
        cmd += ["--memberlist-ticker"] if args.memberlist_ticker else []
        cmd += ["--skip-fp"] if args.skip_fp else []
        cmd += ["--only-fp"] if args.only_fp else []
        cmd += ["--plaintext"] if args.plaintext else []
        print(f"# simulating N={n} ...", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = p.stdout.strip().splitlines()
        if p.returncode != 0:
            print(f"N={n}: the simulation failed (exit {p.returncode})", file=sys.stderr)
            if lines:
                print(f"N={n}: its figures so far: {lines[-1]}")
            return 1
        res = json.loads(lines[-1])
        results.append(res)
        report(res)
        sys.stdout.flush()
    scaling(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
