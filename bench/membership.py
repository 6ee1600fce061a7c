"""Membership figures of issues 3 and 21: edge-agent against Debian's serf agent and kinship.

    .venv/bin/python bench/membership.py [--sizes 5,10] [--trials 5] [--idle-seconds 20]
                                         [--skip-sim | --sim-only] [--sim-nodes 1000]
                                         [--tools edge-agent,serf,kinship] [--plaintext]
                                         [--spawn-batch 40]

Part 1, real processes on 127.0.0.1: for each N, a cluster of N `edge-agent run`, then
one of N `serf agent`, then one of N kinship nodes (kinship 0.4.0 from PyPI in the bench's
own venv, bench/.venv-kinship, made on first use; bench/_kinship_node.py); every node
joins node 0. Encryption is on (the production setting): every node of a tool shares one
32-byte key, edge-agent's keyring_file, serf's -encrypt, kinship's keys; --plaintext turns
it off. agent/ is byte-compiled first, as `pip install` leaves a deployed node (the
editable venv under PYTHONDONTWRITEBYTECODE would otherwise compile every module from
source at each start). Measured per cluster:

* join convergence: from spawning node 0 (the others are spawned once node 0's gossip
  port listens, --spawn-batch at a time, a batch once the previous one's control ports
  listen: N=100 interpreters starting at once would starve 2 cores) until every node
  lists all N alive;
* failure detection: kill -9 one non-seed node (a different one each trial), time until
  every survivor reports it dead/failed. Each node's view is polled every 50 ms: ours by
  GET /v1/members, serf's by the RPC `members` call that `serf members` makes (one
  persistent RPC connection per agent: forking the serf CLI 200 times a second would
  load the 2 cores more than the clusters do), kinship's by its node's line protocol
  (one persistent connection each). A round polls every survivor that has not yet seen
  the death; its duration is printed (the resolution at N=100). Between trials the
  victim is restarted (same name, ports and data dir) and the cluster must reconverge;
  if it does not within the deadline, the cluster is rebuilt (the output says so);
* idle CPU % per node (CPU time over the idle window / wall: each thread's run time from
  /proc/PID/task/TID/schedstat, in ns, as utime+stime in /proc/PID/stat is truncated to
  10 ms, a third of an idle node's 30 s figure; bench/_common.py cpu_used),
  VmRSS per node, and idle bytes/s sent per node, counted identically for every tool by
  nftables on the loopback output path, in a table `inet edgebench<pid>` this script creates
  and deletes: UDP by source port (so per node), TCP (push/pull) for the whole cluster
  and shared evenly. Bytes are whole IP packets. edge-agent's own /metrics UDP payload
  counter is shown as a cross-check;
* false positives, from the idle window to the last trial, about members never killed:
  refutations (a live node told it is suspect or dead: edge-agent's and serf's WARNING
  log line, kinship's Stats.refutations), (observer, member) pairs a poll showed not
  alive, and for kinship its MemberSuspect/MemberDead events.

Deadlines (join, detection, reconvergence) are those of N=40 plus 2 s per node over 40.
View rounds are 50 ms apart up to N=10, then N x 5 ms (poll_interval): at N=100 a 50 ms
round rate was ~2,000 requests a second, which overloaded the nodes being measured.

Part 2, the deterministic simulator (agent/membership/simulator.py) at 1,000 nodes:
detection time, false positives under 5 % loss plus 5 % of nodes stalled 2 s, and
gossip rounds for a broadcast to reach every node. Every node is the same GossipEndpoint
a live node runs, so every simulated datagram is a whole packet as on the wire: compound,
CRC, LZW compression and AES-GCM with a cluster key (--sim-plaintext turns the key off).

Exits 1 if the harness could not measure; goals that fail are reported, not fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import compile_agent, cpu_sample, cpu_used
from _kinship import VERSION as KINSHIP_VERSION
from _kinship import KinshipCtl, ensure_venv, node_argv
from _procs import (
    EDGE_AGENT,
    LOOPBACK,
    HarnessError,
    ProcSet,
    free_ports,
    rss_mib,
    scan_log,
    tail,
    tcp_listening,
)

SERF = shutil.which("serf") or "/usr/bin/serf"
NFT = shutil.which("nft") or "/usr/sbin/nft"
NFT_TABLE = f"edgebench{os.getpid()}"  # per run: two benches at once keep separate counters
POLL = 0.05


def poll_interval(n: int) -> float:
    """Pause between view rounds: POLL up to 10 nodes, then growing with N. A round asks
    every node that has not yet seen the change for its whole member list; at N=100 every
    50 ms that is ~2,000 requests a second, which overloaded the nodes being measured
    (members flapped dead under the bench's own polling, never under its idle window)."""
    return POLL * max(1.0, n / 10)


JOIN_DEADLINE = 90.0  # each deadline grows with N (deadline_for()): 100 starts share 2 cores
DETECT_DEADLINE = 120.0
RECONVERGE_DEADLINE = 90.0
TOOLS = ("edge-agent", "serf", "kinship")
PREFIX = {"edge-agent": "e", "serf": "s", "kinship": "k"}
SETTLE = 5.0  # after convergence, before the idle window: let the join gossip drain
GOAL_RSS_MIB = 40.0
GOAL_CPU_RATIO = 2.0


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def deadline_for(base: float, n: int) -> float:
    """A deadline for N nodes: the N=40 one until 40, then 2 s more per node (N=100: +120 s)."""
    return base + 2.0 * max(0, n - 40)


def ensure_fds(n: int) -> None:
    """Enough file descriptors for N nodes: the bench holds a connection or two per node
    (views, RPC, nftables, logs); raises the soft limit towards the hard one if needed."""
    import resource

    need = 8 * n + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise HarnessError(f"open files limit {hard} < {need} needed for N={n} (ulimit -n)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def listening_ports(host: str = LOOPBACK) -> set[int]:
    """TCP ports LISTENing on host or any address (IPv4), from one read of /proc/net/tcp."""
    want = f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}"
    out: set[int] = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            addr, port = parts[1].split(":")
            if parts[3] == "0A" and addr in (want, "00000000"):
                out.add(int(port, 16))
    return out


# --- nftables accounting --------------------------------------------------------------------


class Nft:
    """Byte counters on the output hook, in a table of our own, deleted on close."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    def _run(self, script: str, check: bool = True) -> str:
        res = subprocess.run(
            [NFT, "-f", "-"], input=script, capture_output=True, text=True, timeout=20
        )
        if check and res.returncode != 0:
            raise HarnessError(f"nft failed: {res.stderr.strip()}\n{script}")
        return res.stdout

    def open(self) -> None:
        if not Path(NFT).exists():
            raise HarnessError("nft not found (apt-get install nftables)")
        self.close()  # a table left by an interrupted run of this script
        self._run(
            f"table inet {NFT_TABLE} {{\n"
            "  chain out { type filter hook output priority 0; policy accept; }\n"
            "}\n"
        )

    def close(self) -> None:
        subprocess.run([NFT, "delete", "table", "inet", NFT_TABLE], capture_output=True, timeout=20)

    def watch(self, ports: Sequence[int]) -> None:
        """Count UDP sent from each port, and TCP to/from the set (replaces earlier rules)."""
        lines = [f"flush chain inet {NFT_TABLE} out"]
        for p in self.ports:
            lines.append(f"delete counter inet {NFT_TABLE} u{p}")
        for c in ("tcp_srv", "tcp_cli"):
            if self.ports:
                lines.append(f"delete counter inet {NFT_TABLE} {c}")
        self.ports = list(ports)
        pset = ", ".join(str(p) for p in ports)
        for p in ports:
            lines.append(f"add counter inet {NFT_TABLE} u{p}")
            lines.append(f"add rule inet {NFT_TABLE} out udp sport {p} counter name u{p}")
        lines.append(f"add counter inet {NFT_TABLE} tcp_srv")
        lines.append(f"add counter inet {NFT_TABLE} tcp_cli")
        # server side of a push/pull stream: from a gossip port; client side: to one
        lines.append(f"add rule inet {NFT_TABLE} out tcp sport {{ {pset} }} counter name tcp_srv")
        lines.append(
            f"add rule inet {NFT_TABLE} out tcp dport {{ {pset} }} "
            f"tcp sport != {{ {pset} }} counter name tcp_cli"
        )
        self._run("\n".join(lines) + "\n")

    def read(self) -> tuple[dict[int, int], int]:
        """(UDP bytes sent per port, TCP bytes of the whole cluster)."""
        res = subprocess.run(
            [NFT, "-j", "list", "counters", "table", "inet", NFT_TABLE],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if res.returncode != 0:
            raise HarnessError(f"nft list counters failed: {res.stderr.strip()}")
        udp: dict[int, int] = {}
        tcp = 0
        for item in json.loads(res.stdout).get("nftables", []):
            c = item.get("counter")
            if not c:
                continue
            name, nbytes = c["name"], int(c["bytes"])
            if name.startswith("u"):
                udp[int(name[1:])] = nbytes
            elif name.startswith("tcp_"):
                tcp += nbytes
        return udp, tcp


# --- serf RPC -------------------------------------------------------------------------------


class SerfRpc:
    """The RPC `serf members` uses (msgpack over TCP), on one persistent connection."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.unpacker = msgpack.Unpacker(raw=True)
        self.seq = 0

    async def _next(self) -> Any:
        assert self.reader is not None
        while True:
            with contextlib.suppress(StopIteration):
                return next(self.unpacker)
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("serf RPC closed")
            self.unpacker.feed(data)

    async def _call(self, command: str, body: dict[str, Any] | None = None) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(*self.addr)
            self.unpacker = msgpack.Unpacker(raw=True)
            self.seq = 0
            await self._call("handshake", {"Version": 1})
        seq, self.seq = self.seq, self.seq + 1
        payload = msgpack.packb({"Command": command, "Seq": seq})
        if body is not None:
            payload += msgpack.packb(body)
        self.writer.write(payload)
        await self.writer.drain()
        header = await self._next()
        err = header.get(b"Error", b"")
        if err:
            raise ConnectionError(f"serf RPC {command}: {err.decode(errors='replace')}")

    async def members(self) -> dict[str, str]:
        """name -> status (alive, failed, left, leaving)."""
        try:
            await asyncio.wait_for(self._call("members"), 5)
            body = await asyncio.wait_for(self._next(), 5)
        except (OSError, ConnectionError, TimeoutError):
            self.close()
            raise
        return {m[b"Name"].decode(): m[b"Status"].decode() for m in body[b"Members"]}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# --- nodes and clusters ---------------------------------------------------------------------


@dataclass
class Node:
    name: str
    gossip_port: int
    ctl_port: int  # edge-agent: the HTTP API; serf: the RPC; kinship: its node's line protocol
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    rpc: SerfRpc | KinshipCtl | None = None

    @property
    def log(self) -> Path:
        return self.dir / "stderr.log"


DEAD_STATES = {"dead", "failed", "left", "gone"}  # gone: kinship's tombstone expired


@dataclass
class Cluster:
    tool: str  # "edge-agent", "serf" or "kinship"
    n: int
    root: Path
    procs: ProcSet
    session: aiohttp.ClientSession
    key: str | None = None  # base64 32-byte cluster key, shared by every node; None: plaintext
    python: str = ""  # kinship's interpreter (its own venv)
    spawn_batch: int = 40
    nodes: list[Node] = field(default_factory=list)
    rebuilds: int = 0
    builds: int = 0
    notes: list[str] = field(default_factory=list)
    # false positives: from the idle window on, a never-killed member seen not alive
    killed: set[str] = field(default_factory=set)
    watch_fp: bool = False
    fp_seen: set[tuple[str, str, str]] = field(default_factory=set)  # (observer, member, state)
    poll_rounds: list[float] = field(default_factory=list)
    keyfile: Path = field(init=False, default=Path())

    def __post_init__(self) -> None:
        self._allocate()

    def _allocate(self) -> None:
        ports = free_ports(2 * self.n)
        prefix = PREFIX[self.tool]
        self.nodes = []
        base = self.root / f"{self.tool}-{self.n}-{self.builds}"
        for i in range(self.n):
            d = base / f"{prefix}{i}"
            d.mkdir(parents=True)
            self.nodes.append(Node(f"{prefix}{i}", ports[2 * i], ports[2 * i + 1], d))
        self.keyfile = base / "keyring"
        if self.key is not None:
            self.keyfile.write_text(self.key + "\n")

    @property
    def names(self) -> set[str]:
        return {x.name for x in self.nodes}

    def argv(self, node: Node) -> list[str]:
        seed = self.nodes[0]
        if self.tool == "serf":
            argv = [
                SERF,
                "agent",
                f"-node={node.name}",
                f"-bind={LOOPBACK}:{node.gossip_port}",
                f"-rpc-addr={LOOPBACK}:{node.ctl_port}",
                "-log-level=warn",
            ]
            if self.key is not None:
                argv.append(f"-encrypt={self.key}")
            if node is not seed:
                argv.append(f"-join={LOOPBACK}:{seed.gossip_port}")
            return argv
        if self.tool == "kinship":
            return node_argv(
                self.python,
                node.name,
                node.gossip_port,
                node.ctl_port,
                None if node is seed else seed.gossip_port,
                self.keyfile if self.key is not None else None,
            )
        cfg = node.dir / "agent.toml"
        lines = [
            "[node]",
            f'name = "{node.name}"',
            f'data_dir = "{node.dir / "data"}"',
            "[api]",
            f'listen = "{LOOPBACK}:{node.ctl_port}"',
            "[cluster]",
            "discover = false",
            f'bind = "{LOOPBACK}:{node.gossip_port}"',
        ]
        if self.key is not None:
            lines.append(f'keyring_file = "{self.keyfile}"')
        if node is not seed:
            lines.append(f'join = ["{LOOPBACK}:{seed.gossip_port}"]')
        lines += ["[leds]", "enabled = false", "[log]", 'level = "warning"']
        cfg.write_text("\n".join(lines) + "\n")
        return [EDGE_AGENT, "run", "--config", str(cfg)]

    def spawn(self, node: Node) -> None:
        node.proc = self.procs.start(self.argv(node), node.log)
        node.starts += 1
        if node.rpc is not None:
            node.rpc.close()
        node.rpc = (
            SerfRpc((LOOPBACK, node.ctl_port))
            if self.tool == "serf"
            else KinshipCtl((LOOPBACK, node.ctl_port))
            if self.tool == "kinship"
            else None
        )

    def check_alive(self, nodes: Sequence[Node] | None = None) -> None:
        for node in nodes if nodes is not None else self.nodes:
            code = node.proc.poll() if node.proc is not None else -1
            if code is not None:
                raise HarnessError(
                    f"{self.tool} {node.name} exited with code {code}:\n{tail(node.log)}"
                )

    async def view(self, node: Node) -> dict[str, str] | None:
        """name -> state as `node` sees it; None if it does not answer (yet).

        From the idle window on (watch_fp), a never-killed member it shows not alive is
        recorded as a false positive."""
        try:
            if node.rpc is not None:
                v = await node.rpc.members()
            else:
                url = f"http://{LOOPBACK}:{node.ctl_port}/v1/members"
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status != 200:
                        return None
                    v = {m["name"]: m["state"] for m in await r.json()}
        except (aiohttp.ClientError, OSError, ConnectionError, TimeoutError, ValueError):
            return None
        if self.watch_fp:
            for name, state in v.items():
                if state != "alive" and name not in self.killed and name in self.names:
                    self.fp_seen.add((node.name, name, state))
        return v

    async def wait_converged(self, deadline: float, what: str) -> float:
        """Poll until every node lists all N alive; the monotonic time it happened."""
        names = self.names
        done: set[str] = set()
        while True:
            self.check_alive()
            todo = [x for x in self.nodes if x.name not in done]
            views = await asyncio.gather(*(self.view(x) for x in todo))
            now = time.monotonic()
            for node, v in zip(todo, views, strict=True):
                if v is not None and all(v.get(m) == "alive" for m in names):
                    done.add(node.name)
            if len(done) == len(self.nodes):
                # all must hold at once: re-check the ones that were done earlier
                views = await asyncio.gather(*(self.view(x) for x in self.nodes))
                bad = [
                    x.name
                    for x, v in zip(self.nodes, views, strict=True)
                    if v is None or not all(v.get(m) == "alive" for m in names)
                ]
                if not bad:
                    return now
                done -= set(bad)
            if now > deadline:
                missing = sorted(self.names - done)
                raise HarnessError(
                    f"{self.tool} N={self.n}: {what} not reached; not yet: {missing}"
                )
            await asyncio.sleep(poll_interval(self.n))

    async def start_all(self) -> float:
        """Spawn node 0, then the rest once it listens; seconds until converged.

        The rest are spawned spawn_batch at a time: a batch once the previous one's
        control ports listen (started), so that 100 interpreters starting at once on 2
        cores do not starve the ones already gossiping. N <= spawn_batch: all at once."""
        t0 = time.monotonic()
        seed = self.nodes[0]
        self.spawn(seed)
        deadline = t0 + 30
        while not tcp_listening(seed.gossip_port):
            self.check_alive([seed])
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.tool} {seed.name} did not listen:\n{tail(seed.log)}")
            await asyncio.sleep(0.01)
        rest = self.nodes[1:]
        for i in range(0, len(rest), self.spawn_batch):
            batch = rest[i : i + self.spawn_batch]
            for node in batch:
                self.spawn(node)
            if i + self.spawn_batch >= len(rest):
                break
            limit = time.monotonic() + 60 + 2 * len(batch)
            while not {x.ctl_port for x in batch} <= listening_ports():
                self.check_alive(batch)
                if time.monotonic() > limit:
                    raise HarnessError(f"{self.tool}: a start batch did not listen in time")
                await asyncio.sleep(POLL)
        # the deadline runs from the last spawn: the batches' start-up is not convergence
        limit = time.monotonic() + deadline_for(JOIN_DEADLINE, self.n)
        t1 = await self.wait_converged(limit, "join convergence")
        return t1 - t0

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.rpc is not None:
                node.rpc.close()
        self.procs.stop_many([x.proc for x in self.nodes if x.proc is not None])
        for node in self.nodes:
            node.proc = None

    async def rebuild(self) -> float:
        self.stop_all()
        self.builds += 1
        self._allocate()
        return await self.start_all()

    def logs(self) -> list[Path]:
        base = self.root
        return sorted(base.glob(f"{self.tool}-{self.n}-*/*/stderr.log"))


