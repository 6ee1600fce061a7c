"""A Pi-class budget (issue 21 item 5): a 10-node cluster, each node in its own cgroup.

    python bench/budget.py [--nodes 10] [--origins 2000] [--interval 10] [--minutes 10]
                           [--cpu 0.10] [--memory-mib 96] [--json FILE] [--no-probe]

N `edge-agent run` processes from this checkout on 127.0.0.1, each started inside a
cgroup of its own (harness/edge_harness/cgroups.py: CPU quota --cpu of one core, 10 ms
per 100 ms period at 0.10; memory capped at --memory-mib, no swap), as production runs
them: gossip encrypted (one keyring), the default log level (info), LEDs on gpiozero's
mock pins, the fleet token, and under a systemd-style watchdog: `$NOTIFY_SOCKET` is a
datagram socket this script reads (READY=1, WATCHDOG=1) and `$WATCHDOG_USEC` is the
unit's `WatchdogSec` (systemd/edge-agent.service), so each node pings every half of it.
mDNS is off (`discover = false`, every node joins node 0): loopback carries no multicast.

Once every node lists all N alive, --origins origins of a real origin farm
(`python -m edge_harness.farm`, outside the cgroups) are declared by one
`POST /v1/origins` to node 0, checked every --interval s by their 2 owners (the default
replicas); the window starts once every node counts them all up, and lasts --minutes.
Over the window:

* false suspicions: `member X: suspect` / `member X: dead` lines the nodes log at info
  for a member (every process stays alive, so each one is false), with the accusations
  (`suspect X has failed, no acks received`) and refutations (`refuting ...`) beside;
* missed check deadlines: `edge_agent_checks_late_total` (probes started more than one
  interval after they were due), and the start-lag histogram;
* watchdog margin: the largest event-loop stall, from bench/_stall_probe.py loaded into
  every node (how late any timer ran, and the longest pass of callbacks, with its
  cause), against half the watchdog period (a stall that long can delay the ping past
  WatchdogSec); and the largest gap between WATCHDOG=1 pings received, against
  WatchdogSec itself;
* memory: each cgroup's high-water mark (memory.max_usage_in_bytes / memory.peak, the
  whole run, start-up included), the limit hits and OOM kills, VmHWM beside it;
* CPU % of one core per node (utime + stime), throttled periods, checks/s per node;
  the host's other load (CPU used by anything but the nodes, the farm and this script),
  which makes a run suspect when it is high.

Then the verdict on each criterion. Exits 1 only when it could not measure (a node did
not start, an endpoint failed); a node killed by the kernel ends the window early and
fails the memory criterion.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
sys.path.insert(2, str(Path(__file__).resolve().parent.parent / "harness"))

from _common import cancel_on_signals, compile_agent, host_jiffies, run_async_main
from _procs import (
    LOOPBACK,
    MIB,
    REPO,
    HarnessError,
    ProcSet,
    cpu_seconds,
    free_ports,
    scan_log,
    status_kib,
    tail,
    tcp_listening,
)

from edge_harness.cgroups import Cgroups, CpuStat, Group, Limits
from edge_harness.cgroups import missing_prerequisites as cgroup_missing

BENCH = REPO / "bench"
UNIT = REPO / "systemd" / "edge-agent.service"
TOKEN = "budget-bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AGENT_CODE = (
    "import sys\n"
    "if sys.argv[2] == 'probe':\n"
    "    import _stall_probe\n"
    "from agent.shell.cli import main\n"
    "sys.exit(main(['run', '--config', sys.argv[1]]))\n"
)
SUSPECT_RE = re.compile(r"member (\S+): (suspect|dead)\b")
ACCUSE_RE = re.compile(r"suspect (\S+) has failed, no acks received")
REFUTE_RE = re.compile(r"refuting an? (\w+) message")


def watchdog_sec() -> float:
    """The unit's WatchdogSec (what systemd would give the agent as $WATCHDOG_USEC)."""
    m = re.search(r"^WatchdogSec=(\d+)(s|min)?\s*$", UNIT.read_text(), re.M)
    if not m:
        raise HarnessError(f"no WatchdogSec= in {UNIT}")
    return float(m[1]) * (60 if m[2] == "min" else 1)


