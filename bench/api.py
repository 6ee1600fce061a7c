"""API figures of issue 17: durable writes, batch declare and apply, SD wear, and 100,000 origins.

    .venv/bin/python bench/api.py [--puts 200] [--repeats 3] [--post-size 1000]
                                  [--apply-size 10000] [--skip-wear]
    .venv/bin/python bench/api.py --scale [--scale-nodes 5] [--scale-origins 100000]

Everything runs on 127.0.0.1: `edge-agent run` processes started from this checkout (each
node's [cluster] join lists every other node, discover = false, LEDs off, the same fleet
token file, a temporary data_dir, default [store] settings) and an origin farm
(edge_harness.farm) that every declared origin points at, so the nodes really check them.
agent/ is byte-compiled first, as an installed node has it. Every process is stopped by
PID when the bench ends, on errors and on Ctrl-C.

Default mode, a 3-node cluster:
 a. durable PUT: --puts sequential `PUT /v1/origins/{id}` of new origins to node 0, each
    sent when the previous answered (200/201 with "durable": true); latency = request
    sent to answer read, on the client. Median of all PUTs, and PUTs/s = puts / wall time
    of the sequence, median over --repeats sequences.
 b. `POST /v1/origins` of --post-size new origins to node 0: seconds until it answers
    (acknowledged, durable on node 0) and until every node's GET /v1/health "origins"
    counts hold all of them (polled on every node each 25 ms; then a sample of the ids is
    read back with GET /v1/origins/{id} on every node). Median over --repeats.
 c. `PUT /v1/origins` (declarative apply) of --apply-size origins, each repeat to a
    fresh 3-node cluster, so "visible" is every node counting exactly --apply-size.
    Median over --repeats. After the last, the same origins, once in service (all up
    everywhere, or 90 s), removed by an apply of []: until every node counts 0 (shown,
    no goal; at most --remove-deadline s).
 d. SD wear: bench/store.py's simulated day (1,000 origins, 5 nodes, 1 % flapping per
    hour; node n0 holds every owner's deltas), written three ways: batched per whole
    second as bench/store.py does; through agent.shell.persistence.GroupCommit as it was
    before issue 17 (--before-rev, read with git show); and through this checkout's.
    Both GroupCommits are driven as the agent's coordinator loop drives them, in virtual
    time: each delta arrives at its second plus a random fraction (n0's own observations
    as local deltas), add() wakes the tick, the tick calls maybe_commit(), and the loop
    sleeps until next_commit(); a commit takes no virtual time. Bytes are write() bytes
    (wchar), fsyncs counted by strace -c, as bench/store.py counts them. Goal: after no
    worse than before (bytes, fsyncs) and than bench/store.py's bytes.

--scale mode (separate, heavier): --scale-nodes nodes, --scale-origins origins declared
with POSTs of 10,000 (each waited until visible everywhere), interval --scale-interval
so checking stays bounded. Then: all origins up on every node (waited for), CPU per node
over --idle-seconds from /proc/PID/stat (% of one core), VmRSS per node, the slowest of
each API request (repeated, node 0) against the 1 s goal, then the cluster is stopped
and the snapshot measured: the newest snapshot file in data_dir/store if one was
written, and offline (the agent does not expose a snapshot time): node 0's data dir
opened with agent.store in this process, the State restored, and the snapshot's copy,
encoding and Store.snapshot write (with its fsyncs) timed on a copy of the directory.

The machine's cores are shared by every node, the farm and the bench: figures from a
busy machine are pessimistic. Exits 1 only when it could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    LOOPBACK,
    PYTHON,
    Children,
    FarmProc,
    HarnessError,
    cancel_on_signals,
    compile_agent,
    cpu_seconds,
    log_problems,
    median,
    run_async_main,
    start_farm,
    tail,
)
from _procs import free_ports, rss_mib

TOKEN = "bench-fleet-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL = 0.025  # visibility polling interval
VISIBLE_DEADLINE = 180.0
FARM_ORIGINS = 1000  # the farm serves o/0..999; origin i points at o/(i % 1000)

GOAL_PUT_MS = 50.0
GOAL_POST_ACK_S = 2.0
GOAL_POST_VISIBLE_S = 5.0
GOAL_APPLY_VISIBLE_S = 10.0
GOAL_REQUEST_S = 1.0
REQUEST_LIMIT = 60.0  # a request at scale not answered by then is recorded as this long


# --- nodes and the cluster ------------------------------------------------------------------


@dataclass
class Node:
    name: str
    api_port: int
    gossip_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def store_dir(self) -> Path:
        return self.dir / "data" / "store"


@dataclass
class Cluster:
    """N nodes on loopback, each joining all the others, sharing one fleet token."""

    children: Children
    session: aiohttp.ClientSession
    n: int
    tag: str = "c0"  # names this cluster's directories (a run may build several)
    replicas: int = 2
    nodes: list[Node] = field(default_factory=list)
    #: more config lines for a node (its own tables: bench/lb.py's [lb])
    extra: Callable[[Node], Sequence[str]] | None = None

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.n)
        token = self.children.dir / "fleet-token"
        token.write_text(TOKEN + "\n")
        for i in range(self.n):
            d = self.children.dir / self.tag / f"node{i}"
            d.parent.mkdir(exist_ok=True)
            d.mkdir()
            self.nodes.append(Node(f"n{i}", ports[2 * i], ports[2 * i + 1], d))

    def config(self, node: Node) -> Path:
        others = [f'"{LOOPBACK}:{x.gossip_port}"' for x in self.nodes if x is not node]
        lines = [
            "[node]",
            f'name = "{node.name}"',
            f'data_dir = "{node.dir / "data"}"',
            "[cluster]",
            f'bind = "{LOOPBACK}:{node.gossip_port}"',
            f'advertise = "{LOOPBACK}:{node.gossip_port}"',
            "discover = false",
            f"join = [{', '.join(others)}]",
            f"replicas = {self.replicas}",
            "[api]",
            f'listen = "{LOOPBACK}:{node.api_port}"',
            f'token_file = "{self.children.dir / "fleet-token"}"',
            "[leds]",
            "enabled = false",
            "[log]",
            'level = "warning"',
            *(self.extra(node) if self.extra is not None else ()),
        ]
        cfg = node.dir / "agent.toml"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    async def start(self, timeout: float = 120.0) -> float:
        """Start every node at once; seconds until each answers /v1/health 200 and lists
        all N members alive."""
        t0 = time.monotonic()
        for node in self.nodes:
            argv = [PYTHON, "-m", "agent.shell.cli", "run", "--config", str(self.config(node))]
            node.proc = self.children.start(argv, node.log)
        pending = set(range(self.n))
        while pending:
            self.check_alive()
            for i in list(pending):
                if await self._ready(self.nodes[i]):
                    pending.discard(i)
            if time.monotonic() - t0 > timeout:
                names = [self.nodes[i].name for i in sorted(pending)]
                raise HarnessError(
                    f"nodes {names} not ready in {timeout:.0f} s:\n"
                    f"{tail(self.nodes[min(pending)].log)}"
                )
            await asyncio.sleep(0.2)
        return time.monotonic() - t0

    async def _ready(self, node: Node) -> bool:
        try:
            async with self.session.get(f"{node.api}/v1/health") as r:
                if r.status != 200:
                    return False
            async with self.session.get(f"{node.api}/v1/members") as r:
                members = await r.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return False
        alive = [m for m in members if m.get("state") == "alive"]
        return len(alive) >= self.n

    def check_alive(self) -> None:
        for node in self.nodes:
            code = node.proc.poll() if node.proc is not None else -1
            if code is not None:
                raise HarnessError(f"node {node.name} exited with code {code}:\n{tail(node.log)}")

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every node at once, wait, SIGKILL any left; exit codes by name."""
        procs = [(x, x.proc) for x in self.nodes if x.proc is not None]
        for _, p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for node, p in procs:
            try:
                codes[node.name] = p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(10)
                codes[node.name] = None
            if p in self.children.procs:
                self.children.procs.remove(p)
            node.proc = None
        return codes

    def problems(self) -> list[str]:
        out = []
        for node in self.nodes:
            out += [f"{node.name}: {x}" for x in log_problems(node.log) if "is down" not in x]
        return out