# --- part 1: real processes -----------------------------------------------------------------


@dataclass
class RealResult:
    tool: str
    n: int
    joins: list[float] = field(default_factory=list)  # one per cluster build
    detect: list[float] = field(default_factory=list)  # per trial: all survivors know
    detect_first: list[float] = field(default_factory=list)  # per trial: first survivor
    cpu_pct: list[float] = field(default_factory=list)  # per node
    rss: list[float] = field(default_factory=list)  # per node, MiB
    bytes_s: list[float] = field(default_factory=list)  # per node, nftables
    udp_bytes_s: list[float] = field(default_factory=list)  # per node, UDP only, nftables
    metrics_bytes_s: list[float] = field(default_factory=list)  # per node, /metrics
    poll_round: list[float] = field(default_factory=list)  # s per round of views (detection)
    fp_refutes: int = 0  # never-killed nodes refuting a suspect/dead rumour (idle + trials)
    fp_seen: int = 0  # (observer, member) polls showing a never-killed member not alive
    fp_events: int | None = None  # kinship: MemberSuspect/MemberDead about never-killed ones
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    log_lines: Counter[str] = field(default_factory=Counter)


_TS = re.compile(r"^\S+ \S+ |^\s*\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ")
_NUM = re.compile(r"\b\d+(\.\d+)*(:\d+)?\b|\b[es]\d+\b")


