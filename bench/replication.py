"""Replication figures: anti-entropy cost, catch-up cost, merge rate (issue 5).

    .venv/bin/python bench/replication.py [--sizes 100,1000,10000] [--missed 1,10,100,1000]
                                          [--merges 20000] [--no-sim] [--seed 1]

Everything runs in-process on the sans-I/O cores (agent.node.state, agent.node.replication); bytes
are the payloads replication hands to membership (memberlist's framing, compression and
encryption come on top and are the same for any user message).

* equal: two replicas holding the same state of N origins x 3 observers (each origin
  declared by one node and observed by all three) do one push/pull. Bytes per exchange
  = both push/pull user states (a Serf messagePushPull with our digest) + repairs (none
  when equal). Goal: flat in N, under 2 KB. Also the CPU per exchange (both sides:
  digest, encode, decode, delta_for).
* catch-up: on a 1,000-origin x 3 state, replica b misses M changes made at a and c
  (70% observation transitions, 20% API declarations, 10% removals); one push/pull
  between a and b. Bytes = what that exchange costs above an exchange between equal
  replicas (the repair, and the digest growing with the gap), against the sum of the
  encoded sizes of the M deltas b missed. Goal: <= 1.5x.
* merges/s: small deltas (observation transitions of a 10,000 x 3 state) applied to a
  replica: State.apply alone, and the whole receive path (Replicator.handle_event:
  decode, work out what is new, join, queue the pass-on); and the same messages a
  second time (already known: what most gossip copies are).
* sim (skip with --no-sim): 50 nodes in the membership simulator, 100 changes at random
  nodes; per change, replication messages and bytes each node received (gossip is an
  epidemic: every node passes a change on once, memberlist retransmits each broadcast
  4 x ceil(log10(n+1)) times), with 0% and 20% UDP loss.
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.crdt.hlc import Timestamp
from agent.domain.origin import OriginSpec, parse_origin
from agent.membership.member import Member
from agent.membership.messages import NodeState
from agent.membership.meta import encode_tags
from agent.membership.protocol import MemberEvent, RemoteState, UserMessage
from agent.node.replication import KIND_DELTA, Replicator, Send, encode_message
from agent.node.state import Delta, State, encode_delta

T = TypeVar("T")
T0 = 1_780_000_000_000
META = encode_tags({"role": "edge-agent"})
GOAL_EQUAL_BYTES = 2048
GOAL_CATCH_UP = 1.5
REPS = 20


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    finally:
        gc.enable()


def spec(oid: str, interval: str = "10s") -> OriginSpec:
    return parse_origin(
        {"id": oid, "url": f"https://{oid}.example.com/healthz", "interval": interval}
    )


class Clock:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, node: str) -> Timestamp:
        self.n += 1
        return Timestamp(T0 + self.n, 0, node)


def fleet(n_origins: int, clock: Clock) -> list[State]:
    """Three equal replicas a, b, c: n origins declared by a, observed by all three."""
    states = [State(r) for r in "abc"]
    a = states[0]

    def everywhere(d: Delta | None, skip: State) -> None:
        assert d is not None
        for s in states:
            if s is not skip:
                s.apply(d)

    for i in range(n_origins):
        everywhere(a.declare(spec(f"o{i}"), "a", "config", clock("a")), a)
        for s in states:
            everywhere(s.observe(f"o{i}", s.replica, "up", clock(s.replica), "<10ms", ""), s)
    return states


def replicator(st: State, *peers: str) -> Replicator:
    rep = Replicator(st, rng=random.Random(1))
    for i, p in enumerate(peers):
        m = Member(p, bytes([10, 0, 0, i + 1]), 7946, META, state=NodeState.ALIVE)
        rep.handle_event(MemberEvent("join", m))
    return rep


def exchange(a: Replicator, b: Replicator) -> tuple[int, int]:
    """One push/pull: (bytes, repair bytes), repairs delivered."""
    sa, sb = a.local_state(False), b.local_state(False)
    b.handle_event(RemoteState(sa, False))
    a.handle_event(RemoteState(sb, False))
    outs = [(b, a.outputs()), (a, b.outputs())]
    repair = 0
    for dst, batch in outs:
        for out in batch:
            assert isinstance(out, Send)
            repair += len(out.payload)
            dst.handle_event(UserMessage(out.payload, ("10.0.0.9", 7946)))
    a.outputs(), b.outputs()
    return len(sa) + len(sb) + repair, repair


# --- the figures ------------------------------------------------------------------------------


def bench_equal(sizes: list[int]) -> list[tuple[int, int, int, int, float]]:
    rows = []
    for n in sizes:
        clock = Clock()
        states = fleet(n, clock)
        a, b = replicator(states[0], "b"), replicator(states[1], "a")
        state_bytes = len(states[0].snapshot())
        total, repair = exchange(a, b)

        def many(a: Replicator = a, b: Replicator = b) -> None:
            for _ in range(REPS):
                exchange(a, b)

        secs, _ = timed(many)
        rows.append((n, state_bytes, total, repair, secs / REPS))
        print(f"  measured equal at {n:,}", file=sys.stderr, flush=True)
    return rows


def make_changes(
    states: list[State], m: int, rng: random.Random, clock: Clock, n_origins: int
) -> list[Delta]:
    a, _, c = states
    out: list[Delta] = []
    while len(out) < m:
        w = rng.choice([a, c])
        r = rng.random()
        i = rng.randrange(n_origins)
        d: Delta | None
        if r < 0.7:
            cur = w.observation(f"o{i}", w.replica)
            status = "down" if cur is None or cur.status == "up" else "up"
            band = None if status == "down" else "<100ms"
            d = w.observe(f"o{i}", w.replica, status, clock(w.replica), band, "HTTP 503")
        elif r < 0.9:
            d = w.declare(spec(f"api{len(out)}", "5s"), w.replica, "api", clock(w.replica))
        else:
            d = w.remove_observation(f"o{i}", w.replica)
        if d is None:
            continue
        other = c if w is a else a
        other.apply(d)  # a and c stay in sync; b misses it
        out.append(d)
    return out


def bench_catch_up(missed: list[int], seed: int) -> list[tuple[int, int, int, int, str]]:
    rows = []
    n = 1000
    for m in missed:
        clock = Clock()
        states = fleet(n, clock)
        rng = random.Random(seed + m)
        a, b = replicator(states[0], "b"), replicator(states[1], "a")
        baseline, _ = exchange(a, b)
        deltas = make_changes(states, m, rng, clock, n)
        missed_bytes = sum(len(encode_delta(d)) for d in deltas)
        sa, sb = a.local_state(False), b.local_state(False)
        b.handle_event(RemoteState(sa, False))
        a.handle_event(RemoteState(sb, False))
        (out,) = a.outputs()
        assert isinstance(out, Send) and not b.outputs()
        b.handle_event(UserMessage(out.payload, ("10.0.0.1", 7946)))
        assert a.state == b.state, "catch-up did not converge"
        spent = len(sa) + len(sb) + len(out.payload) - baseline
        rows.append((m, missed_bytes, spent, len(out.payload), "tcp" if out.reliable else "udp"))
        print(f"  measured catch-up of {m:,}", file=sys.stderr, flush=True)
    return rows


def bench_merges(count: int) -> tuple[float, float, float, int]:
    clock = Clock()
    states = fleet(10_000, clock)
    a = states[0]
    deltas = []
    for i in range(count):
        cur = a.observation(f"o{i % 10_000}", "a")
        status = "down" if cur is None or cur.status == "up" else "up"
        d = a.observe(f"o{i % 10_000}", "a", status, clock("a"), None, "")
        assert d is not None
        deltas.append(d)
    raw = [encode_message(KIND_DELTA, "a", encode_delta(d)) for d in deltas]
    b = State.restore("b", states[1].snapshot())
    secs_apply, _ = timed(lambda: [b.apply(d) for d in deltas])
    c = replicator(State.restore("c", states[2].snapshot()), "a", "b")
    events = [UserMessage(p, ("10.0.0.1", 7946)) for p in raw]

    def receive() -> None:
        for ev in events:
            c.handle_event(ev)
        c.outputs()

    secs_path, _ = timed(receive)
    assert b.state_digest().vv == c.state.state_digest().vv
    secs_again, _ = timed(receive)  # the same messages again: all already known
    assert c.counters.redundant == count
    size = sum(len(p) for p in raw) // count
    return count / secs_apply, count / secs_path, count / secs_again, size


def bench_sim(seed: int) -> list[tuple[float, float, float, float]]:
    logging.getLogger("agent.membership").setLevel(logging.ERROR)
    from agent.membership.settings import Settings
    from tests.replication_sim import ReplicatedCluster

    rows = []
    for loss in (0.0, 0.2):
        c = ReplicatedCluster(50, seed=seed, loss=loss, settings=Settings(push_pull_interval=30.0))
        c.start()
        rng = random.Random(seed)
        names = list(c.states)
        changes = 100
        for _ in range(changes):
            c.random_mutation(rng.choice(names))
            c.sim.run_for(0.5)
        c.sim.run_for(30)
        msgs = c.traffic.messages[KIND_DELTA] / changes / len(names)
        byts = c.traffic.bytes[KIND_DELTA] / changes / len(names)
        redundant = sum(r.counters.redundant for r in c.reps.values())
        received = sum(r.counters.received for r in c.reps.values())
        rows.append((loss, msgs, byts, redundant / max(received, 1)))
        print(f"  simulated {loss:.0%} loss", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--missed", default="1,10,100,1000")
    ap.add_argument("--merges", type=int, default=20_000)
    ap.add_argument("--no-sim", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    missed = [int(x) for x in args.missed.split(",")]

    print("anti-entropy between equal replicas (N origins x 3 observers, one push/pull)")
    head = ("origins", 8), ("state", 10), ("bytes/exchange", 14), ("repairs", 7), ("cpu", 10)
    print("  ".join(h.rjust(w) for h, w in head))
    worst = 0
    for n, state_bytes, total, repair, secs in bench_equal(sizes):
        worst = max(worst, total)
        print(f"{n:>8,}  {state_bytes:>9,}B  {total:>13,}B  {repair:>6,}B  {secs * 1e6:>8,.0f}us")
    verdict = "met" if worst <= GOAL_EQUAL_BYTES else "MISSED"
    print(f"goal: flat and <= {GOAL_EQUAL_BYTES:,} B per exchange: {verdict} (max {worst:,} B)")
    print()
    print("catch-up after missing M changes (1,000 origins x 3; one push/pull)")
    print(f"{'M':>6}  {'missed deltas':>13}  {'catch-up':>10}  {'ratio':>5}  {'repair':>10}  via")
    worst_ratio = 0.0
    for m, missed_bytes, spent, repair, via in bench_catch_up(missed, args.seed):
        ratio = spent / missed_bytes
        worst_ratio = max(worst_ratio, ratio)
        print(f"{m:>6,}  {missed_bytes:>12,}B  {spent:>9,}B  {ratio:>5.2f}  {repair:>9,}B  {via}")
    verdict = "met" if worst_ratio <= GOAL_CATCH_UP else "MISSED"
    print(f"goal: <= {GOAL_CATCH_UP}x the missed deltas: {verdict} (max {worst_ratio:.2f}x)")
    print()
    apply_rate, path_rate, again_rate, size = bench_merges(args.merges)
    print(f"merges/s of small deltas ({size} B messages) into a 10,000 x 3 state:")
    print(f"  State.apply alone                                  {apply_rate:>9,.0f}/s")
    print(f"  receive path, new (decode, new part, join, pass on) {path_rate:>9,.0f}/s")
    print(f"  receive path, already known (decode, drop)          {again_rate:>9,.0f}/s")
    if not args.no_sim:
        print()
        print("gossip cost in a 50-node simulation (100 changes, per change per node)")
        print(f"{'loss':>5}  {'msgs':>5}  {'bytes':>6}  {'redundant':>9}")
        for loss, msgs, byts, red in bench_sim(args.seed):
            print(f"{loss:>5.0%}  {msgs:>5.1f}  {byts:>6.0f}  {red:>9.0%}")
        print("redundant = received messages that held nothing new (epidemic overhead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