# --- requests -------------------------------------------------------------------------------

LONG = aiohttp.ClientTimeout(total=600)


def origin(farm: FarmProc, oid: str, i: int, interval: str) -> dict[str, Any]:
    return {"id": oid, "url": farm.url(i % FARM_ORIGINS), "interval": interval}


READ = aiohttp.ClientTimeout(total=30)
COUNT_EVERY = 0.25  # a node whose probe ids all answer has its counts read this often


async def counts(session: aiohttp.ClientSession, node: Node) -> dict[str, int] | None:
    """The node's /v1/health "origins" counts by verdict; None if it did not answer."""
    try:
        async with session.get(f"{node.api}/v1/health", timeout=READ) as r:
            body = await r.json()
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None
    c = body.get("origins") if isinstance(body, dict) else None
    return {str(k): int(v) for k, v in c.items()} if isinstance(c, dict) else None


async def totals(cluster: Cluster) -> list[int | None]:
    cs = await asyncio.gather(*(counts(cluster.session, x) for x in cluster.nodes))
    return [None if c is None else sum(c.values()) for c in cs]


async def has(session: aiohttp.ClientSession, node: Node, oid: str) -> bool:
    try:
        async with session.get(f"{node.api}/v1/origins/{oid}", timeout=READ) as r:
            await r.read()
            return r.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