def log_warnings(path: Path) -> Counter[str]:
    """Warning/error lines of a node's stderr, with times, numbers and node names masked."""
    out: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if any(k in line for k in (" WARNING ", " ERROR ", "[WARN]", "[ERR]")):
                out[_NUM.sub("#", _TS.sub("", line.strip()))[:160]] += 1
    return out


async def metrics_bytes_sent(session: aiohttp.ClientSession, node: Node) -> float | None:
    try:
        url = f"http://{LOOPBACK}:{node.ctl_port}/metrics"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
            text = await r.text()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
    for line in text.splitlines():
        if line.startswith("edge_agent_gossip_bytes_sent_total"):
            return float(line.split()[-1])
    return None


REFUTE_RE = re.compile(r"refuting a (suspect|dead) message", re.I)  # edge-agent and serf


@dataclass
class FpMarks:
    """Where false-positive counting starts: log offsets, kinship nodes' counters."""

    logs: dict[Path, int]
    kinship: dict[tuple[int, str, int], dict[str, Any]]  # (build, name, starts) -> answer


async def fp_start(cluster: Cluster) -> FpMarks:
    """From here on (the idle window, then the trials), count false positives."""
    cluster.watch_fp = True
    logs = {x.log: x.log.stat().st_size if x.log.exists() else 0 for x in cluster.nodes}
    kin: dict[tuple[int, str, int], dict[str, Any]] = {}
    if cluster.tool == "kinship":
        for x in cluster.nodes:
            assert isinstance(x.rpc, KinshipCtl)
            try:
                kin[(cluster.builds, x.name, x.starts)] = await x.rpc.answer()
            except (OSError, ConnectionError, TimeoutError, ValueError) as e:
                raise HarnessError(f"kinship {x.name} did not answer: {e!r}") from None
    return FpMarks(logs, kin)