# --- one node -------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    api_port: int
    gossip_port: int
    dir: Path
    group: Group
    proc: Any = None
    notify: socket.socket | None = None
    notes: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, message)

    @property
    def api(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def probe_out(self) -> Path:
        return self.dir / "stalls.json"

    def pings(self) -> list[float]:
        return [t for t, msg in self.notes if "WATCHDOG=1" in msg.split("\n")]

    def ready_at(self) -> float | None:
        return next((t for t, msg in self.notes if "READY=1" in msg.split("\n")), None)


def write_config(node: Node, seed: Node | None, work: Path) -> Path:
    lines = [
        "[node]",
        f'name = "{node.name}"',
        f'data_dir = "{node.dir / "data"}"',
        "[cluster]",
        f'bind = "{LOOPBACK}:{node.gossip_port}"',
        f'advertise = "{LOOPBACK}:{node.gossip_port}"',
        "discover = false",
        f'keyring_file = "{work / "keyring"}"',
    ]
    if seed is not None:
        lines.append(f'join = ["{LOOPBACK}:{seed.gossip_port}"]')
    lines += [
        "[api]",
        f'listen = "{LOOPBACK}:{node.api_port}"',
        f'token_file = "{work / "token"}"',
        f'socket = "{node.dir / "api.sock"}"',
    ]
    cfg = node.dir / "agent.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def open_notify(node: Node) -> None:
    """The node's $NOTIFY_SOCKET: every datagram it sends is noted with its arrival time."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(node.dir / "notify.sock"))
    sock.setblocking(False)
    node.notify = sock

    def readable() -> None:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            node.notes.append((time.monotonic(), data.decode(errors="replace")))

    asyncio.get_running_loop().add_reader(sock.fileno(), readable)


# --- the cluster ----------------------------------------------------------------------------


@dataclass
class Cluster:
    args: argparse.Namespace
    work: Path
    procs: ProcSet
    cgroups: Cgroups
    session: aiohttp.ClientSession
    nodes: list[Node] = field(default_factory=list)

    def make_nodes(self) -> None:
        ports = free_ports(2 * self.args.nodes)
        limits = Limits(cpu=self.args.cpu, memory=int(self.args.memory_mib * MIB))
        for i in range(self.args.nodes):
            d = self.work / f"b{i}"
            d.mkdir()
            group = self.cgroups.add(f"b{i}", limits)
            self.nodes.append(Node(f"b{i}", ports[2 * i], ports[2 * i + 1], d, group))

    def spawn(self, node: Node, watchdog_usec: int) -> None:
        cfg = write_config(node, None if node is self.nodes[0] else self.nodes[0], self.work)
        open_notify(node)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(BENCH), str(REPO)]),
            "NOTIFY_SOCKET": str(node.dir / "notify.sock"),
            "WATCHDOG_USEC": str(watchdog_usec),
            "EA_STALL_OUT": str(node.probe_out),
        }
        env.pop("WATCHDOG_PID", None)
        argv = [sys.executable, "-c", AGENT_CODE, str(cfg)]
        argv.append("none" if self.args.no_probe else "probe")
        with open(node.log, "ab") as logf:
            node.proc = subprocess.Popen(
                node.group.wrap(argv),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                cwd=REPO,
                env=env,
                start_new_session=True,
            )
        self.procs.procs.append(node.proc)

    def dead(self) -> list[tuple[Node, int]]:
        return [(n, n.proc.returncode) for n in self.nodes if n.proc and n.proc.poll() is not None]

    def check_alive(self, what: str) -> None:
        gone = self.dead()
        if gone:
            n, code = gone[0]
            raise HarnessError(
                f"{n.name} exited with code {code} {what} "
                f"(OOM kills in its cgroup: {n.group.memory_events()[1]}):\n{tail(n.log)}"
            )

    async def get_json(self, node: Node, path: str, timeout: float = 10.0) -> Any:
        async with self.session.get(
            node.api + path, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            if r.status != 200:
                raise HarnessError(f"{node.name}: GET {path} answered {r.status}")
            return await r.json()

    async def poll(self, node: Node, path: str) -> Any:
        try:
            return await self.get_json(node, path)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, HarnessError):
            return None

    async def wait_all(self, what: str, deadline_s: float, ok: Any, every: float = 0.5) -> float:
        """Poll until ok(node) holds on every node at once; the seconds it took."""
        t0 = time.monotonic()
        while True:
            self.check_alive(f"while waiting for {what}")
            results = await asyncio.gather(*(ok(n) for n in self.nodes))
            if all(results):
                return time.monotonic() - t0
            if time.monotonic() - t0 > deadline_s:
                bad = [n.name for n, r in zip(self.nodes, results, strict=True) if not r]
                raise HarnessError(f"{what}: not reached in {deadline_s:.0f} s on {bad}")
            await asyncio.sleep(every)

    async def all_alive(self, node: Node) -> bool:
        members = await self.poll(node, "/v1/members")
        if members is None:
            return False
        states = {m["name"]: m["state"] for m in members}
        return all(states.get(n.name) == "alive" for n in self.nodes)

    async def all_up(self, node: Node) -> bool:
        health = await self.poll(node, "/v1/health")
        return health is not None and health.get("origins", {}).get("up") == self.args.origins

    async def declare(self, farm_port: int) -> float:
        body = [
            {
                "id": f"o{i}",
                "url": f"http://{LOOPBACK}:{farm_port}/o/{i}",
                "interval": f"{self.args.interval:g}s",
            }
            for i in range(self.args.origins)
        ]
        t0 = time.monotonic()
        async with self.session.post(
            self.nodes[0].api + "/v1/origins",
            json=body,
            headers=AUTH,
            timeout=aiohttp.ClientTimeout(total=300),
        ) as r:
            text = await r.text()
            if r.status not in (200, 201):
                raise HarnessError(f"POST /v1/origins answered {r.status}: {text[:300]}")
        return time.monotonic() - t0


# --- readings -------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", re.M)


async def scrape(cluster: Cluster, node: Node) -> dict[str, float]:
    """The few /metrics samples the verdict needs, summed over their labels but `le`."""
    async with cluster.session.get(
        node.api + "/metrics", timeout=aiohttp.ClientTimeout(total=30)
    ) as r:
        if r.status != 200:
            raise HarnessError(f"{node.name}: GET /metrics answered {r.status}")
        text = await r.text()
    out: defaultdict[str, float] = defaultdict(float)
    for m in _SAMPLE.finditer(text):
        name, labels, value = m[1], m[2] or "", m[3]
        if name == "edge_agent_checks_total":
            result = re.search(r'result="(\w+)"', labels)
            out[f"checks_{result[1] if result else '?'}"] += float(value)
        elif name == "edge_agent_checks_late_total":
            out["late"] += float(value)
        elif name == "edge_agent_check_start_lag_seconds_bucket":
            le = re.search(r'le="([^"]+)"', labels)
            out[f"lag_le_{le[1] if le else '?'}"] += float(value)
        elif name == "edge_agent_check_start_lag_seconds_count":
            out["lag_count"] += float(value)
    if "edge_agent_checks_late" not in text:
        raise HarnessError(f"{node.name}: /metrics has no edge_agent_checks_late_total")
    return dict(out)


@dataclass
class Snapshot:
    wall: float  # time.time()
    mono: float
    cpu: list[float]
    cpu_stat: list[CpuStat]
    log_offset: list[int]
    majflt: list[int]  # major page faults (a page read back from disk: memory pressure)
    metrics: list[dict[str, float]]
    host: tuple[int, int, int]
    others_cpu: float  # the farm's processes and this script
    load: tuple[float, float, float]


async def snapshot(cluster: Cluster, farm_pids: list[int]) -> Snapshot:
    metrics = list(await asyncio.gather(*(scrape(cluster, n) for n in cluster.nodes)))
    t = os.times()
    return Snapshot(
        wall=time.time(),
        mono=time.monotonic(),
        cpu=[cpu_seconds(n.proc.pid) for n in cluster.nodes],
        cpu_stat=[n.group.cpu_stat() for n in cluster.nodes],
        log_offset=[n.log.stat().st_size for n in cluster.nodes],
        majflt=[_majflt(n.proc.pid) for n in cluster.nodes],
        metrics=metrics,
        host=host_jiffies(),
        others_cpu=sum(_cpu_or_zero(p) for p in farm_pids) + t.user + t.system,
        load=os.getloadavg(),
    )


def _majflt(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[9])  # field 12 of stat(5)
    except OSError:
        return 0


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def log_events(path: Path, start: int, end: int | None) -> dict[str, Any]:
    with open(path, "rb") as f:
        f.seek(start)
        text = (f.read() if end is None else f.read(end - start)).decode(errors="replace")
    suspicions: Counter[str] = Counter()
    accusations = refutes = 0
    lines: list[str] = []
    for line in text.splitlines():
        m = SUSPECT_RE.search(line)
        if m:
            suspicions[f"{m[1]} {m[2]}"] += 1
            lines.append(line.strip())
        if ACCUSE_RE.search(line):
            accusations += 1
            lines.append(line.strip())
        if REFUTE_RE.search(line):
            refutes += 1
            lines.append(line.strip())
    return {
        "suspicions": sum(suspicions.values()),
        "by_member": dict(suspicions),
        "accusations": accusations,
        "refutes": refutes,
        "lines": lines[:20],
    }


def window_stalls(path: Path, t0: float, t1: float) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    lo, hi = int(t0), int(t1)  # whole seconds: the last, partly after the window, is left out

    def largest(by_second: dict[str, float]) -> float:
        return max((v for k, v in by_second.items() if lo <= int(k) < hi), default=0.0)

    inside = [s for s in data["stalls"] if t0 <= s["t"] <= t1]
    inside.sort(key=lambda s: -s["s"])
    return {
        "late_max_s": largest(data["late_by_second"]),
        "busy_max_s": largest(data["busy_by_second"]),
        "over_record": len(inside),
        "record_s": data["record_s"],
        "top": inside[:5],
        "whole_run_late_max_s": max(data["late_by_second"].values(), default=0.0),
    }


def max_ping_gap(pings: list[float], t0: float, t1: float) -> float:
    """The longest time without a WATCHDOG=1 over [t0, t1] (edges from the pings around)."""
    before = [p for p in pings if p < t0]
    inside = [p for p in pings if t0 <= p <= t1]
    seq = ([before[-1]] if before else [t0]) + inside
    gaps = [b - a for a, b in itertools.pairwise(seq)]
    gaps.append(t1 - seq[-1])  # still waiting at the end counts too
    return max(gaps)


# --- the run --------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{x:.2f} %"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wd = watchdog_sec()
    half = wd / 2
    res: dict[str, Any] = {
        "nodes": args.nodes,
        "origins": args.origins,
        "interval_s": args.interval,
        "minutes": args.minutes,
        "cpu_limit": args.cpu,
        "memory_limit_mib": args.memory_mib,
        "watchdog_sec": wd,
        "notes": [],
    }
    print(
        f"budget: {args.nodes} nodes, each in its own cgroup (CPU {args.cpu:.0%} of one core, "
        f"memory {args.memory_mib:g} MiB), {args.origins:,} origins every {args.interval:g} s "
        f"(2 owners each), {args.minutes:g} min window; encrypted, log level info, watchdog "
        f"WatchdogSec={wd:g}s (pings every {half:g} s)",
        flush=True,
    )
    compile_agent()
    with contextlib.ExitStack() as stack:
        cgroups = stack.enter_context(Cgroups("edge-budget-"))
        procs = stack.enter_context(ProcSet())
        cancel_on_signals()  # after ProcSet's own SIGTERM handler: cancel, then unwind
        if args.workdir is not None:
            args.workdir.mkdir(parents=True)
            work = args.workdir.resolve()
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-budget-")))
        (work / "keyring").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
        (work / "token").write_text(TOKEN + "\n")
        (work / "token").chmod(0o600)
        res["cgroups"] = f"v{cgroups.version}: {', '.join(map(str, cgroups.parents.values()))}"
        res["cgroup_parents"] = sorted({str(d) for d in cgroups.parents.values()})
        print(f"cgroups {res['cgroups']}", flush=True)

        # the origin farm, outside the cgroups
        farm_log = work / "farm.log"
        farm_argv = [sys.executable, "-m", "edge_harness.farm", "--host", LOOPBACK]
        farm_argv += ["--count", str(args.origins), "--processes", str(args.farm_processes)]
        farm = procs.start(farm_argv, farm_log)
        deadline = time.monotonic() + 60
        while not (m := re.search(r"port=(\d+) processes=\d+ pids=([\d,]+)", _read(farm_log))):
            if farm.poll() is not None or time.monotonic() > deadline:
                raise HarnessError(f"the farm did not start:\n{tail(farm_log)}")
            await asyncio.sleep(0.1)
        farm_port, farm_pids = int(m[1]), [int(x) for x in m[2].split(",")]

        async with aiohttp.ClientSession() as session:
            cluster = Cluster(args, work, procs, cgroups, session)
            try:
                await measure(cluster, farm_port, farm_pids, wd, res)
            finally:
                # SIGTERM: each node's probe writes its figures as it exits. On a thread, so
                # the loop goes on reading the notify sockets: a node whose datagram queue
                # is full (10 by default) blocks in its sd_notify send, as it would if
                # systemd stopped reading.
                t_stop = time.monotonic()
                live = [n.proc for n in cluster.nodes if n.proc is not None]
                await asyncio.shield(asyncio.to_thread(procs.stop_many, live, 60))
                res["stop_s"] = time.monotonic() - t_stop
                res["exit_codes"] = [n.proc.returncode for n in cluster.nodes if n.proc]
                print(f"nodes stopped in {res['stop_s']:.1f} s, exit codes {res['exit_codes']}")
                for n in cluster.nodes:
                    if n.notify is not None:
                        asyncio.get_running_loop().remove_reader(n.notify.fileno())
                        n.notify.close()
            finish(cluster, res, half)
    return res


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


async def measure(
    cluster: Cluster, farm_port: int, farm_pids: list[int], wd: float, res: dict[str, Any]
) -> None:
    args = cluster.args
    cluster.make_nodes()
    nodes = cluster.nodes
    t_start = time.monotonic()
    cluster.spawn(nodes[0], round(wd * 1e6))
    while not tcp_listening(nodes[0].gossip_port):
        cluster.check_alive("before its gossip port listened")
        if time.monotonic() - t_start > 120:
            raise HarnessError(f"{nodes[0].name} did not listen in 120 s:\n{tail(nodes[0].log)}")
        await asyncio.sleep(0.05)
    for n in nodes[1:]:
        cluster.spawn(n, round(wd * 1e6))
    await cluster.wait_all("every node lists all alive", 300, cluster.all_alive)
    res["converged_s"] = time.monotonic() - t_start
    res["ready_s"] = [None if (r := n.ready_at()) is None else r - t_start for n in nodes]
    print(f"converged {res['converged_s']:.1f} s after node 0's exec", flush=True)
    took = await cluster.declare(farm_port)
    print(
        f"declared {args.origins:,} origins in {took:.1f} s (POST to {nodes[0].name})", flush=True
    )
    res["declare_s"] = took
    try:
        up = await cluster.wait_all(
            f"every node counting {args.origins} origins up",
            args.settle_deadline,
            cluster.all_up,
            every=2.0,
        )
        res["all_up_s"] = up
        print(f"all {args.origins:,} up on every node {up:.1f} s later", flush=True)
    except HarnessError as e:  # a finding, not a failure to measure: the window says why
        res["all_up_s"] = None
        healths = await asyncio.gather(*(cluster.poll(n, "/v1/health") for n in nodes))
        counts = [(h or {}).get("origins", {}) for h in healths]
        res["notes"].append(
            f"not every origin was up on every node {args.settle_deadline:g} s after the "
            f"declaration; the window started anyway (fleet counts per node: "
            + "; ".join(
                f"{n.name} {c.get('up', '?')} up {c.get('unknown', '?')} unknown "
                f"{c.get('disputed', '?')} disputed"
                for n, c in zip(nodes, counts, strict=True)
            )
            + ")"
        )
        print(f"{e}: starting the window anyway", flush=True)
    for n in nodes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(n.proc.pid, signal.SIGUSR2)  # the probe keeps the window's stalls
    print(f"window of {args.minutes:g} min", flush=True)
    res["setup_log"] = [log_events(n.log, 0, None) for n in nodes]

    s0 = await snapshot(cluster, farm_pids)
    end = s0.mono + args.minutes * 60
    died: list[tuple[Node, int]] = []
    next_report = s0.mono + 60
    while time.monotonic() < end:
        died = cluster.dead()
        if died:
            break
        now = time.monotonic()
        if now >= next_report:
            print(f"  {int((now - s0.mono) // 60)} min: load {os.getloadavg()[0]:.2f}", flush=True)
            next_report += 60
        await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))  # the window itself
    res["died"] = [
        {"node": n.name, "code": code, "oom_kills": n.group.memory_events()[1]} for n, code in died
    ]
    if died:
        alive = [n for n in nodes if n.proc.poll() is None]
        res["notes"].append(
            "window ended early: " + ", ".join(f"{n.name} exited ({c})" for n, c in died)
        )
        s1_metrics: list[dict[str, float]] = []
        for n in nodes:
            s1_metrics.append(await scrape(cluster, n) if n in alive else {})
        s1 = Snapshot(
            time.time(),
            time.monotonic(),
            [_cpu_or_zero(n.proc.pid) for n in nodes],
            [n.group.cpu_stat() for n in nodes],
            [n.log.stat().st_size for n in nodes],
            [_majflt(n.proc.pid) for n in nodes],
            s1_metrics,
            host_jiffies(),
            sum(_cpu_or_zero(p) for p in farm_pids) + sum(os.times()[:2]),
            os.getloadavg(),
        )
    else:
        s1 = await snapshot(cluster, farm_pids)
    views = await asyncio.gather(*(cluster.poll(n, "/v1/members") for n in nodes))
    res["final_views_alive"] = [
        v is not None and all(m["state"] == "alive" for m in v) and len(v) == len(nodes)
        for v in views
    ]
    cluster_state(cluster, res, s0, s1)


def cluster_state(cluster: Cluster, res: dict[str, Any], s0: Snapshot, s1: Snapshot) -> None:
    """Everything read from the kernel and the logs while the groups still exist."""
    wall = s1.mono - s0.mono
    res["window_s"] = wall
    per: list[dict[str, Any]] = []
    node_cpu_total = 0.0
    for i, n in enumerate(cluster.nodes):
        m0, m1 = s0.metrics[i], s1.metrics[i]

        def d(key: str, m0: dict[str, float] = m0, m1: dict[str, float] = m1) -> float:
            return m1.get(key, 0.0) - m0.get(key, 0.0)

        cpu = s1.cpu[i] - s0.cpu[i]
        node_cpu_total += cpu
        st0, st1 = s0.cpu_stat[i], s1.cpu_stat[i]
        peak = n.group.memory_peak()
        hits, ooms = n.group.memory_events()
        stat = n.group.memory_stat()
        try:
            hwm = status_kib(n.proc.pid).get("VmHWM", 0) / 1024
        except OSError:
            hwm = float("nan")
        lag_n = d("lag_count")
        per.append(
            {
                "node": n.name,
                "cpu_pct": 100 * cpu / wall,
                "throttled_periods_pct": 100
                * (st1.throttled - st0.throttled)
                / max(1, st1.periods - st0.periods),
                "throttled_s": st1.throttled_s - st0.throttled_s,
                "major_faults": s1.majflt[i] - s0.majflt[i],
                "checks": d("checks_ok") + d("checks_fail"),
                "checks_per_s": (d("checks_ok") + d("checks_fail")) / wall,
                "failed": d("checks_fail"),
                "stalled": d("checks_stalled"),
                "late": d("late"),
                "lag_over_1s": lag_n - d("lag_le_1.0"),
                "lag_over_5s": lag_n - d("lag_le_5.0"),
                "memory_peak_mib": None if peak is None else peak / MIB,
                "memory_now_mib": n.group.memory_current() / MIB,
                "anon_mib": stat.get("anon", stat.get("rss", 0)) / MIB,
                "file_mib": stat.get("file", stat.get("cache", 0)) / MIB,
                "vm_hwm_mib": hwm,
                "limit_hits": hits,
                "oom_kills": ooms,
                "events": log_events(n.log, s0.log_offset[i], s1.log_offset[i]),
                "ping_gap_s": max_ping_gap(n.pings(), s0.mono, s1.mono),
                "problems": [h.splitlines()[0][:200] for h in scan_log(n.log, ("Traceback",))],
            }
        )
    jiffies = s1.host[2] - s0.host[2]
    busy = (s1.host[0] - s0.host[0]) / max(1, jiffies)
    cores = os.cpu_count() or 1
    ours = node_cpu_total + (s1.others_cpu - s0.others_cpu)
    res["host"] = {
        "busy_pct": 100 * busy,
        "ours_pct_of_host": 100 * ours / wall / cores,
        "other_pct_of_host": max(0.0, 100 * busy - 100 * ours / wall / cores),
        "load_start": s0.load,
        "load_end": s1.load,
    }
    res["per_node"] = per
    res["window"] = (s0.wall, s1.wall)


def finish(cluster: Cluster, res: dict[str, Any], half: float) -> None:
    """After the nodes stopped: their probes' figures, then the table and the verdict."""
    if "per_node" not in res:
        return
    t0, t1 = res["window"]
    for n, row in zip(cluster.nodes, res["per_node"], strict=True):
        row["stalls"] = window_stalls(n.probe_out, t0, t1)
    report(res, half)


def report(res: dict[str, Any], half: float) -> None:
    per = res["per_node"]
    wd = res["watchdog_sec"]
    print(f"\nwindow {res['window_s']:.0f} s; per node:")
    hdr = (
        "node   CPU%   thr%  checks/s  late  lag>1s  late-timer  busy-pass  ping-gap  "
        "peak MiB  VmHWM  anon  file  hits  OOM  majflt  susp"
    )
    print(hdr)
    for r in per:
        st = r["stalls"] or {}
        peak = r["memory_peak_mib"]
        late_t = st.get("late_max_s", float("nan"))
        busy_t = st.get("busy_max_s", float("nan"))
        print(
            f"{r['node']:<5} {r['cpu_pct']:5.2f} {r['throttled_periods_pct']:6.1f} "
            f"{r['checks_per_s']:8.1f} {r['late']:5.0f} {r['lag_over_1s']:7.0f} "
            f"{late_t:9.3f}s {busy_t:9.3f}s "
            f"{r['ping_gap_s']:8.1f}s {'n/a' if peak is None else f'{peak:8.1f}'} "
            f"{r['vm_hwm_mib']:6.1f} {r['anon_mib']:5.1f} {r['file_mib']:5.1f} "
            f"{r['limit_hits']:5d} {r['oom_kills']:4d} {r['major_faults']:7d} "
            f"{r['events']['suspicions']:5d}"
        )
    susp = sum(r["events"]["suspicions"] for r in per)
    accus = sum(r["events"]["accusations"] for r in per)
    refutes = sum(r["events"]["refutes"] for r in per)
    late = sum(r["late"] for r in per)
    checks = sum(r["checks"] for r in per)
    stalls = [r["stalls"] for r in per]
    have_stalls = all(s is not None for s in stalls)
    stall_max = max((max(s["late_max_s"], s["busy_max_s"]) for s in stalls if s), default=0.0)
    gap_max = max(r["ping_gap_s"] for r in per)
    peaks = [
        r["memory_peak_mib"] if r["memory_peak_mib"] is not None else r["vm_hwm_mib"] for r in per
    ]
    ooms = sum(r["oom_kills"] for r in per) + len(res["died"])
    cap = res["memory_limit_mib"]
    setup = res.get("setup_log", [])
    h = res["host"]
    print(
        f"\nchecks in the window: {checks:,.0f} ({checks / res['window_s']:.0f}/s over the "
        f"fleet; failed {sum(r['failed'] for r in per):.0f}, stalled "
        f"{sum(r['stalled'] for r in per):.0f}, started over 1 s late "
        f"{sum(r['lag_over_1s'] for r in per):.0f})"
    )
    print(
        f"member events in the window: {susp} suspect/dead, {accus} accusations, "
        f"{refutes} refutations; during start-up and declaration: "
        f"{sum(x['suspicions'] for x in setup)} suspect/dead, "
        f"{sum(x['accusations'] for x in setup)} accusations"
    )
    for r in per:
        for line in r["events"]["lines"][:3]:
            print(f"  {r['node']}: {line[:160]}")
    worst = sorted(
        (s for r in per for s in ((r["stalls"] or {}).get("top") or [])), key=lambda s: -s["s"]
    )[:5]
    if worst:
        record = next((s["record_s"] for s in stalls if s), "?")
        print(f"longest stalls in the window (over {record} s):")
        for s in worst:
            print(f"  {s['s'] * 1000:7.0f} ms {s['kind']:<4} {s['cause'][:150]}")
    print(
        f"host: {h['busy_pct']:.1f} % of its {os.cpu_count()} cores busy, of which ours "
        f"(nodes, farm, bench) {h['ours_pct_of_host']:.1f} %, other "
        f"{h['other_pct_of_host']:.1f} %; "
        f"load {h['load_start'][0]:.2f} -> {h['load_end'][0]:.2f}"
    )
    if h["other_pct_of_host"] > 25:
        res["notes"].append(
            f"other processes used {h['other_pct_of_host']:.0f} % of the host during the window: "
            "the figures may be contaminated by load"
        )
    for r in per:
        for p in r["problems"][:2]:
            res["notes"].append(f"{r['node']}: {p}")
    verdict = {
        "false_suspicions": {"value": susp, "goal": "0", "met": susp == 0},
        "missed_deadlines": {"value": late, "goal": "0", "met": late == 0},
        "largest_stall_s": {
            "value": stall_max,
            "goal": f"< {half:g} s (half of WatchdogSec={wd:g}s)",
            "met": have_stalls and stall_max < half,
        },
        "watchdog_ping_gap_s": {
            "value": gap_max,
            "goal": f"< {wd:g} s (WatchdogSec)",
            "met": gap_max < wd,
        },
        "memory_peak_mib": {
            "value": max(peaks),
            "goal": f"< {cap:g} MiB, no OOM kill",
            "met": max(peaks) < cap and ooms == 0,
        },
    }
    res["verdict"] = verdict
    res["all_met"] = all(v["met"] for v in verdict.values())
    print("\nverdict:")
    rows = [
        ("false suspicions", f"{susp}", "0", "false_suspicions", ""),
        ("missed check deadlines", f"{late:.0f}", "0", "missed_deadlines", ""),
        (
            "largest loop stall",
            f"{stall_max:.3f} s",
            f"< {half:g} s (WatchdogSec/2)",
            "largest_stall_s",
            f"margin {half - stall_max:.2f} s"
            + ("" if have_stalls else "; a node's probe wrote nothing"),
        ),
        (
            "longest watchdog gap",
            f"{gap_max:.1f} s",
            f"< {wd:g} s (WatchdogSec)",
            "watchdog_ping_gap_s",
            f"margin {wd - gap_max:.1f} s",
        ),
        (
            "memory high-water mark",
            f"{max(peaks):.1f} MiB",
            f"< {cap:g} MiB, 0 OOM kills",
            "memory_peak_mib",
            f"per node {min(peaks):.1f}-{max(peaks):.1f} MiB; OOM kills {ooms}",
        ),
    ]
    for what, value, goal, key, extra in rows:
        print(f"  {what:<23} {value:>11}   goal {goal:<27} {_ok(verdict[key]):<6}  {extra}")
    for note in res["notes"]:
        print(f"note: {note}")


def _ok(v: dict[str, Any]) -> str:
    return "met" if v["met"] else "MISSED"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--origins", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=10.0, help="check interval, s")
    ap.add_argument("--minutes", type=float, default=10.0, help="the measured window")
    ap.add_argument("--cpu", type=float, default=0.10, help="CPU per node, cores")
    ap.add_argument("--memory-mib", type=float, default=96.0)
    ap.add_argument(
        "--settle-deadline",
        type=float,
        default=180.0,
        help="s after the declaration to wait for every origin up on every node",
    )
    ap.add_argument("--farm-processes", type=int, default=1)
    ap.add_argument("--no-probe", action="store_true", help="run without the stall probe")
    ap.add_argument("--json", type=Path, help="write the figures and verdict here")
    ap.add_argument(
        "--workdir", type=Path, help="a new directory for the nodes' files, kept (logs, probe)"
    )
    args = ap.parse_args()
    if args.nodes < 2:
        ap.error("--nodes must be at least 2")
    missing = cgroup_missing()
    if missing:
        print("budget.py needs " + ", ".join(missing), file=sys.stderr)
        return 1

    async def go() -> int:
        res = await run(args)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1, default=str))
        return 0

    return run_async_main(go())


if __name__ == "__main__":
    sys.exit(main())