async def wait_visible(
    cluster: Cluster,
    probe: Sequence[str],
    done: Callable[[int], bool],
    t0: float,
    deadline: float = VISIBLE_DEADLINE,
) -> tuple[float, dict[str, float]]:
    """Wait until every node holds the ``probe`` ids and its catalogue count satisfies
    ``done``: (seconds from t0 until the last node got there, per node); inf if not
    by the deadline.

    Each node is asked for the probe ids every POLL s (GET /v1/origins/{id}, cheap);
    once it has them, for its counts in /v1/health every COUNT_EVERY s: /v1/health
    counts the whole catalogue, and asking it every POLL s would load the node."""
    seen: dict[str, float] = {}
    ids_ok: set[str] = set()
    next_count: dict[str, float] = {}

    async def step(node: Node) -> None:
        if node.name not in ids_ok:
            found = await asyncio.gather(*(has(cluster.session, node, i) for i in probe))
            if not all(found):
                return
            ids_ok.add(node.name)
        now = time.perf_counter()
        if now < next_count.get(node.name, 0.0):
            return
        next_count[node.name] = now + COUNT_EVERY
        c = await counts(cluster.session, node)
        if c is not None and done(sum(c.values())):
            seen[node.name] = time.perf_counter() - t0

    while True:
        cluster.check_alive()
        await asyncio.gather(*(step(x) for x in cluster.nodes if x.name not in seen))
        if len(seen) == len(cluster.nodes):
            return max(seen.values()), seen
        if time.perf_counter() - t0 > deadline:
            return float("inf"), seen
        await asyncio.sleep(POLL)


async def read_back(cluster: Cluster, ids: Sequence[str], sample: int = 10) -> list[str]:
    """GET a sample of ids on every node (the nodes in parallel); the misses."""
    rng = random.Random(len(ids))
    pick = sorted({ids[0], ids[-1], *rng.sample(list(ids), min(sample, len(ids)))})

    async def one(node: Node) -> list[str]:
        return [f"{node.name}: {i}" for i in pick if not await has(cluster.session, node, i)]

    found = await asyncio.gather(*(one(x) for x in cluster.nodes))
    return [m for ms in found for m in ms]


async def write(
    session: aiohttp.ClientSession, method: str, url: str, body: Any
) -> tuple[float, int, Any]:
    """(seconds, status, JSON answer) of one write."""
    t0 = time.perf_counter()
    async with session.request(method, url, json=body, headers=AUTH, timeout=LONG) as r:
        text = await r.read()
        took = time.perf_counter() - t0
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = text[:200]
        return took, r.status, answer


# --- a. durable PUT -------------------------------------------------------------------------


@dataclass
class Results:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # figure, value, goal, ok
    notes: list[str] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)

    def add(self, figure: str, value: str, goal: str = "", met: bool | None = None) -> None:
        ok = "" if met is None else ("met" if met else "MISSED")
        self.rows.append((figure, value, goal, ok))

    def missing(self, figure: str, why: str) -> None:
        self.rows.append((figure, "not measured", "", why[:60]))
        self.unmeasured.append(f"{figure}: {why}")


async def bench_put(
    cluster: Cluster, farm: FarmProc, args: argparse.Namespace, res: Results
) -> None:
    node = cluster.nodes[0]
    lat: list[float] = []
    rates: list[float] = []
    print(f"a. {args.puts} sequential durable PUT /v1/origins/{{id}} to {node.name}:")
    for r in range(args.repeats):
        mine: list[float] = []
        t0 = time.perf_counter()
        for i in range(args.puts):
            oid = f"put-{r}-{i:05d}"
            body = origin(farm, oid, i, args.interval)
            took, status, answer = await write(
                cluster.session, "PUT", f"{node.api}/v1/origins/{oid}", body
            )
            if status not in (200, 201) or not isinstance(answer, dict):
                raise HarnessError(f"PUT {oid} answered {status}: {answer}")
            if answer.get("durable") is not True:
                res.notes.append(f"PUT {oid} answered durable={answer.get('durable')}")
            mine.append(took)
        wall = time.perf_counter() - t0
        lat += mine
        rates.append(args.puts / wall)
        srt = sorted(mine)
        print(
            f"   run {r + 1}: median {median(mine) * 1000:.1f} ms, "
            f"p90 {srt[int(0.9 * (len(srt) - 1))] * 1000:.1f} ms, max {srt[-1] * 1000:.1f} ms, "
            f"{args.puts / wall:.1f} PUTs/s"
        )
    ms = median(lat) * 1000
    res.add(
        "a. durable PUT latency (median)",
        f"{ms:.1f} ms",
        f"<= {GOAL_PUT_MS:.0f} ms",
        ms <= GOAL_PUT_MS,
    )
    res.add("a. sequential PUTs/s (median)", f"{median(rates):.1f}/s")


# --- b. POST a batch, c. PUT an apply -------------------------------------------------------


async def settled_total(cluster: Cluster, deadline: float = 60.0) -> int:
    """The catalogue size once every node counts the same."""
    t0 = time.monotonic()
    while True:
        ts = await totals(cluster)
        if ts[0] is not None and all(t == ts[0] for t in ts):
            return ts[0]
        if time.monotonic() - t0 > deadline:
            raise HarnessError(f"the nodes' catalogues did not settle in {deadline:.0f} s: {ts}")
        await asyncio.sleep(0.1)


def endpoint_missing(status: int) -> bool:
    return status in (404, 405)