async def fp_finish(cluster: Cluster, marks: FpMarks, res: RealResult) -> None:
    """Count what happened to never-killed members since fp_start.

    refutes: a never-killed node heard it was suspected or declared dead and refuted it
    (edge-agent's and serf's WARNING log line; kinship's Stats.refutations); seen: a poll
    showed a never-killed member not alive (serf shows no suspect state, only failed);
    kinship also counts its MemberSuspect/MemberDead events about never-killed members."""
    cluster.watch_fp = False
    res.fp_seen = len({(o, m) for o, m, _ in cluster.fp_seen})
    live = [x for x in cluster.nodes if x.name not in cluster.killed]
    if cluster.tool != "kinship":
        for x in live:
            with contextlib.suppress(OSError), open(x.log, "rb") as f:
                f.seek(marks.logs.get(x.log, 0))
                res.fp_refutes += len(REFUTE_RE.findall(f.read().decode(errors="replace")))
        return
    res.fp_events = 0
    for x in cluster.nodes:
        if x.proc is None or not isinstance(x.rpc, KinshipCtl):
            continue
        try:
            now = await x.rpc.answer()
        except (OSError, ConnectionError, TimeoutError, ValueError) as e:
            res.problems.append(f"{x.name} did not answer for the false-positive count: {e!r}")
            continue
        before = marks.kinship.get((cluster.builds, x.name, x.starts), {})
        if x.name not in cluster.killed:
            res.fp_refutes += now["refutations"] - before.get("refutations", 0)
        for kind in ("suspect", "dead"):
            for member, count in now[kind].items():
                if member not in cluster.killed:
                    res.fp_events += count - before.get(kind, {}).get(member, 0)


async def measure_idle(cluster: Cluster, nft: Nft, seconds: float, res: RealResult) -> None:
    """CPU, RSS and bytes sent per node over an idle window (nothing polls the nodes)."""
    nodes = cluster.nodes
    nft.watch([x.gossip_port for x in nodes])
    m0 = (
        [await metrics_bytes_sent(cluster.session, x) for x in nodes]
        if cluster.tool == "edge-agent"
        else []
    )
    udp0, tcp0 = nft.read()
    pids = [x.proc.pid for x in nodes if x.proc is not None]
    c0 = [cpu_sample(p) for p in pids]
    w0 = time.monotonic()
    await asyncio.sleep(seconds)  # the measurement window itself, not a synchronisation
    c1 = [cpu_sample(p) for p in pids]
    w1 = time.monotonic()
    udp1, tcp1 = nft.read()
    cluster.check_alive()
    wall = w1 - w0
    res.cpu_pct = [100 * cpu_used(a, b) / wall for a, b in zip(c0, c1, strict=True)]
    res.rss = [rss_mib(p) for p in pids]
    tcp_share = (tcp1 - tcp0) / len(nodes) / wall
    for x in nodes:
        udp = (udp1.get(x.gossip_port, 0) - udp0.get(x.gossip_port, 0)) / wall
        res.udp_bytes_s.append(udp)
        res.bytes_s.append(udp + tcp_share)
    if cluster.tool == "edge-agent":
        m1 = [await metrics_bytes_sent(cluster.session, x) for x in nodes]
        for a, b in zip(m0, m1, strict=True):
            if a is not None and b is not None:
                # the /metrics reads fall just outside the CPU window; close enough
                res.metrics_bytes_s.append((b - a) / wall)


async def detect_once(cluster: Cluster, victim: Node) -> tuple[float, float, list[str]]:
    """kill -9 victim; (s until every survivor lists it dead, s until the first, oddities)."""
    survivors = [x for x in cluster.nodes if x is not victim]
    seen: dict[str, float] = {}
    odd: list[str] = []
    assert victim.proc is not None
    cluster.killed.add(victim.name)
    t0 = time.monotonic()
    cluster.procs.kill9(victim.proc)
    victim.proc = None
    if victim.rpc is not None:
        victim.rpc.close()
    while len(seen) < len(survivors):
        cluster.check_alive(survivors)
        todo = [x for x in survivors if x.name not in seen]
        r0 = time.monotonic()
        views = await asyncio.gather(*(cluster.view(x) for x in todo))
        now = time.monotonic()
        cluster.poll_rounds.append(now - r0)
        for node, v in zip(todo, views, strict=True):
            state = (v or {}).get(victim.name)
            if state in DEAD_STATES:
                seen[node.name] = now - t0
                if state == "left":
                    odd.append(f"{node.name} listed the kill -9'd {victim.name} as 'left'")
        if now - t0 > deadline_for(DETECT_DEADLINE, cluster.n):
            raise HarnessError(
                f"{cluster.tool} N={cluster.n}: {victim.name} not seen dead by "
                f"{sorted(set(x.name for x in survivors) - set(seen))} in "
                f"{deadline_for(DETECT_DEADLINE, cluster.n):.0f} s"
            )
        await asyncio.sleep(poll_interval(cluster.n))
    return max(seen.values()), min(seen.values()), odd


