"""A CPU and memory budget per process, enforced by the kernel: one cgroup each.

Why: bench/budget.py asks whether a node keeps its promises (no false suspicions, no
missed checks, no long stalls) on a Pi-class budget, a tenth of one core and 96 MiB. Only
the kernel can impose that on a real process as a small board would: CFS bandwidth
control gives the process its quota of CPU time per period and then stops it until the
next period (as a slow core does, but in bursts), the memory controller caps what it may
hold and records the peak it reached, which /proc does not know for the page cache and
kernel memory charged to the process.

Both cgroup versions, because hosts differ: v2 (``cpu.max``, ``memory.max``,
``memory.peak``) when the unified hierarchy has the cpu and memory controllers, else v1
(``cpu.cfs_quota_us``/``cpu.cfs_period_us``, ``memory.limit_in_bytes``,
``memory.max_usage_in_bytes``), as on a host with an empty cgroup2 mount beside v1.

Where the groups go: under v1, below the caller's own cgroup in each hierarchy, so the
limits and accounting the caller runs under still cover what it starts; under v2, a
cgroup holding processes cannot pass controllers to children (the no-internal-process
rule), so below the root. Each ``Cgroups`` makes one parent named for its owner,
``<family><pid>-<start>`` (as edge_harness.fleet names namespaces), with a leaf per
process. ``close()`` SIGKILLs by PID whatever is still in its leaves (only processes
started into them), waits until they are empty and removes them, on errors and Ctrl-C
too when used as a context manager; a new ``Cgroups`` of the family removes parents
whose owner is gone (a run that was killed).

A process enters its leaf before it execs (``Group.wrap``: a shell writes its own PID
into the leaf, then execs the command with the same PID), so nothing it does runs
outside the budget.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

MIB = 1024 * 1024
PERIOD_US = 100_000  # CFS bandwidth period: the kernel's default, 100 ms


class CgroupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Limits:
    cpu: float  # cores: 0.1 = a tenth of one core (quota = cpu x period)
    memory: int  # bytes (swap is not allowed on top)
    period_us: int = PERIOD_US

    @property
    def quota_us(self) -> int:
        return max(1000, round(self.cpu * self.period_us))  # the kernel's minimum is 1 ms


@dataclass(frozen=True)
class CpuStat:
    periods: int  # CFS periods in which the group ran
    throttled: int  # periods in which it used up its quota and was stopped
    throttled_s: float  # time it spent stopped


@dataclass(frozen=True)
class _Mount:
    path: Path
    root: str  # the hierarchy path mounted there (not "/" inside some containers)


def _mounts() -> tuple[dict[str, _Mount], _Mount | None]:
    """(v1 controller -> its mount, the v2 mount) from /proc/self/mountinfo."""
    v1: dict[str, _Mount] = {}
    v2: _Mount | None = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            mount = _Mount(Path(fields[4]), fields[3])
            if rfields[0] == "cgroup2":
                v2 = v2 or mount
            elif rfields[0] == "cgroup":
                for opt in rfields[2].split(","):
                    v1.setdefault(opt, mount)
    return v1, v2


def _own_paths() -> tuple[dict[str, str], str | None]:
    """(v1 controller -> this process's cgroup path, its v2 path) from /proc/self/cgroup."""
    v1: dict[str, str] = {}
    v2: str | None = None
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctls, path = line.rstrip("\n").split(":", 2)
            if ctls == "":
                v2 = path
            for c in ctls.split(","):
                v1[c] = path
    return v1, v2


def _below(mount: _Mount, path: str) -> Path:
    """Where cgroup ``path`` (as /proc/self/cgroup names it) is under ``mount``."""
    root = mount.root.rstrip("/")
    rel = path[len(root) :] if root and path.startswith(root) else path
    return mount.path / rel.lstrip("/")


def _v2_usable(v2: _Mount | None) -> bool:
    if v2 is None:
        return False
    try:
        have = (v2.path / "cgroup.controllers").read_text().split()
    except OSError:
        return False
    return "cpu" in have and "memory" in have


def missing_prerequisites() -> list[str]:
    """What this machine lacks to give processes a CPU and memory budget (empty = ready)."""
    out = []
    if os.geteuid() != 0:
        out.append("root (to make cgroups)")
    v1, v2 = _mounts()
    if not _v2_usable(v2) and not ("cpu" in v1 and "memory" in v1):
        ctl = [c for c in ("cpu", "memory") if c not in v1]
        out.append(
            "the cgroup cpu and memory controllers (v2 with both, or v1 mounts of "
            + " and ".join(ctl)
            + ")"
        )
    return out


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise CgroupError(f"writing {value!r} to {path}: {e}") from e


def _read_kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[k] = int(v)
    return out


def _pids(d: Path) -> list[int]:
    try:
        return [int(x) for x in (d / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _remove_tree(d: Path, deadline: float) -> bool:
    """SIGKILL every process in ``d`` and below (by PID), wait until empty, rmdir all."""
    if not d.is_dir():
        return True
    for child in sorted(p for p in d.iterdir() if p.is_dir()):
        _remove_tree(child, deadline)
    while True:
        for pid in _pids(d):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            d.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:  # EBUSY until the killed processes have left the group
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def _process_start(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


class Group:
    """One process's leaf: its limits, and what the kernel counted for it."""

    def __init__(self, name: str, version: int, dirs: dict[str, Path], limits: Limits) -> None:
        self.name = name
        self.version = version
        self.dirs = dirs  # controller -> directory (v2: the same one for both)
        self.limits = limits

    @property
    def cpu_dir(self) -> Path:
        return self.dirs["cpu"]

    @property
    def memory_dir(self) -> Path:
        return self.dirs["memory"]

    def _apply(self) -> None:
        lim = self.limits
        if self.version == 2:
            _write(self.cpu_dir / "cpu.max", f"{lim.quota_us} {lim.period_us}")
            _write(self.memory_dir / "memory.max", str(lim.memory))
            with contextlib.suppress(CgroupError, FileNotFoundError):  # no swap configured
                _write(self.memory_dir / "memory.swap.max", "0")
            return
        _write(self.cpu_dir / "cpu.cfs_period_us", str(lim.period_us))
        _write(self.cpu_dir / "cpu.cfs_quota_us", str(lim.quota_us))
        _write(self.memory_dir / "memory.limit_in_bytes", str(lim.memory))
        memsw = self.memory_dir / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # swap accounting on: no swapping past the cap either
            _write(memsw, str(lim.memory))

    def procs_files(self) -> list[Path]:
        return sorted({d / "cgroup.procs" for d in self.dirs.values()})

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this group from its first instruction: a shell moves itself
        in, then execs ``argv`` (same PID, so the caller's Popen.pid is the process)."""
        moves = " && ".join(f"echo $$ > {shlex.quote(str(p))}" for p in self.procs_files())
        return ["/bin/sh", "-c", f'{moves} && exec "$@"', "cgexec", *argv]

    def pids(self) -> list[int]:
        return sorted({p for d in self.dirs.values() for p in _pids(d)})

    def memory_current(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return int((self.memory_dir / name).read_text())

    def memory_peak(self) -> int | None:
        """The most the group held since it was made (None: this v2 kernel has no
        memory.peak, before Linux 5.19)."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.memory_dir / name).read_text())
        except FileNotFoundError:
            return None

    def memory_stat(self) -> dict[str, int]:
        """memory.stat: anon (v2) or rss (v1) is the process's own memory, file its page cache."""
        return _read_kv(self.memory_dir / "memory.stat")

    def memory_events(self) -> tuple[int, int]:
        """(times usage hit the limit, processes OOM-killed in the group)."""
        if self.version == 2:
            ev = _read_kv(self.memory_dir / "memory.events")
            return ev.get("max", 0), ev.get("oom_kill", 0)
        failcnt = int((self.memory_dir / "memory.failcnt").read_text())
        return failcnt, _read_kv(self.memory_dir / "memory.oom_control").get("oom_kill", 0)

    def cpu_stat(self) -> CpuStat:
        st = _read_kv(self.cpu_dir / "cpu.stat")
        if self.version == 2:
            throttled_s = st.get("throttled_usec", 0) / 1e6
        else:
            throttled_s = st.get("throttled_time", 0) / 1e9
        return CpuStat(st.get("nr_periods", 0), st.get("nr_throttled", 0), throttled_s)


class Cgroups:
    """The groups of one run: ``add(name, limits)`` a leaf per process; ``close()`` (or the
    ``with`` block's end) kills what is left in them and removes them all."""

    def __init__(self, family: str = "edge-bench-") -> None:
        missing = missing_prerequisites()
        if missing:
            raise CgroupError("cgroups need " + ", ".join(missing))
        v1, v2 = _mounts()
        own1, _ = _own_paths()
        self.family = family
        pid = os.getpid()
        self.owner = f"{family}{pid}-{_process_start(pid)}"
        self.groups: list[Group] = []
        if _v2_usable(v2):
            assert v2 is not None
            self.version = 2
            # controllers must be enabled from the root down to the leaves' parent
            _write(v2.path / "cgroup.subtree_control", "+cpu +memory")
            self.bases = {"cpu": v2.path, "memory": v2.path}
        else:
            self.version = 1
            self.bases = {c: _below(v1[c], own1.get(c, "/")) for c in ("cpu", "memory")}
        self.reap()
        self.parents = {c: b / self.owner for c, b in self.bases.items()}
        try:
            for d in set(self.parents.values()):
                d.mkdir()
            if self.version == 2:
                _write(self.parents["cpu"] / "cgroup.subtree_control", "+cpu +memory")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reap(self) -> list[Path]:
        """Remove this family's parents whose owner process is gone; return them."""
        owner = re.compile(re.escape(self.family) + r"(\d+)-(\d+)$")
        gone = []
        for base in set(self.bases.values()):
            with contextlib.suppress(OSError):
                for d in base.iterdir():
                    m = owner.match(d.name)
                    stale = m and d.is_dir() and _process_start(int(m[1])) != int(m[2])
                    if stale and _remove_tree(d, time.monotonic() + 10):
                        gone.append(d)
        return gone

    def add(self, name: str, limits: Limits) -> Group:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"bad group name {name!r}")
        dirs = {c: p / name for c, p in self.parents.items()}
        for d in set(dirs.values()):
            d.mkdir()
        g = Group(name, self.version, dirs, limits)
        self.groups.append(g)
        g._apply()
        return g

    def close(self, timeout: float = 10.0) -> list[Path]:
        """Kill what is left in the groups (by PID), remove them; the ones that would not go."""
        deadline = time.monotonic() + timeout
        return [d for d in set(self.parents.values()) if not _remove_tree(d, deadline)]
