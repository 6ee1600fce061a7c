"""A fleet of real `edge-agent run` processes on one machine, each its own "host".

Every host is a network namespace with one interface (eth0) plugged into a Linux
bridge. The bridge lives in a dedicated "switch" namespace, so the machine's own
network is never touched: nothing here creates an interface, route or rule outside
the namespaces it made. Each host gets its address, a route for 224.0.0.0/4 (mDNS
needs one; Serf's client fails without it) and a default route via the switch, so
advertise-address detection works as on a real LAN. An extra "farm" host serves
fake origins (`python -m edge_harness.farm`).

Faults are injected as they happen on real networks: kill -9, SIGSTOP/SIGCONT,
unplugging a host (its switch port goes down: carrier lost, addresses and routes
kept), dropping UDP or only multicast with nftables inside the host's namespace,
and restarting a host with the same name at a new address (DHCP).

Every fleet names its namespaces with a prefix of its own, `<family><pid>-<start>-<n>-`:
the family (`eatest-`, `eademo-`, ...), the owning process (its PID and start time, so
a reused PID is not mistaken for the owner) and a counter. Several runs on one machine
(two pytest sessions, a demo and a benchmark) therefore never touch each other's hosts;
a new fleet removes only namespaces of its family whose owner process is gone (a run
that was killed), so a failed run never poisons the next one. Interface names do not
derive from the prefix (`eth0` in a host, `br0` and `p-<label>` in the switch's own
namespace), so a long prefix never hits the kernel's 15-character limit.

Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN), iproute2, and nftables for the UDP faults.
Used by tests/fleet and by `edge-agent demo` when run as root.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import agent
import edge_harness

_PACKAGES = (agent, edge_harness)  # what the processes a fleet spawns import

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
API_PORT = 8080
GOSSIP_PORT = 7946
GATEWAY = 254  # the switch's own address on the bridge (last octet)
FARM_OCTET = 250


class FleetError(RuntimeError):
    pass


# What a poll of a host may raise while the host is not (yet) in the state waited for: it
# is not up or is paused (OSError, TimeoutError), answers an error or garbage
# (FleetError, HTTPException, ValueError for bad JSON), or lacks the key or item looked
# up (LookupError, TypeError on a body that is not the dict expected). Anything else
# (NameError, AttributeError, AssertionError) is a bug in the poll and fails at once.
TRANSIENT: tuple[type[Exception], ...] = (
    OSError,
    FleetError,
    http.client.HTTPException,
    ValueError,
    LookupError,
    TypeError,
)


def missing_prerequisites(need_nft: bool = False) -> list[str]:
    """What this machine lacks to run a fleet (empty = ready)."""
    out = []
    if os.geteuid() != 0:
        out.append("root (network namespaces)")
    if shutil.which("ip") is None:
        out.append("iproute2 (ip)")
    if need_nft and shutil.which("nft") is None:
        out.append("nftables (nft)")
    return out


def run(
    *cmd: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=30)
    if check and res.returncode != 0:
        raise FleetError(f"{' '.join(cmd)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


def namespaces() -> list[str]:
    res = run("ip", "netns", "list", check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def ns_pids(ns: str) -> list[int]:
    res = run("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def delete_namespace(ns: str) -> None:
    """Kill every process in it (by PID), then delete it."""
    for _ in range(50):
        pids = ns_pids(ns)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    run("ip", "netns", "delete", ns, check=False)


def cleanup(prefix: str) -> list[str]:
    """Remove every namespace (and so every veth, bridge and process in it) named prefix*.

    Give it one fleet's own prefix (`Fleet.prefix`); a family's stale leftovers are
    `reap`'s, since other runs of the family may be alive."""
    if not prefix:
        raise ValueError("refusing to clean up with an empty prefix")
    gone = [ns for ns in namespaces() if ns.startswith(prefix)]
    for ns in gone:
        delete_namespace(ns)
    return gone


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), or None if there is none.

    A PID alone can be reused by an unrelated process; a (PID, start time) pair names one
    process for good, so an owner recorded as both is alive exactly when this matches."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # no such process (or it just exited)
        return None
    # field 2, the command name, is in parentheses and may hold spaces; starttime is field 22
    return int(stat[stat.rindex(")") + 2 :].split()[19])


_fleet_numbers = itertools.count()  # several fleets may live in one process


def run_prefix(family: str) -> str:
    """A prefix that no other fleet, alive or dead, in this process or another, has."""
    pid = os.getpid()
    return f"{family}{pid}-{process_start(pid)}-{next(_fleet_numbers)}-"