async def run_real(
    tool: str,
    n: int,
    args: argparse.Namespace,
    procs: ProcSet,
    session: aiohttp.ClientSession,
    nft: Nft,
    root: Path,
) -> RealResult:
    res = RealResult(tool, n)
    cluster = Cluster(
        tool,
        n,
        root,
        procs,
        session,
        key=args.key,
        python=args.kinship_python,
        spawn_batch=args.spawn_batch,
    )
    try:
        res.joins.append(await cluster.start_all())
        for _ in range(args.join_runs - 1):
            res.joins.append(await cluster.rebuild())
        if tool == "serf":
            # the figures come from the RPC `serf members` uses; check the CLI agrees once
            seed = cluster.nodes[0]
            cli = subprocess.run(
                [SERF, "members", f"-rpc-addr={LOOPBACK}:{seed.ctl_port}"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            alive = {ln.split()[0] for ln in cli.stdout.splitlines() if " alive" in ln}
            if alive != cluster.names:
                res.problems.append(f"`serf members` disagrees with the RPC: {cli.stdout!r}")
        await asyncio.sleep(SETTLE)  # let join gossip drain before the idle window
        marks = await fp_start(cluster)
        await measure_idle(cluster, nft, args.idle_seconds, res)
        for trial in range(args.trials):
            victim = cluster.nodes[1 + trial % (n - 1)]
            total, first, odd = await detect_once(cluster, victim)
            res.detect.append(total)
            res.detect_first.append(first)
            res.problems += odd
            if trial == args.trials - 1:
                break
            cluster.spawn(victim)  # same name, ports and data dir
            try:
                await cluster.wait_converged(
                    time.monotonic() + deadline_for(RECONVERGE_DEADLINE, n),
                    "reconvergence after a restart",
                )
            except HarnessError as e:
                res.problems.append(f"{e}; rebuilt the cluster")
                cluster.rebuilds += 1
                await cluster.rebuild()
        await fp_finish(cluster, marks, res)
        res.poll_round = cluster.poll_rounds
        victims = [cluster.nodes[1 + t % (n - 1)].name for t in range(args.trials)]
        res.notes.append(
            f"victims {', '.join(victims)} (restarted between trials; "
            f"cluster rebuilt {cluster.rebuilds} time(s))"
        )
    finally:
        cluster.stop_all()
        for log in cluster.logs():
            for hit in scan_log(log, ("Traceback", "panic:", "CRITICAL")):
                res.problems.append(f"{log.parent.name} stderr:\n{hit}")
            res.log_lines.update(log_warnings(log))
    return res


# --- part 2: the simulator ------------------------------------------------------------------


@dataclass
class SimResult:
    n: int
    join_s: float = math.nan
    detect_median: float = math.nan
    detect_max: float = math.nan
    first_suspect: float = math.nan
    first_dead: float = math.nan
    dead_spread_rounds: float = math.nan
    alive_rounds_median: float = math.nan
    alive_rounds_max: float = math.nan
    fp_window: float = 0.0
    fp_dead: int = 0
    fp_dead_members: int = 0
    fp_suspect: int = 0
    fp_suspect_members: int = 0
    fp_suspect_unstalled: int = 0
    refutes: int = 0
    fp_dead_join: int = 0
    stalled: int = 0
    packets_per_node_s: float = math.nan
    bytes_per_node_s: float = math.nan
    datagrams_decoded: int = 0
    bad_input: dict[str, int] = field(default_factory=dict)
    encrypted: bool = True
    wall_s: float = math.nan
    notes: list[str] = field(default_factory=list)


class _CountRefutes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "refuting" in record.getMessage():
            self.count += 1


def make_simulator(n: int, seed: int, encrypt: bool = True) -> Any:
    from agent.membership.simulator import Simulator

    return Simulator(n, seed=seed, encrypt=encrypt)


def sim_alive_everywhere(sim: Any, n_expected: int) -> bool:
    from agent.membership.messages import NodeState

    for node in sim.live_nodes():
        alive = sum(1 for m in node.core.nodes if m.state == NodeState.ALIVE)
        if alive != n_expected:
            return False
    return True


def sim_bootstrap(sim: Any) -> None:
    """Converge without the join storm: start every node, then hand each one the full
    member list as a push/pull (the merge a join does), and drop the broadcasts it queues.

    This is the one shortcut past the packet path: it calls each node's core directly
    (encrypting and decoding a 1,000-member push/pull 1,000 times would only add wall time)."""
    from agent.membership.messages import PushNodeState, PushPull

    sim.run_until(sim.now)  # the start events: each node announces itself
    states = []
    for node in sim.nodes.values():
        m = node.core.node_map[node.name]
        states.append(PushNodeState(m.name, m.addr, m.port, m.meta, m.incarnation, m.state, m.vsn))
    pp = PushPull(tuple(states), b"", False)
    for node in sim.nodes.values():
        node.core.handle_stream(pp, node.addr, sim.now)
        node.core.broadcasts.reset()
        node.core.packets_to_send()
        node.core.streams_to_open()
        node.core.events()
        sim._flush(node)  # re-arms the node's timer in the simulator
    n = len(sim.nodes)
    if not sim_alive_everywhere(sim, n):
        raise HarnessError("simulator: bootstrap did not converge the cluster")


def sim_run_until(
    sim: Any, cond: Callable[[], bool], deadline: float, step: float, what: str
) -> None:
    while not cond():
        if sim.now >= deadline:
            raise HarnessError(f"simulator: {what} not reached by t={deadline:.0f} s")
        sim.run_for(step)


def run_sim(
    n: int,
    seed: int,
    log: Callable[[str], None],
    protocol_join: bool = False,
    encrypt: bool = True,
) -> SimResult:
    from agent.membership.settings import Settings, suspicion_timeout

    w0 = time.monotonic()
    res = SimResult(n)
    refutes = _CountRefutes()
    core_log = logging.getLogger("agent.membership")
    core_log.addHandler(refutes)
    core_log.propagate = False  # the cores' warnings are counted here, not printed
    sim = make_simulator(n, seed, encrypt)
    res.encrypted = sim.keyring is not None
    gossip_interval = Settings().gossip_interval
    rng = random.Random(seed + 1)
    names = list(sim.nodes)
    seed_name = names[0]

    if protocol_join:
        # join: everyone through node 0, all at t=0 (slow: every node relays ~N*16 alives)
        sim.join_all(seed_name)
        sim_run_until(sim, lambda: sim_alive_everywhere(sim, n), 300, 1.0, "join convergence")
        res.join_s = sim.now
        res.notes.append("cluster built by the protocol: all nodes join through n0000 at t=0")
    else:
        sim_bootstrap(sim)
        res.notes.append(
            "cluster bootstrapped: every node merged one push/pull holding all members, "
            "and the alive broadcasts that merge queues were dropped (a protocol join of "
            "1,000 nodes takes several minutes of wall time here; --sim-protocol-join)"
        )
    log(f"sim: {n} nodes converged at t={sim.now:.0f} s ({time.monotonic() - w0:.0f} s wall)")
    # a few seconds of steady state before the kill
    sim.run_for(5.0)
    if not sim_alive_everywhere(sim, n):
        raise HarnessError("simulator: the bootstrapped cluster did not stay converged")

    # detection
    victim = names[rng.randrange(1, n)]
    t_kill = sim.now
    obs_i = len(sim.observed)
    sim.kill(victim)
    dead_at: dict[str, float] = {}
    suspect_at: list[float] = []
    live = {x.name for x in sim.live_nodes()}

    def scan_dead() -> bool:
        nonlocal obs_i
        for o in sim.observed[obs_i:]:
            if o.member == victim:
                if o.kind == "dead" and o.observer not in dead_at:
                    dead_at[o.observer] = o.at
                elif o.kind == "suspect":
                    suspect_at.append(o.at)
        obs_i = len(sim.observed)
        return live <= dead_at.keys()

    sim_run_until(sim, scan_dead, t_kill + 300, 0.5, f"detection of {victim}")
    times = [dead_at[x] - t_kill for x in live]
    res.detect_median = median(times)
    res.detect_max = max(times)
    res.first_suspect = min(suspect_at) - t_kill if suspect_at else math.nan
    res.first_dead = min(times)
    res.dead_spread_rounds = (max(times) - min(times)) / gossip_interval
    log(f"sim: detection done at t={sim.now:.0f} s ({time.monotonic() - w0:.0f} s wall)")

    # broadcast spread: a fresh alive from a newly joined node, from the seed learning of it
    # (its push/pull) until every node has a join event for it; three newcomers
    alive_rounds: list[float] = []
    for k in range(3):
        newcomer = f"n{n + k:04d}"
        sim.add_node(newcomer)
        sim._at(sim.now + 0.001, "join", (newcomer, sim.nodes[seed_name].addr))
        others = {x.name for x in sim.live_nodes()} - {newcomer}
        joined: dict[str, float] = {}
        obs_j = len(sim.observed)

        def scan_join(
            newcomer: str = newcomer, others: set[str] = others, joined: dict[str, float] = joined
        ) -> bool:
            nonlocal obs_j
            for o in sim.observed[obs_j:]:
                if o.member == newcomer and o.kind == "join" and o.observer in others:
                    joined.setdefault(o.observer, o.at)
            obs_j = len(sim.observed)
            return others <= joined.keys()

        sim_run_until(sim, scan_join, sim.now + 120, 0.2, f"spread of {newcomer}'s alive")
        first = joined.get(seed_name, min(joined.values()))
        alive_rounds.append((max(joined.values()) - first) / gossip_interval)
    res.alive_rounds_median = median(alive_rounds)
    res.alive_rounds_max = max(alive_rounds)
    log(f"sim: broadcast spread done at t={sim.now:.0f} s ({time.monotonic() - w0:.0f} s wall)")

    # false positives: 5 % loss and 5 % of live nodes stalled 2 s at random times in a window
    killed = {victim}
    window = 20.0
    n_live = len(sim.live_nodes())
    tail_s = suspicion_timeout(4, n_live, 1.0) * 2 + 2
    res.fp_window = window
    t_w = sim.now
    obs_w = len(sim.observed)
    pkts0, bytes0 = sim.packets_sent, sim.bytes_sent
    live_names = [x.name for x in sim.live_nodes()]
    stalled = rng.sample(live_names, max(1, round(0.05 * len(live_names))))
    res.stalled = len(stalled)
    plan = sorted((t_w + rng.random() * (window - 2.0), name) for name in stalled)
    refutes0 = refutes.count
    sim.loss = 0.05
    for at, name in plan:
        sim.run_until(at)
        sim.stall(name, 2.0)
    sim.run_until(t_w + window)
    sim.loss = 0.0
    sim.run_until(t_w + window + tail_s)  # suspicions raised in the window run their course
    res.packets_per_node_s = (sim.packets_sent - pkts0) / (window + tail_s) / n_live
    res.bytes_per_node_s = (sim.bytes_sent - bytes0) / (window + tail_s) / n_live
    res.datagrams_decoded = sum(x.endpoint.counters.packets_in for x in sim.nodes.values())
    res.bad_input = sim.bad_input()
    fp = [o for o in sim.observed[obs_w:] if o.member not in killed and o.member in live_names]
    dead = [o for o in fp if o.kind == "dead"]
    sus = [o for o in fp if o.kind == "suspect"]
    res.fp_dead, res.fp_dead_members = len(dead), len({o.member for o in dead})
    res.fp_suspect, res.fp_suspect_members = len(sus), len({o.member for o in sus})
    res.fp_suspect_unstalled = len({o.member for o in sus} - set(stalled))
    res.refutes = refutes.count - refutes0
    res.fp_dead_join = sum(
        1 for o in sim.observed[:obs_w] if o.kind == "dead" and o.member not in killed
    )
    res.notes.append(
        f"FP window {window:.0f} s with loss 5 % and {len(stalled)} nodes stalled 2 s, "
        f"then {tail_s:.0f} s without loss for pending suspicions"
    )
    res.wall_s = time.monotonic() - w0
    core_log.removeHandler(refutes)
    core_log.propagate = True
    return res


# --- output ---------------------------------------------------------------------------------


def fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def print_table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def report_real(results: dict[tuple[str, int], RealResult], sizes: list[int]) -> list[str]:
    """The table (one column per tool, ratios of edge-agent to serf and to kinship) and the
    goals: issue 3's (PASS/FAIL) and issue 21's Done-when lines (met/MISSED)."""
    rows: list[tuple[str, ...]] = []
    goals: list[str] = []
    done: list[str] = []
    empty = RealResult("", 0)
    for n in sizes:
        ours = results.get(("edge-agent", n), empty)
        serf = results.get(("serf", n), empty)
        kin = results.get(("kinship", n), empty)
        tools = (ours, serf, kin)

        def row(
            label: str,
            get: Callable[[RealResult], float],
            d: int = 2,
            n: int = n,
            tools: tuple[RealResult, ...] = tools,
        ) -> None:
            a, b, c = (get(r) for r in tools)
            rows.append(
                (f"N={n} {label}", fmt(a, d), fmt(b, d), fmt(c, d), ratio(a, b), ratio(a, c))
            )

        def spread(xs: list[float], d: int = 2) -> str:
            if not xs:
                return "n/a"
            return f"{fmt(min(xs), d)}/{fmt(median(xs), d)}/{fmt(max(xs), d)}"

        def text_row(
            label: str,
            get: Callable[[RealResult], str],
            n: int = n,
            tools: tuple[RealResult, ...] = tools,
        ) -> None:
            rows.append((f"N={n} {label}", *(get(r) for r in tools), "", ""))

        def count(x: int | None, r: RealResult) -> str:
            return "n/a" if x is None or not r.tool else str(x)

        row("join convergence: median (s)", lambda r: median(r.joins))
        text_row("join convergence: min/med/max (s)", lambda r: spread(r.joins))
        row("detection, all survivors: median (s)", lambda r: median(r.detect))
        text_row("detection, all survivors: min/med/max (s)", lambda r: spread(r.detect))
        row("detection, first survivor: median (s)", lambda r: median(r.detect_first))
        text_row("view poll round, detection: med/max (s)", lambda r: spread(r.poll_round, 3))
        row("idle CPU per node: median (%)", lambda r: median(r.cpu_pct), 3)
        row("RSS per node: median (MiB)", lambda r: median(r.rss), 1)
        row("RSS per node: max (MiB)", lambda r: max(r.rss, default=math.nan), 1)
        row("idle bytes/s sent per node: median", lambda r: median(r.bytes_s), 1)
        row("  of which UDP (per node): median", lambda r: median(r.udp_bytes_s), 1)
        row("/metrics UDP payload bytes/s sent", lambda r: median(r.metrics_bytes_s), 1)
        text_row("false positives: refutations", lambda r: count(r.fp_refutes, r))
        text_row("false positives: seen in polls", lambda r: count(r.fp_seen, r))
        text_row("false positives: suspect/dead events", lambda r: count(r.fp_events, r))

        def goal(text: str, ok: bool | None, n: int = n) -> None:
            verdict = "n/a " if ok is None else ("PASS" if ok else "FAIL")
            goals.append(f"  [{verdict}] N={n} {text}")

        def met(text: str, ok: bool | None, n: int = n) -> None:
            verdict = "n/a   " if ok is None else ("met   " if ok else "MISSED")
            done.append(f"  [{verdict}] N={n} {text}")

        def known(*xs: float) -> bool:
            return not any(math.isnan(x) for x in xs)

        a, b = median(ours.detect), median(serf.detect)
        goal(f"median detection {fmt(a)} s <= serf's {fmt(b)} s", a <= b if known(a, b) else None)
        a, b = median(ours.cpu_pct), median(serf.cpu_pct)
        goal(
            f"idle CPU per node {fmt(a, 3)} % <= {GOAL_CPU_RATIO:g} x serf's {fmt(b, 3)} %",
            a <= GOAL_CPU_RATIO * b if known(a, b) else None,
        )
        a = max(ours.rss, default=math.nan)
        goal(
            f"RSS per node (max) {fmt(a, 1)} MiB <= {GOAL_RSS_MIB:g} MiB",
            a <= GOAL_RSS_MIB if known(a) else None,
        )
        a, b = median(ours.bytes_s), median(serf.bytes_s)
        goal(
            f"idle bytes/s per node {fmt(a, 1)} <= serf's {fmt(b, 1)}",
            a <= b if known(a, b) else None,
        )

        a, b = median(ours.cpu_pct), median(serf.cpu_pct)
        met(
            f"idle CPU per node {fmt(a, 3)} % <= 0.5 x serf's {fmt(b, 3)} % ({ratio(a, b)})",
            a <= 0.5 * b if known(a, b) else None,
        )
        a, b, c = median(ours.detect), median(serf.detect), median(kin.detect)
        met(f"detection median {fmt(a)} s <= serf's {fmt(b)} s", a <= b if known(a, b) else None)
        met(f"detection median {fmt(a)} s <= kinship's {fmt(c)} s", a <= c if known(a, c) else None)
        m = max(ours.detect, default=math.nan)
        met(
            f"detection max {fmt(m)} s <= 1.5 x median {fmt(a)} s",
            m <= 1.5 * a if known(a, m) else None,
        )
        if ours.tool:
            fp = ours.fp_refutes + ours.fp_seen
            met(
                f"0 false positives (idle window + trials): {ours.fp_refutes} refutation(s), "
                f"{ours.fp_seen} seen in polls" + ("  (Done-when: at N=100)" if n != 100 else ""),
                fp == 0,
            )
    print_table(rows, ("metric", "edge-agent", "serf", "kinship", "ours/serf", "ours/kinship"))
    return [*goals, "", "Issue 21, Done when (edge-agent; measured in this run):", *done]


def report_sim(s: SimResult) -> None:
    rows = [
        (
            "join convergence, all through one seed (sim s)",
            fmt(s.join_s, 1) if not math.isnan(s.join_s) else "bootstrapped (see note)",
        ),
        ("detection: median over live nodes (s)", fmt(s.detect_median)),
        ("detection: max over live nodes (s)", fmt(s.detect_max)),
        (
            "detection: first suspect / first dead (s)",
            f"{fmt(s.first_suspect)} / {fmt(s.first_dead)}",
        ),
        ("dead spread, first to last node (gossip rounds of 0.2 s)", fmt(s.dead_spread_rounds, 1)),
        (
            "fresh alive spread, seed to last node (rounds): median/max of 3",
            f"{fmt(s.alive_rounds_median, 1)} / {fmt(s.alive_rounds_max, 1)}",
        ),
        ("false positives: dead events about live nodes (window+tail)", str(s.fp_dead)),
        ("  distinct live nodes declared dead", str(s.fp_dead_members)),
        ("suspect events (observer x member) about live nodes", str(s.fp_suspect)),
        (
            "  distinct live nodes suspected (of them not stalled)",
            f"{s.fp_suspect_members} ({s.fp_suspect_unstalled})",
        ),
        ("  refutations (suspected nodes answering 'I am alive')", str(s.refutes)),
        ("dead events about live nodes during join/detection (no loss)", str(s.fp_dead_join)),
        ("packets sent per node per s (FP phase)", fmt(s.packets_per_node_s, 1)),
        ("datagram bytes sent per node per s (FP phase)", fmt(s.bytes_per_node_s, 0)),
        (
            "datagrams decoded whole ("
            + ("AES-GCM, " if s.encrypted else "plaintext, ")
            + "CRC, LZW); refused",
            f"{s.datagrams_decoded} ; {sum(s.bad_input.values())} {s.bad_input or ''}".strip(),
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    print(f"{'metric'.ljust(widths[0])}  edge-agent (simulator, N={s.n})")
    print("-" * (widths[0] + 34))
    for a, b in rows:
        print(f"{a.ljust(widths[0])}  {b}")
    for note in s.notes:
        print(f"  note: {note}")
    print(f"  simulator wall time: {s.wall_s:.0f} s")


# --- main -----------------------------------------------------------------------------------


async def real_part(
    args: argparse.Namespace, procs: ProcSet, nft: Nft, root: Path
) -> dict[tuple[str, int], RealResult]:
    results: dict[tuple[str, int], RealResult] = {}
    # one keep-alive connection per node polled at once (aiohttp's default caps them at 100)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for n in args.sizes:
            for tool in args.tools:
                t = time.monotonic()
                print(f"# {tool} N={n} ...", file=sys.stderr, flush=True)
                results[(tool, n)] = await run_real(tool, n, args, procs, session, nft, root)
                print(f"#   done in {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default="5,10", help="cluster sizes, comma-separated")
    ap.add_argument("--trials", type=int, default=5, help="failure-detection trials per N")
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument(
        "--join-runs", type=int, default=3, help="cluster builds timed for join convergence"
    )
    ap.add_argument("--sim-nodes", type=int, default=1000)
    ap.add_argument("--sim-seed", type=int, default=7)
    ap.add_argument(
        "--sim-protocol-join",
        action="store_true",
        help="build the simulated cluster by joining through one seed (minutes of wall time)",
    )
    ap.add_argument(
        "--sim-plaintext",
        action="store_true",
        help="simulate without the cluster key (the packet path minus AES-GCM)",
    )
    ap.add_argument("--keep-logs", action="store_true", help="keep the nodes' stderr logs")
    ap.add_argument(
        "--plaintext",
        action="store_true",
        help="real processes without the cluster key (default: every node of each tool "
        "shares one 32-byte key, the production setting)",
    )
    ap.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help="real-process tools, comma-separated (default: edge-agent,serf,kinship)",
    )
    ap.add_argument(
        "--spawn-batch",
        type=int,
        default=40,
        help="start nodes this many at a time, each batch once the last one listens",
    )
    part = ap.add_mutually_exclusive_group()
    part.add_argument("--skip-sim", action="store_true")
    part.add_argument("--sim-only", action="store_true")
    args = ap.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if any(n < 2 for n in args.sizes) or args.trials < 1 or args.join_runs < 1:
        ap.error("sizes must be >= 2, trials and join runs >= 1")
    args.tools = [x.strip() for x in args.tools.split(",") if x.strip()]
    if not args.tools or not set(args.tools) <= set(TOOLS) or args.spawn_batch < 1:
        ap.error(f"--tools takes some of {','.join(TOOLS)}; --spawn-batch >= 1")
    # one key per run, base64 of 32 random bytes, as every tool reads it
    args.key = None if args.plaintext else base64.b64encode(os.urandom(32)).decode()
    args.kinship_python = ""

    started = time.monotonic()
    results: dict[tuple[str, int], RealResult] = {}
    sim: SimResult | None = None
    root = Path(tempfile.mkdtemp(prefix="edge-bench-membership-"))
    keep = args.keep_logs
    nft = Nft()
    try:
        if not args.sim_only:
            if "serf" in args.tools and not Path(SERF).exists():
                raise HarnessError("serf not found (Debian package serf)")
            if "kinship" in args.tools:
                args.kinship_python = ensure_venv(
                    lambda m: print(f"# {m}", file=sys.stderr, flush=True)
                )
            ensure_fds(max(args.sizes))
            compile_agent()  # load bytecode like an installed node, not compile at each start
            with ProcSet() as procs:
                nft.open()
                try:
                    results = asyncio.run(real_part(args, procs, nft, root))
                finally:
                    nft.close()
        if not args.skip_sim:
            print(f"# simulator N={args.sim_nodes} ...", file=sys.stderr, flush=True)
            sim = run_sim(
                args.sim_nodes,
                args.sim_seed,
                lambda m: print(f"#   {m}", file=sys.stderr, flush=True),
                protocol_join=args.sim_protocol_join,
                encrypt=not args.sim_plaintext,
            )
    except HarnessError as e:
        print(f"harness error: {e}", file=sys.stderr)
        keep = True
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"# logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"Membership benchmark (issues 3, 21), {time.strftime('%Y-%m-%d %H:%M:%S')}")
    goals: list[str] = []
    if results:
        print(
            f"\nReal processes on {LOOPBACK}: sizes {args.sizes}, {args.join_runs} cluster "
            f"builds timed for join, {args.trials} detection trials per N, idle window "
            f"{args.idle_seconds:g} s, view polls every "
            + ", ".join(f"{poll_interval(n) * 1000:.0f} ms (N={n})" for n in args.sizes)
        )
        print(
            "encryption: "
            + (
                "off (--plaintext)"
                if args.plaintext
                else "on: every node of a tool shares one 32-byte key (edge-agent "
                "keyring_file, serf -encrypt, kinship keys=[...]: AES-GCM for the first "
                "two, XChaCha20-Poly1305 for kinship)"
            )
        )
        if "kinship" in args.tools:
            print(
                f"kinship {KINSHIP_VERSION} (its own venv, bench/.venv-kinship): "
                "bench/_kinship_node.py, Config.lan() (memberlist's LAN timings), "
                "one task reading its events"
            )
        print(
            f"start: node 0, then the rest {args.spawn_batch} at a time (a batch once the "
            "last one listens); deadlines grow by 2 s per node over 40"
        )
        print(
            "bytes/s: IP bytes sent, counted by nftables for every tool (UDP per node by "
            "source port + the cluster's TCP split evenly)"
        )
        print(
            "false positives, from the idle window to the last trial, about members never "
            "killed: refutations (edge-agent's and serf's 'refuting a suspect/dead message' "
            "log line, kinship's Stats.refutations), (observer, member) pairs seen not alive "
            "in the 50 ms polls (serf's view has no suspect state), and kinship's "
            "MemberSuspect/MemberDead events\n"
        )
        goals = report_real(results, args.sizes)
        notes = sorted({f"{r.tool} N={r.n}: {x}" for r in results.values() for x in r.notes})
        for note in notes:
            print(f"  note: {note}")
        print("\nWarning/error lines in the nodes' stderr (count, message with numbers masked):")
        for r in results.values():
            total = sum(r.log_lines.values())
            print(f"  {r.tool} N={r.n}: {total} line(s)")
            for msg, count in r.log_lines.most_common(6):
                print(f"    {count:5d}  {msg}")
        problems = [f"{r.tool} N={r.n}: {p}" for r in results.values() for p in r.problems]
        print("\nProblems seen (agent stderr Tracebacks, odd states, rebuilds):")
        print("\n".join(f"  {p}" for p in problems) if problems else "  none")
    if sim is not None:
        print()
        report_sim(sim)
    if goals:
        print("\nGoals (issue 3):")
        print("\n".join(goals))
    print(f"\nTotal wall time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