async def bench_post(
    cluster: Cluster, farm: FarmProc, args: argparse.Namespace, res: Results
) -> None:
    node = cluster.nodes[0]
    n = args.post_size
    acks: list[float] = []
    vis: list[float] = []
    print(f"b. POST /v1/origins of {n:,} new origins to {node.name}, visible on {cluster.n} nodes:")
    for r in range(args.repeats):
        base = await settled_total(cluster)
        ids = [f"post-{r}-{i:06d}" for i in range(n)]
        body = [origin(farm, oid, i, args.interval) for i, oid in enumerate(ids)]
        t0 = time.perf_counter()
        took, status, answer = await write(cluster.session, "POST", f"{node.api}/v1/origins", body)
        if endpoint_missing(status):
            res.missing("b. POST /v1/origins", f"the agent answered {status}: no batch endpoint")
            return
        if status != 200 or not isinstance(answer, dict) or len(answer.get("added", ())) != n:
            raise HarnessError(f"POST /v1/origins answered {status}: {str(answer)[:300]}")
        if answer.get("durable") is not True:
            res.notes.append(f"POST answered durable={answer.get('durable')}")
        seen, per = await wait_visible(
            cluster, [ids[0], ids[-1]], lambda t, want=base + n: t >= want, t0
        )
        misses = await read_back(cluster, ids)
        if misses:
            res.notes.append(f"POST run {r + 1}: ids not readable after visible: {misses[:5]}")
        acks.append(took)
        vis.append(seen)
        per_s = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()))
        print(f"   run {r + 1}: acknowledged {took:.2f} s, visible on all {secs(seen)} ({per_s})")
    a, v = median(acks), median(vis)
    res.add(
        f"b. POST {n:,}: acknowledged",
        f"{a:.2f} s",
        f"<= {GOAL_POST_ACK_S:.0f} s",
        a <= GOAL_POST_ACK_S,
    )
    res.add(
        f"b. POST {n:,}: visible on all {cluster.n}",
        f"{v:.2f} s",
        f"<= {GOAL_POST_VISIBLE_S:.0f} s",
        v <= GOAL_POST_VISIBLE_S,
    )


async def new_cluster(
    children: Children, session: aiohttp.ClientSession, n: int, tag: str
) -> Cluster:
    cluster = Cluster(children, session, n, tag)
    took = await cluster.start()
    print(f"   ({n}-node cluster {tag} ready in {took:.1f} s)")
    return cluster


async def bench_apply(
    children: Children,
    session: aiohttp.ClientSession,
    farm: FarmProc,
    args: argparse.Namespace,
    res: Results,
) -> None:
    """Each repeat on a fresh 3-node cluster, so the apply adds n origins to an empty
    catalogue and "visible" is every node counting exactly n; after the last, the
    removal of those n by an apply of [] once they are in service."""
    n = args.apply_size
    acks: list[float] = []
    vis: list[float] = []
    removal = Results()
    print(f"c. PUT /v1/origins (apply) of {n:,} origins to n0 of a fresh 3-node cluster:")
    for r in range(args.repeats):
        cluster = await new_cluster(children, session, 3, f"apply{r}")
        node = cluster.nodes[0]
        try:
            ids = [f"apply-{r}-{i:06d}" for i in range(n)]
            body = [origin(farm, oid, i, args.interval) for i, oid in enumerate(ids)]
            t0 = time.perf_counter()
            took, status, answer = await write(session, "PUT", f"{node.api}/v1/origins", body)
            if endpoint_missing(status):
                res.missing("c. PUT /v1/origins", f"the agent answered {status}: no endpoint")
                return
            if status != 200 or not isinstance(answer, dict) or len(answer.get("added", ())) != n:
                raise HarnessError(f"PUT /v1/origins answered {status}: {str(answer)[:300]}")
            seen, per = await wait_visible(cluster, [ids[0], ids[-1]], lambda t: t == n, t0)
            misses = await read_back(cluster, ids)
            if misses:
                res.notes.append(f"apply run {r + 1}: ids not readable when visible: {misses[:5]}")
            acks.append(took)
            vis.append(seen)
            per_s = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()))
            print(
                f"   run {r + 1}: acknowledged {took:.2f} s, visible on all {secs(seen)} ({per_s})",
                flush=True,
            )
            if r == args.repeats - 1 and args.remove_deadline > 0:
                removal = Results()
                await bench_remove(cluster, n, args, removal)
            res.notes += cluster.problems()
        finally:
            cluster.stop()
    a, v = median(acks), median(vis)
    res.add(f"c. apply {n:,}: acknowledged", f"{a:.2f} s")
    res.add(
        f"c. apply {n:,}: visible on all 3",
        f"{v:.2f} s",
        f"<= {GOAL_APPLY_VISIBLE_S:.0f} s",
        v <= GOAL_APPLY_VISIBLE_S,
    )
    res.rows += removal.rows


