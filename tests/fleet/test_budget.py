"""A Pi-class budget in CI (issue 21 item 5): bench/budget.py's 2-minute version.

Ten `edge-agent run` processes, each in a cgroup of its own (10 % of one core, 96 MiB),
2,000 origins of a real farm checked every 10 s, gossip encrypted: in the 2-minute window
no member may be suspected while every process is alive, no check may start more than
an interval late, no event-loop stall may reach half the watchdog period, and no node
may reach its memory cap. The script waits on conditions with deadlines (the cluster
converged, every origin up) and the kernel enforces the budget: the quota is what a node
may use at most, so the test fails when the agent's own work does not fit in it. Other
load on the host takes CPU from a node only when the cores are saturated by processes
of equal weight (each node's group competes as one nice-0 process); the script prints
the host's other load with its figures.

The cgroups' own test runs first and is quick: the limits hold and every group is
removed after its processes exit, including when they are still running at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_harness.cgroups import MIB, Cgroups, Limits, missing_prerequisites
from tests.conftest import ROOT, require

BUDGET = ROOT / "bench" / "budget.py"


def require_cgroups() -> None:
    missing = missing_prerequisites()
    require(not missing, "cgroups: " + ", ".join(missing))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_cgroups_hold_the_budget_and_are_removed() -> None:
    require_cgroups()
    with Cgroups("eatest-cg-") as cg:
        busy = cg.add("busy", Limits(cpu=0.1, memory=96 * MIB))
        hog = cg.add("hog", Limits(cpu=1.0, memory=32 * MIB))
        spin = subprocess.Popen(busy.wrap([sys.executable, "-c", "while True: pass"]))
        deadline = time.monotonic() + 10
        while spin.pid not in busy.pids():  # it moved itself in before exec
            assert time.monotonic() < deadline, "the process never entered its group"
            time.sleep(0.05)
        c0, t0 = _cpu_seconds(spin.pid), time.monotonic()
        time.sleep(3)  # the measured span, not a synchronisation
        share = (_cpu_seconds(spin.pid) - c0) / (time.monotonic() - t0)
        assert share < 0.15, f"a 10 % quota let it use {share:.0%} of a core"
        assert busy.cpu_stat().throttled > 0
        # 64 MiB touched in a 32 MiB group: the kernel kills it, and the group says so
        touch = "b = bytearray(64 << 20); b[::4096] = b'x' * 16384"
        code = subprocess.run(hog.wrap([sys.executable, "-c", touch]), timeout=60).returncode
        assert code == -signal.SIGKILL
        assert hog.memory_events()[1] >= 1
        peak = hog.memory_peak()
        assert peak is None or 16 * MIB < peak <= 32 * MIB
        dirs = [d for g in cg.groups for d in g.dirs.values()]
    # the spinning process was still running: close() killed it and removed every group
    assert spin.wait(10) == -signal.SIGKILL
    assert not any(d.exists() for d in dirs)
    assert not any(d.exists() for d in cg.parents.values())


@pytest.mark.timeout(900)
def test_ten_nodes_on_a_tenth_of_a_core_for_two_minutes(tmp_path: Path) -> None:
    require_cgroups()
    out = tmp_path / "budget.json"
    argv = [sys.executable, str(BUDGET), "--minutes", "2", "--json", str(out)]
    argv += ["--settle-deadline", "120", "--workdir", str(tmp_path / "nodes")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "harness")])}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        stdout, _ = proc.communicate(timeout=840)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # it stops its nodes and removes its cgroups
        stdout, _ = proc.communicate(timeout=60)
    text = stdout.decode(errors="replace")
    print(text)
    assert proc.returncode == 0, "bench/budget.py could not measure"
    res = json.loads(out.read_text())
    v = res["verdict"]
    assert res["died"] == [], "a node was killed during the window"
    assert v["false_suspicions"]["value"] == 0, "members suspected while all were alive"
    assert v["missed_deadlines"]["value"] == 0, "checks started more than an interval late"
    assert v["largest_stall_s"]["met"], f"a loop stall of {v['largest_stall_s']['value']:.1f} s"
    assert v["memory_peak_mib"]["met"], f"memory peaked at {v['memory_peak_mib']['value']:.1f} MiB"
    for parent in res["cgroup_parents"]:  # the script removed every cgroup it made
        assert not Path(parent).exists(), f"cgroup left behind: {parent}"
