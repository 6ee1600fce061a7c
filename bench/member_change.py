"""What one member's death and return cost a node's event loop at scale (issue 17).

    .venv/bin/python bench/member_change.py [--origins 100000] [--nodes 5] [--replicas 2]
                                            [--reps 3] [--slice 2000]

One node core (agent/node/core.py, no sockets: what the coordinator runs on the loop) in
a fleet of --nodes, --origins declared, every owner's observation "up" replicated to it
(as a settled fleet holds them). Then one other member dies and comes back, --reps times
(a different member each time, so flap damping, agent/node/flaps.py, holds none of them
back). For each event it prints the time of the one step the shell runs on the loop
(``members_changed`` and ``drain``: placement, handoff, the engine's diff, and the first
slice of verdicts), then the ticks that judge the rest of the moved origins' verdicts
(REJUDGE_SLICE each) and the longest of them. Nothing answers a probe while one step
runs: memberlist's probe timeout is 0.5 s, and on a Pi Zero 2 W every figure here is
several times longer. Medians over the reps; CPU time of this process (thread_time).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.crdt.hlc import Timestamp
from agent.domain.origin import parse_origin
from agent.membership.member import Member as GossipMember
from agent.membership.messages import NodeState
from agent.membership.meta import encode_tags
from agent.membership.protocol import UserMessage
from agent.node import core as core_module
from agent.node.core import NodeCore
from agent.node.placement import ROLE
from agent.node.replication import HELLO, KIND_REPAIR, encode_message
from agent.node.state import State


def member(name: str, state: NodeState = NodeState.ALIVE) -> GossipMember:
    tags = encode_tags({"role": ROLE, "version": "bench"})
    return GossipMember(name, b"\x7f\x00\x00\x01", 7946, meta=tags, state=state)


def build(origins: int, names: list[str], replicas: int) -> NodeCore:
    c = NodeCore(names[0], State(names[0]), replicas=replicas, reap_after=3600.0)
    specs = [
        parse_origin({"id": f"o{i:06d}", "url": f"http://127.0.0.1:9/{i}", "interval": "300s"})
        for i in range(origins)
    ]
    c.start(specs, now=0.0, wall=1000.0, alone=True)
    c.drain()
    alive = [member(n) for n in names]
    c.members_changed(alive, now=1.0, wall=1001.0)
    for n in names[1:]:  # each answers our hello: proven edge-agents (agent/node/proof.py)
        hello = encode_message(KIND_REPAIR, n, HELLO)
        c.on_event(UserMessage(hello, None), 1.0, 1001.0, lambda: alive)
    c.drain()
    c.tick(40.0, 1040.0, set(names))
    c.drain()
    for n in names:  # every owner's observation, replicated as a settled fleet holds them
        s = c.state if n == names[0] else State(n)
        delta = None
        for o in c.placement.origins:
            if n in c.placement.owners(o):
                d = s.observe(o, n, "up", Timestamp(1_040_000, 0, n), None, "ok")
                if s is not c.state and d is not None:
                    if delta is None:
                        delta = d
                    else:
                        delta.join(d)  # in place
        if delta is not None:
            c.state.apply(delta)
    c.tick(41.0, 1041.0, set(names))
    c.drain()
    return c


def event(
    c: NodeCore, members: list[GossipMember], now: float, back: str | None = None
) -> tuple[float, int, float]:
    """(the loop step's seconds, ticks after it, the longest tick's seconds). ``back``: a
    member that returns; its origins come back when it answers our hello (its proof,
    agent/node/proof.py), a step of its own: that one is timed."""
    if back is not None:  # alive again, not yet proven: nothing moves yet
        c.members_changed(members, now=now, wall=1000.0 + now)
        c.drain()
    t = time.thread_time()
    if back is None:
        c.members_changed(members, now=now, wall=1000.0 + now)
    else:
        hello = encode_message(KIND_REPAIR, back, HELLO)
        c.on_event(UserMessage(hello, None), now, 1000.0 + now, lambda: members)
    c.drain()
    step = time.thread_time() - t
    ticks, longest = 0, 0.0
    while c.rejudging:
        t = time.thread_time()
        c.tick(now, 1000.0 + now, {m.name for m in members if m.state != NodeState.DEAD})
        c.drain()
        longest = max(longest, time.thread_time() - t)
        ticks += 1
    return step, ticks, longest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--origins", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--slice",
        type=int,
        default=core_module.REJUDGE_SLICE,
        help="verdicts judged per step (0: all in the member change's own step, as before)",
    )
    args = ap.parse_args()
    core_module.REJUDGE_SLICE = args.slice or sys.maxsize
    if args.reps >= args.nodes:
        ap.error("--reps must be below --nodes (each rep kills another member)")
    names = [f"n{i}" for i in range(args.nodes)]
    t = time.monotonic()
    c = build(args.origins, names, args.replicas)
    print(
        f"{args.origins:,} origins, {args.nodes} nodes, {args.replicas} replicas; "
        f"built in {time.monotonic() - t:.1f} s; verdicts judged per step: {args.slice or 'all'}"
    )
    gc.collect()
    gc.freeze()  # as the agent does after start-up (agent/shell/runtime.py)
    alive = [member(n) for n in names]
    rows: dict[str, list[tuple[float, int, float]]] = {"death": [], "return": []}
    now = 100.0
    for rep in range(args.reps):
        victim = names[1 + rep]
        dead = [member(n, NodeState.DEAD if n == victim else NodeState.ALIVE) for n in names]
        moved = sum(1 for o in c.placement.origins if victim in c.placement.owners(o))
        rows["death"].append(event(c, dead, now))
        now += 10.0
        rows["return"].append(event(c, alive, now, back=victim))
        now += 10.0
        print(f"  rep {rep + 1}: {victim} owned {moved:,} origins")
    for what, got in rows.items():
        step = statistics.median(r[0] for r in got)
        ticks = statistics.median(r[1] for r in got)
        longest = statistics.median(r[2] for r in got)
        print(
            f"a member's {what}: one loop step {step * 1000:.0f} ms (median of {len(got)}), "
            f"then {ticks:.0f} ticks of at most {longest * 1000:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