async def bench_remove(cluster: Cluster, n: int, args: argparse.Namespace, res: Results) -> None:
    """An apply of [] removing n origins in service (every node counts them all up,
    or 90 s passed): until every node counts 0. No goal in the issue; shown because
    removal takes a different path from adding."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 90:
        cs = await asyncio.gather(*(counts(cluster.session, x) for x in cluster.nodes))
        if all(c is not None and c.get("up") == n for c in cs):
            break
        await asyncio.sleep(1)
    node = cluster.nodes[0]
    in_service = time.monotonic() - t0
    t1 = time.perf_counter()
    took, status, answer = await write(cluster.session, "PUT", f"{node.api}/v1/origins", [])
    if status != 200 or not isinstance(answer, dict):
        raise HarnessError(f"PUT /v1/origins [] answered {status}: {str(answer)[:300]}")
    seen, per = await wait_visible(cluster, [], lambda t: t == 0, t1, args.remove_deadline)
    per_s = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()))
    shown = f"{seen:.2f} s" if seen < float("inf") else f"> {args.remove_deadline:.0f} s"
    print(
        f"   remove: an apply of [] after {in_service:.0f} s in service: "
        f"acknowledged {took:.2f} s, every node at 0 {shown} ({per_s})",
        flush=True,
    )
    res.add(f"c. apply [] removing {n:,}: acknowledged", f"{took:.2f} s")
    res.add(f"c. apply [] removing {n:,}: gone on all 3", shown)


# --- d. SD wear: per-second batches vs the agent's group commit -----------------------------


#: the main commit before issue 17: its agent/shell/persistence.py is the "before" group commit
BEFORE_REV = "ea3698a0afae9a36dd05ec3cb021277e853c761c"


def load_persistence(rev: str | None) -> Any:
    """agent.shell.persistence as it is now (None), or as it was at git ``rev``."""
    if rev is None:
        from agent.shell import persistence

        return persistence
    import importlib.util

    src = subprocess.run(
        [
            "git",
            "-C",
            str(Path(__file__).resolve().parent.parent),
            "show",
            f"{rev}:agent/shell/persistence.py",
        ],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.NamedTemporaryFile(suffix=".py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("persistence_before", f.name)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    os.unlink(f.name)
    return mod


def groupcommit_worker(rev: str | None, directory: str, events_file: str) -> None:
    """Write the day's deltas through GroupCommit as the coordinator loop drives it.

    Virtual time: each delta arrives at its time; add() calls on_work when it finds the
    committer idle, which wakes the tick at once; the tick calls maybe_commit(now) and
    then sleeps until next_commit(). Without a running event loop GroupCommit runs each
    commit on its writer thread and waits for it, so a commit takes no virtual time."""
    from store import wchar

    from agent.node.state import State, decode_delta
    from agent.store import Store

    group_commit = load_persistence(rev).GroupCommit
    with open(events_file, "rb") as f:
        events = msgpack.unpackb(f.read())
    before = wchar()
    s = Store(directory)
    rec = s.recovered
    st = State.restore("n0", rec.state) if rec.state is not None else State("n0")
    for d in rec.deltas:
        st.apply(decode_delta(d))
    gc = group_commit(s, 1.0, publish=lambda d: None, copy_state=lambda: st.crdt.copy())
    woken = False

    def on_work() -> None:
        nonlocal woken
        woken = True

    gc.on_work = on_work
    inf = float("inf")
    tick_at = inf

    def run_ticks(until: float) -> None:
        nonlocal tick_at
        while tick_at <= until and tick_at < inf:
            now = tick_at
            gc.maybe_commit(now, {})
            nxt = gc.next_commit()
            tick_at = inf if nxt is None else max(nxt, now)

    for at, local, raw in events:
        run_ticks(at)
        delta = decode_delta(raw)
        st.apply(delta)
        woken = False
        gc.add([raw], delta if local else None)
        if woken:
            tick_at = min(tick_at, at)
    run_ticks(inf)  # the last commits
    gc.close({})
    written = wchar() - before
    extra = f"commits={s.stats.commits} snapshots={s.stats.snapshots}"
    print(f"RESULT bytes={written} {extra}", flush=True)


def bench_wear(args: argparse.Namespace, res: Results) -> None:
    import store

    setup, events = store.simulate_events(1000, 5, 0.01, args.seed)
    _, day = store.simulate(1000, 5, 0.01, args.seed)
    rng = random.Random(args.seed)
    timed = [list(e) for e in sorted((at + rng.random(), n == "n0", d) for at, n, d in events)]
    print(
        f"d. SD wear, bench/store.py's simulated day: {len(events)} deltas "
        f"({sum(1 for e in timed if e[1])} n0's own), {len(day)} one-second batches"
    )
    runs = [
        ("per-second batches (bench/store.py)", "store", day),
        (f"before: GroupCommit at {args.before_rev[:7]}", f"groupcommit@{args.before_rev}", timed),
        ("after: GroupCommit in this checkout", "groupcommit", timed),
    ]
    rows: dict[str, tuple[int, int, str]] = {}
    for label, kind, batches in runs:
        d = tempfile.mkdtemp(prefix="bench-api-wear-")
        try:
            store.run_worker("store", d, [[0, setup]], trace=False)
            script = store.__file__ if kind == "store" else __file__
            try:
                rows[label] = store.run_worker(kind, d, batches, trace=True, script=script)
            except subprocess.CalledProcessError as e:
                res.notes.append(f"wear: {label} failed: {(e.stderr or '').strip()[-300:]}")
        finally:
            shutil.rmtree(d)
    print(f"   {'':42}{'bytes/day':>12}{'fsyncs/day':>12}")
    for label, (b, f, x) in rows.items():
        print(f"   {label:42}{b:>12,}{f:>12,}   ({x})")
    after = rows.get(runs[2][0])
    if after is None:
        res.missing("d. SD wear", "the GroupCommit run failed")
        return
    ab, af, _ = after
    for label, _, _ in runs[:2]:
        if label not in rows:
            continue
        bb, bf, _ = rows[label]
        rb, rf = ab / bb, af / bf
        print(f"   after / {label}: bytes {rb:.3f}x, fsyncs {rf:.3f}x")
        short = "store.py" if "store.py" in label else "before"
        res.add(
            f"d. bytes/day {short} -> after", f"{bb:,} -> {ab:,} ({rb:.3f}x)", "no worse", ab <= bb
        )
        fsyncs = f"{bf:,} -> {af:,} ({rf:.3f}x)"
        if short == "store.py":  # whole seconds arrive at once there: shown, no goal
            res.add(f"d. fsyncs/day {short} -> after", fsyncs)
        else:
            res.add(f"d. fsyncs/day {short} -> after", fsyncs, "no worse", af <= bf)


# --- e. --scale -----------------------------------------------------------------------------


def secs(x: float) -> str:
    return f"{x:.2f} s" if x < float("inf") else f"> {VISIBLE_DEADLINE:.0f} s (not seen)"


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[float, int, int]:
    """(seconds, status, body bytes) of one GET, body read to the end."""
    t0 = time.perf_counter()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=REQUEST_LIMIT)) as r:
            n = 0
            async for chunk in r.content.iter_chunked(1 << 16):
                n += len(chunk)
            return time.perf_counter() - t0, r.status, n
    except TimeoutError:
        return time.perf_counter() - t0, 0, 0


async def bench_scale(
    cluster: Cluster, farm: FarmProc, args: argparse.Namespace, res: Results
) -> None:
    node = cluster.nodes[0]
    total = args.scale_origins
    chunk = 10_000
    interval = f"{args.scale_interval}s"
    print(
        f"e. --scale: {total:,} origins on {cluster.n} nodes, interval {interval}, POSTs of "
        f"{chunk:,}:"
    )
    last_vis = float("nan")
    vis_all: list[float] = []
    declared = 0
    began = time.monotonic()
    for k in range(0, total, chunk):
        if time.monotonic() - began > args.scale_budget:
            res.notes.append(
                f"scale: declaring took over --scale-budget {args.scale_budget:.0f} s; "
                f"stopped at {declared:,} origins"
            )
            break
        ids = [f"s{i:06d}" for i in range(k, min(total, k + chunk))]
        body = [origin(farm, oid, k + j, interval) for j, oid in enumerate(ids)]
        t0 = time.perf_counter()
        took, status, answer = await write(cluster.session, "POST", f"{node.api}/v1/origins", body)
        if endpoint_missing(status):
            res.missing("e. scale", f"the agent answered {status}: no batch endpoint")
            return
        if status != 200 or not isinstance(answer, dict):
            raise HarnessError(f"POST /v1/origins answered {status}: {str(answer)[:300]}")
        want = k + len(ids)
        last_vis, _ = await wait_visible(
            cluster, [ids[0], ids[-1]], lambda t, want=want: t >= want, t0
        )
        vis_all.append(last_vis)
        declared = want
        print(
            f"   POST {k // chunk + 1}: {want:,} origins, acknowledged {took:.2f} s, visible "
            f"on all {secs(last_vis)}",
            flush=True,
        )
        if last_vis == float("inf"):
            res.notes.append(
                f"scale: POST {k // chunk + 1} not visible on every node in "
                f"{VISIBLE_DEADLINE:.0f} s; stopped declaring at {want:,} origins"
            )
            break
    total = declared
    if last_vis < float("inf"):  # else the nodes are still busy: do not add to it
        misses = await read_back(cluster, [f"s{i:06d}" for i in range(total)], sample=3)
        if misses:
            res.notes.append(f"scale: ids not readable on every node: {misses[:5]}")
    res.add(
        f"e. last POST of {chunk:,} (to {total:,}): visible on all {cluster.n}",
        secs(last_vis),
        f"(c's {GOAL_APPLY_VISIBLE_S:.0f} s)",
        last_vis <= GOAL_APPLY_VISIBLE_S,
    )
    res.add(f"e. slowest POST of {chunk:,}: visible", secs(max(vis_all)))

    # every origin up on every node: the idle window then has no transitions (not waited
    # for when the last POST never became visible: the nodes are saturated, and the
    # figures below say how, now)
    t0 = time.monotonic()
    wait = args.up_deadline or args.scale_interval * 1.5 + 120
    deadline = t0 + (wait if last_vis < float("inf") else 0.0)
    print(
        f"   waiting for all {total:,} origins up on every node (at most "
        f"{deadline - t0:.0f} s) ...",
        flush=True,
    )
    while True:
        cluster.check_alive()
        cs = await asyncio.gather(*(counts(cluster.session, x) for x in cluster.nodes))
        if all(c is not None and c.get("up") == total for c in cs):
            print(f"   all up after {time.monotonic() - t0:.0f} s")
            break
        if time.monotonic() > deadline:
            res.notes.append(f"scale: not all origins up before the idle window: {cs}")
            break
        await asyncio.sleep(5)

    cpu0 = {x.name: cpu_seconds(x.pid) for x in cluster.nodes}
    w0 = time.monotonic()
    await asyncio.sleep(args.idle_seconds)
    cluster.check_alive()
    wall = time.monotonic() - w0
    cpu = [100 * (cpu_seconds(x.pid) - cpu0[x.name]) / wall for x in cluster.nodes]
    cs = await asyncio.gather(*(counts(cluster.session, x) for x in cluster.nodes))
    if not all(c is not None and c.get("up") == total for c in cs):
        res.notes.append(f"scale: not all up at the end of the idle window: {cs}")
    rss = [rss_mib(x.pid) for x in cluster.nodes]
    print("   idle CPU % of a core: " + ", ".join(f"{c:.1f}" for c in cpu))
    print("   VmRSS MiB: " + ", ".join(f"{r:.1f}" for r in rss))
    res.add(
        f"e. idle CPU per node ({args.idle_seconds:.0f} s)",
        f"median {median(cpu):.1f} %, max {max(cpu):.1f} %",
    )
    res.add("e. VmRSS per node", f"median {median(rss):.1f} MiB, max {max(rss):.1f} MiB")

    # the API at 100,000 origins
    api = node.api
    n_put = 0

    async def put_one() -> tuple[float, int, int]:
        nonlocal n_put
        n_put += 1
        oid = f"scale-put-{n_put}"
        took, status, _ = await write(
            cluster.session, "PUT", f"{api}/v1/origins/{oid}", origin(farm, oid, n_put, interval)
        )
        return took, status, 0

    mid = f"s{total // 2:06d}"
    requests: list[tuple[str, Callable[[], Any], bool]] = [
        ("GET /v1/health", lambda: timed_get(cluster.session, f"{api}/v1/health"), True),
        (
            f"GET /v1/origins/{mid}",
            lambda: timed_get(cluster.session, f"{api}/v1/origins/{mid}"),
            True,
        ),
        (
            "GET /v1/origins?limit=1000",
            lambda: timed_get(cluster.session, f"{api}/v1/origins?limit=1000"),
            True,
        ),
        (
            f"GET /v1/origins?limit=1000&after={mid}",
            lambda: timed_get(cluster.session, f"{api}/v1/origins?limit=1000&after={mid}"),
            True,
        ),
        ("PUT /v1/origins/{id}", put_one, True),
        ("GET /metrics", lambda: timed_get(cluster.session, f"{api}/metrics"), True),
        (
            "GET /v1/origins (all, streamed)",
            lambda: timed_get(cluster.session, f"{api}/v1/origins"),
            False,
        ),
    ]
    slowest = 0.0
    print(f"   API requests to {node.name} at {total:,} origins ({args.requests} each):")
    for name, call, goal in requests:
        took: list[float] = []
        size = 0
        for _ in range(args.requests):
            t, status, size = await call()
            if status == 0:
                res.notes.append(f"scale: {name} got no answer in {REQUEST_LIMIT:.0f} s")
            elif status not in (200, 201):
                raise HarnessError(f"{name} answered {status}")
            took.append(t)
        print(
            f"     {name:<44} median {median(took) * 1000:8.1f} ms, max "
            f"{max(took) * 1000:8.1f} ms, {size:,} bytes",
            flush=True,
        )
        if goal:
            slowest = max(slowest, max(took))
            res.add(
                f"e. {name}",
                f"max {max(took) * 1000:.0f} ms",
                f"<= {GOAL_REQUEST_S:.0f} s",
                max(took) <= GOAL_REQUEST_S,
            )
        else:
            res.add(f"e. {name}", f"max {max(took):.2f} s")
    res.add(
        "e. slowest API request (paged)",
        f"{slowest * 1000:.0f} ms",
        f"<= {GOAL_REQUEST_S:.0f} s",
        slowest <= GOAL_REQUEST_S,
    )


def snapshot_figures(cluster: Cluster, res: Results) -> None:
    """After the nodes stopped: the snapshot files they wrote, and an offline snapshot."""
    from agent.node.state import State, decode_delta, encode_delta
    from agent.store import Store

    sizes = []
    for x in cluster.nodes:
        snaps = sorted(x.store_dir.glob("snap-*.snap"))
        if snaps:
            sizes.append(snaps[-1].stat().st_size)
    if sizes:
        res.add(
            "e. snapshot file (newest, per node)",
            f"median {median(sizes) / 1e6:.1f} MB ({len(sizes)}/{cluster.n} nodes had one)",
        )
    else:
        res.notes.append("scale: no node had written a snapshot file by shutdown")
    node = cluster.nodes[0]
    with tempfile.TemporaryDirectory(prefix="bench-api-snap-") as tmp:
        copy = Path(tmp) / "store"
        shutil.copytree(node.store_dir, copy)
        t0 = time.perf_counter()
        s = Store(copy)
        rec = s.recovered
        st = State.restore("n0", rec.state) if rec.state is not None else State("n0")
        for d in rec.deltas:
            st.apply(decode_delta(d))
        t_open = time.perf_counter() - t0
        t0 = time.perf_counter()
        snap = st.crdt.copy()
        t_copy = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw = encode_delta(snap)
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        ok = s.snapshot(raw)
        t_write = time.perf_counter() - t0
        s.close()
        written = sorted(copy.glob("snap-*.snap"))
        size = written[-1].stat().st_size if written else 0
    if not ok:
        raise HarnessError("the offline snapshot failed")
    print(
        f"   offline, {node.name}'s store ({len(st.catalogue()):,} origins; opened and "
        f"restored in {t_open:.2f} s): snapshot {size:,} bytes; copy {t_copy * 1000:.0f} ms "
        f"(on the loop), encode {t_enc * 1000:.0f} ms + write {t_write * 1000:.0f} ms "
        f"(writer thread)"
    )
    res.add("e. snapshot size (offline, n0)", f"{size / 1e6:.1f} MB")
    res.add(
        "e. snapshot time (offline: copy+encode+write)",
        f"{(t_copy + t_enc + t_write) * 1000:.0f} ms (loop part {t_copy * 1000:.0f} ms)",
    )


# --- main -----------------------------------------------------------------------------------


def print_table(res: Results) -> None:
    print()
    w = max(len(r[0]) for r in res.rows) + 2
    v = max(len(r[1]) for r in res.rows) + 2
    print(f"{'figure':<{w}}{'value':<{v}}{'goal':<12}result")
    for fig, val, goal, ok in res.rows:
        print(f"{fig:<{w}}{val:<{v}}{goal:<12}{ok}")
    for n in res.notes:
        print(f"note: {n}")
    print("Taken on this machine; its cores are shared by every node, the farm and the bench.")


async def run(args: argparse.Namespace) -> int:
    cancel_on_signals()
    compile_agent()
    res = Results()
    method = __doc__.split("Everything runs", 1)[1]
    print("Method: everything runs" + method.rstrip())
    print()
    if not args.scale and not args.skip_wear:
        bench_wear(args, res)
    if args.wear_only:
        print_table(res)
        return 1 if res.unmeasured else 0
    n = args.scale_nodes if args.scale else 3
    with Children() as children:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            farm = await start_farm(children, count=FARM_ORIGINS, processes=1)
            print(f"origin farm on port {farm.port}")
            cluster = await new_cluster(children, session, n, "scale" if args.scale else "ab")
            try:
                if args.scale:
                    await bench_scale(cluster, farm, args, res)
                else:
                    await bench_put(cluster, farm, args, res)
                    await bench_post(cluster, farm, args, res)
                res.notes += cluster.problems()
            finally:
                codes = cluster.stop()
            bad = {k: v for k, v in codes.items() if v != 0}
            if bad:
                res.notes.append(f"nodes that did not exit 0 on SIGTERM: {bad}")
            if args.scale and not res.unmeasured:
                snapshot_figures(cluster, res)
            if not args.scale:
                await bench_apply(children, session, farm, args, res)
    print_table(res)
    for u in res.unmeasured:
        print(f"could not measure: {u}", file=sys.stderr)
    return 1 if res.unmeasured else 0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, _, rev = sys.argv[2].partition("@")
        if kind != "groupcommit":
            sys.exit(f"unknown worker {sys.argv[2]!r}")
        groupcommit_worker(rev or None, sys.argv[3], sys.argv[4])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--puts", type=int, default=200, help="sequential PUTs per run (a)")
    p.add_argument("--repeats", type=int, default=3, help="runs of a, b and c (medians)")
    p.add_argument("--post-size", type=int, default=1000, help="origins in the POST (b)")
    p.add_argument("--apply-size", type=int, default=10_000, help="origins in the apply (c)")
    p.add_argument(
        "--remove-deadline", type=float, default=300.0, help="s; 0: skip c's removal figure"
    )
    p.add_argument("--interval", default="60s", help="check interval of a..c's origins")
    p.add_argument("--seed", type=int, default=1, help="the wear simulation's seed (d)")
    p.add_argument("--before-rev", default=BEFORE_REV, help="d's 'before' group commit")
    p.add_argument("--skip-wear", action="store_true", help="leave out d")
    p.add_argument("--wear-only", action="store_true", help="only d (no agents)")
    p.add_argument("--scale", action="store_true", help="run e instead of a..d")
    p.add_argument("--scale-nodes", type=int, default=5)
    p.add_argument("--scale-origins", type=int, default=100_000)
    p.add_argument("--scale-interval", type=int, default=300, help="seconds (e)")
    p.add_argument("--scale-budget", type=float, default=900.0, help="s to declare in (e)")
    p.add_argument("--up-deadline", type=float, default=0.0, help="s (e; 0: 1.5 intervals)")
    p.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU window (e)")
    p.add_argument("--requests", type=int, default=5, help="repeats of each API request (e)")
    args = p.parse_args()
    if shutil.which("strace") is None and not args.scale and not args.skip_wear:
        sys.exit("bench/api.py needs strace to count fsyncs (or --skip-wear)")
    sys.exit(run_async_main(run(args)))


if __name__ == "__main__":
    main()