def reap(family: str) -> list[str]:
    """Remove the namespaces of `family` whose owner process is gone; return their names.

    Namespaces of live owners (another test run, a demo) are left alone, and so are
    names this harness did not make (no owner in them): their owner cannot be known."""
    if not family:
        raise ValueError("refusing to reap with an empty family")
    owner = re.compile(re.escape(family) + r"(\d+)-(\d+)-\d+-")
    gone = []
    for ns in namespaces():
        m = owner.match(ns)
        if m is not None and process_start(int(m[1])) != int(m[2]):
            delete_namespace(ns)
            gone.append(ns)
    return gone


# --- reaching into a namespace from this process -----------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def ns_socket(ns: str, addr: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """A TCP socket connected from inside namespace `ns`.

    setns() moves only the calling thread, so a short-lived thread enters the namespace,
    connects, and exits: the socket stays in the namespace, this process stays out.
    """
    result: list[socket.socket | BaseException] = []

    def worker() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.create_connection(addr, timeout=timeout))
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join(timeout + 1)
    if not result:
        raise TimeoutError(f"connecting to {addr} in {ns}")
    r = result[0]
    if isinstance(r, BaseException):
        raise r
    return r


class _NsConnection(http.client.HTTPConnection):
    def __init__(self, ns: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.ns = ns

    def connect(self) -> None:
        self.sock = ns_socket(self.ns, (self.host, self.port or 80), self.timeout or 5.0)


def ns_http(
    ns: str,
    method: str,
    path: str,
    port: int = API_PORT,
    timeout: float = 5.0,
    body: Any = None,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    conn = _NsConnection(ns, host, port, timeout)
    try:
        if body is None:
            conn.request(method, path, headers=dict(headers or {}))
        else:
            data = json.dumps(body).encode()
            conn.request(
                method, path, data, {"Content-Type": "application/json", **(headers or {})}
            )
        r = conn.getresponse()
        body = r.read()
        if "json" in r.headers.get("Content-Type", ""):
            return r.status, json.loads(body)
        return r.status, body.decode(errors="replace")
    finally:
        conn.close()


# --- the fleet ---------------------------------------------------------------------------


@dataclass
class Host:
    fleet: Fleet
    name: str  # node name
    index: int
    ip: str
    ns: str
    port_name: str  # its port (veth end) in the switch namespace
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_cluster: str = ""
    stopped: bool = False
    started_at: float = 0.0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    leds_toml: str = "[leds]\nenabled = false\n"  # "[leds]\n" for the default (mock) pins
    with_token: bool = True  # False: a node without the fleet token (it refuses writes)
    site: str = ""  # [node] site (failure domain); "" = none
    node_extra: str = ""  # more lines for the [node] table
    switch_ns: str = ""  # the namespace of the switch (bridge) it is plugged into; "" = the fleet's
    gateway: str = ""  # its default route; "" = the fleet's switch address
    api_listen: str = (
        f"127.0.0.1:{API_PORT}"  # [api] listen ("0.0.0.0:8080": other hosts scrape it)
    )

    # --- processes ---
    def config_text(self) -> str:
        f = self.fleet
        return (
            f'[node]\nname = "{self.name}"\ndata_dir = "{self.dir / "data"}"\n'
            + (f'site = "{self.site}"\n' if self.site else "")
            + self.node_extra
            + f'tags = {{ host = "{self.ns}" }}\n'
            f'[cluster]\nname = "{f.cluster}"\nbind = "0.0.0.0:{GOSSIP_PORT}"\n'
            f"{self.extra_cluster}\n"
            f'[api]\nlisten = "{self.api_listen}"\n'
            + (f'token_file = "{f.token_file}"\n' if self.with_token else "")
            + f"{self.leds_toml}"
            f'[log]\nlevel = "{f.log_level}"\n' + f.origins_toml
        )

    def start(self) -> Host:
        if self.proc is not None and self.proc.poll() is None:
            raise FleetError(f"{self.name} is already running")
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "agent.toml"
        cfg.write_text(self.config_text())
        log = (self.dir / "agent.log").open("ab")
        log.write(f"--- start {time.strftime('%H:%M:%S')} at {self.ip}\n".encode())
        log.flush()
        self.proc = self.fleet.spawn(
            self, [sys.executable, "-m", "agent.shell.cli", "run", "--config", str(cfg)], log
        )
        self.started_at = time.monotonic()
        self.stopped = False
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no leave, no goodbye; the cluster must notice by itself."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(5)
        return self.proc.returncode

    def pause(self) -> None:
        """SIGSTOP: a node stalled (SD I/O, busy loop) but not dead."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def log(self) -> str:
        """Everything logged by the processes this host ran (agent, serf, avahi...)."""
        if not self.dir.exists():
            return ""
        return "".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("*.log")))

    # --- network faults ---
    def unplug(self) -> None:
        """The cable is pulled: the host's switch port goes down (carrier lost)."""
        run("ip", "-n", self.switch_ns or self.fleet.switch, "link", "set", self.port_name, "down")

    def plug(self) -> None:
        run("ip", "-n", self.switch_ns or self.fleet.switch, "link", "set", self.port_name, "up")

    def block_udp(self) -> None:
        """Drop all UDP in and out (TCP still flows): gossip must fall back to TCP."""
        self._nft("udp", "meta l4proto udp drop")

    def block_multicast(self) -> None:
        """Drop mDNS only (multicast and port 5353): discovery is dead, gossip is fine."""
        self._nft(
            "mcast", "ip daddr 224.0.0.0/4 drop\n  udp dport 5353 drop\n  udp sport 5353 drop"
        )

    def isolate_from(self, ips: Iterable[str]) -> None:
        """Drop everything to and from ``ips``: one side of a network partition (the
        other hosts, the farm and the switch stay reachable)."""
        addrs = ", ".join(sorted(ips))
        self._nft("split", f"ip saddr {{ {addrs} }} drop\n  ip daddr {{ {addrs} }} drop")

    def unblock(self) -> None:
        self.fleet.exec(self, "nft", "delete", "table", "inet", "eafault", check=False)

    def _nft(self, what: str, rules: str) -> None:
        self.unblock()
        script = (
            "table inet eafault {\n"
            " chain input { type filter hook input priority 0; policy accept;\n"
            f"  {rules}\n }}\n"
            " chain output { type filter hook output priority 0; policy accept;\n"
            f"  {rules}\n }}\n"
            "}\n"
        )
        self.fleet.exec(self, "nft", "-f", "-", input=script)

    def move(self, new_ip: str) -> None:
        """Give the host a new address (DHCP lease changed). A running agent follows it
        by itself; a stopped one finds it when started."""
        f = self.fleet
        f.exec(self, "ip", "addr", "flush", "dev", "eth0")
        f.exec(self, "ip", "addr", "add", f"{new_ip}/24", "dev", "eth0")
        f._routes(self.ns, self.gateway or None)
        self.ip = new_ip

    def unaddress(self) -> None:
        """Take the host's address and routes away: no DHCP lease yet (a Pi that boots
        before its network). ``move`` gives it one."""
        self.fleet.exec(self, "ip", "addr", "flush", "dev", "eth0")

    # --- views ---
    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        return ns_http(self.ns, "GET", path, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request with the fleet's write token (every node of a fleet shares it)."""
        auth = {"Authorization": f"Bearer {self.fleet.token}"}
        return ns_http(self.ns, method, path, body=body, headers=auth)

    def origins(self) -> dict[str, dict[str, Any]]:
        """This host's /v1/origins, by id."""
        status, body = self.get("/v1/origins")
        if status != 200:
            raise FleetError(f"{self.name}: /v1/origins answered {status}")
        return {o["id"]: o for o in body}

    def members(self) -> dict[str, tuple[str, str]]:
        """name -> (state, addr) as this host sees them."""
        status, body = self.get("/v1/members")
        if status != 200:
            raise FleetError(f"{self.name}: /v1/members answered {status}")
        return {m["name"]: (m["state"], m["addr"]) for m in body}

    def alive_names(self) -> set[str]:
        return {n for n, (state, _) in self.members().items() if state == "alive"}

    def health(self) -> dict[str, Any]:
        _, body = self.get("/v1/health")
        return body if isinstance(body, dict) else {}


class Fleet:
    """Build with `Fleet(workdir, prefix=family)`, `add(n)` hosts, then `start()` them.

    `prefix` names the family (`eatest-`); the fleet's own namespaces are named
    `self.prefix` + label, unique to this fleet (see `run_prefix`). Use it as a context
    manager (or call close()): teardown kills every process and deletes every
    namespace it made, whatever happened in between, and nothing else.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        prefix: str = "eatest-",
        cluster: str = "edge",
        subnet: str = "10.231.0",
        log_level: str = "info",
        origins_toml: str = "",
    ) -> None:
        missing = missing_prerequisites()
        if missing:
            raise FleetError("the fleet harness needs " + ", ".join(missing))
        self.family = prefix
        self.prefix = run_prefix(prefix)
        self.workdir = workdir
        self.cluster = cluster
        self.subnet = subnet
        self.log_level = log_level
        self.origins_toml = origins_toml
        # the fleet write token, shared by every node as a real fleet shares it
        self.token = secrets.token_hex(16)
        self.token_file = workdir / "fleet-token"
        self.switch = f"{self.prefix}switch"
        self.hosts: list[Host] = []
        self.extra: dict[str, Host] = {}  # serf, avahi, farm hosts by ns
        self._procs: list[subprocess.Popen[bytes]] = []
        self._next_octet = 1
        reap(prefix)  # only runs that died; live ones (other test sessions) keep theirs
        workdir.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        try:
            self._make_switch()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- topology ---
    def _make_switch(self) -> None:
        sw = self.switch
        run("ip", "netns", "add", sw)
        run("ip", "-n", sw, "link", "set", "lo", "up")
        run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        # the switch forwards multicast at once (no IGMP snooping surprises, no STP delay)
        run("ip", "-n", sw, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        run("ip", "-n", sw, "addr", "add", f"{self.subnet}.{GATEWAY}/24", "dev", "br0")
        run("ip", "-n", sw, "link", "set", "br0", "up")

    def _routes(self, ns: str, gateway: str | None = None) -> None:
        gw = gateway or f"{self.subnet}.{GATEWAY}"
        run("ip", "-n", ns, "route", "replace", "224.0.0.0/4", "dev", "eth0")
        run("ip", "-n", ns, "route", "replace", "default", "via", gw)

    def _plug(
        self,
        label: str,
        octet: int,
        *,
        switch: str | None = None,
        bridge: str = "br0",
        subnet: str | None = None,
    ) -> tuple[str, str, str]:
        """A new namespace `label` with eth0 at `subnet`.`octet`/24, plugged into `bridge`
        of namespace `switch` (default: the fleet's switch and subnet), whose address
        (.254) is its default route."""
        switch = switch or self.switch
        subnet = subnet or self.subnet
        ns = f"{self.prefix}{label}"
        port = f"p-{label}"[:15]
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run(
            "ip",
            "-n",
            switch,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        run("ip", "-n", switch, "link", "set", port, "master", bridge)
        run("ip", "-n", switch, "link", "set", port, "up")
        ip = f"{subnet}.{octet}"
        # an IPv6 link-local address usable at once (no DAD wait): Serf's mDNS poll
        # queries IPv4 and IPv6 together and gives up on both if the IPv6 send fails
        run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        self._routes(ns, f"{subnet}.{GATEWAY}")
        return ns, port, ip

    def add(self, name: str, extra_cluster: str = "", label: str | None = None) -> Host:
        """A new host (namespace, switch port, address) for node `name`; not started."""
        octet = self._next_octet
        self._next_octet += 1
        label = label or name
        ns, port, ip = self._plug(label, octet)
        h = Host(self, name, octet, ip, ns, port, self.workdir / label, extra_cluster=extra_cluster)
        h.dir.mkdir(parents=True, exist_ok=True)
        self.hosts.append(h)
        return h

    def add_many(self, n: int, extra_cluster: str = "", stem: str = "n") -> list[Host]:
        return [self.add(f"{stem}{i + 1}", extra_cluster) for i in range(n)]

    def new_ip(self) -> str:
        octet = self._next_octet
        self._next_octet += 1
        return f"{self.subnet}.{octet}"

    def add_plain(self, label: str) -> Host:
        """A namespace host for something that is not an agent (serf, avahi, the farm)."""
        octet = FARM_OCTET if label == "farm" else self._next_octet
        if label != "farm":
            self._next_octet += 1
        ns, port, ip = self._plug(label, octet)
        h = Host(self, label, octet, ip, ns, port, self.workdir / label)
        h.dir.mkdir(parents=True, exist_ok=True)
        self.extra[label] = h
        return h

    # --- processes ---
    def spawn(
        self, host: Host, argv: list[str], log: Any, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        # `ip netns exec` may run another interpreter's site (sudo): point it at the
        # runtime package and this harness wherever they are
        paths = dict.fromkeys(str(Path(m.__file__ or "").resolve().parents[1]) for m in _PACKAGES)
        penv = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(env or {})}
        penv.pop("NOTIFY_SOCKET", None)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.ns, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=penv,
            cwd=host.dir,
            start_new_session=True,
        )
        self._procs.append(proc)
        host.procs.append(proc)
        return proc

    def exec(
        self, host: Host, *cmd: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", host.ns, *cmd, check=check, input=input)

    def start(self, hosts: Iterable[Host] | None = None) -> None:
        for h in self.hosts if hosts is None else hosts:
            h.start()

    def start_farm(
        self, count: int = 20, port: int = 8000, modes: dict[str, str] | None = None
    ) -> str:
        """The origin farm in its own namespace; returns its base URL (origin i: /o/i)."""
        farm = self.add_plain("farm")
        log = (farm.dir / "farm.log").open("ab")
        argv = [sys.executable, "-m", "edge_harness.farm", "--host", farm.ip, "--port", str(port)]
        argv += ["--count", str(count)]
        for oid, mode in (modes or {}).items():
            argv += ["--mode", f"{oid}={mode}"]
        farm.proc = self.spawn(farm, argv, log)
        wait(lambda: "farm ready" in (farm.dir / "farm.log").read_text(), 15, "the farm")
        return f"http://{farm.ip}:{port}"

    def start_serf(
        self,
        label: str = "serf",
        node: str | None = None,
        join: Iterable[str] = (),
        host: Host | None = None,
    ) -> Host:
        """A Debian `serf agent -discover=<cluster>` on its own host (RPC on its loopback)."""
        h = host or self.add_plain(label)
        argv = [
            "serf",
            "agent",
            f"-node={node or label}",
            f"-bind={h.ip}:{GOSSIP_PORT}",
            f"-discover={self.cluster}",
            "-rpc-addr=127.0.0.1:7373",
            "-log-level=debug",
        ]
        argv += [f"-join={j}" for j in join]
        h.proc = self.spawn(h, argv, (h.dir / "serf.log").open("ab"))
        h.started_at = time.monotonic()
        return h

    def serf_members(self, h: Host) -> dict[str, str]:
        """name -> status, from `serf members` run on the serf host."""
        res = self.exec(h, "serf", "members", "-rpc-addr=127.0.0.1:7373", check=False)
        out = {}
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0]] = parts[2]
        return out

    # --- views ---
    def partition(self, *sides: Iterable[Host]) -> None:
        """Split the hosts into sides that cannot reach each other; ``heal`` undoes it."""
        groups = [list(side) for side in sides]
        for i, side in enumerate(groups):
            others = [h.ip for j, g in enumerate(groups) if j != i for h in g]
            for h in side:
                h.isolate_from(others)

    def heal(self) -> None:
        for h in self.hosts:
            h.unblock()

    def running(self) -> list[Host]:
        return [h for h in self.hosts if h.alive() and not h.stopped]

    def converged(self, hosts: Iterable[Host] | None = None, names: set[str] | None = None) -> bool:
        """Every given host sees exactly `names` (default: all running hosts) alive."""
        group = list(self.running() if hosts is None else hosts)
        want = names if names is not None else {h.name for h in group}
        for h in group:
            try:
                if not want <= h.alive_names():
                    return False
            except (OSError, FleetError, http.client.HTTPException):
                return False
        return True

    def wait_converged(
        self,
        timeout: float = 30.0,
        hosts: Iterable[Host] | None = None,
        names: set[str] | None = None,
    ) -> float:
        t0 = time.monotonic()
        group = list(self.running() if hosts is None else hosts)
        wait(lambda: self.converged(group, names), timeout, "the fleet to converge", self.describe)
        return time.monotonic() - t0

    def describe(self) -> str:
        lines = []
        for h in self.hosts:
            try:
                view = ", ".join(f"{n}={s}" for n, (s, _) in sorted(h.members().items()))
            except TRANSIENT as e:  # a host that cannot answer is part of the picture
                view = f"({type(e).__name__}: {e})"
            lines.append(f"{h.name} {h.ip} {'up' if h.alive() else 'down'}: {view}")
        return "\n".join(lines)

    # --- teardown ---
    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGCONT)
                    p.kill()
        for p in self._procs:
            # a process in uninterruptible sleep outlives this wait; deleting its
            # namespace below kills it by PID anyway
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        cleanup(self.prefix)


def wait(
    fn: Callable[[], Any],
    timeout: float,
    what: str,
    explain: Callable[[], str] | None = None,
    interval: float = 0.1,
) -> Any:
    """Poll fn until truthy, or raise TimeoutError (with explain()) at the deadline."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except TRANSIENT as e:  # the thing polled may not be up yet (see TRANSIENT)
            last = e
        time.sleep(interval)
    detail = f"\n{explain()}" if explain else ""
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what} (last error: {last}){detail}"
    )
