"""The kernel's word that the network changed (agent/shell/netwatch.py): what lets a node
with a derived advertise address follow it without a look every second."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from agent.shell import rejoin
from agent.shell.cluster import Cluster
from agent.shell.config import parse_config
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent

# In a network namespace of its own: a veth pair, then an address on it and a route
# through it; each must be reported, and nothing before them.
_CHILD = """
import asyncio, subprocess
from agent.shell.netwatch import NetWatch

async def main() -> None:
    seen = asyncio.Event()
    w = NetWatch(seen.set)
    assert w.start()
    await asyncio.sleep(0.2)
    assert w.changes == 0, w.changes
    for cmd in (
        "ip link add ea0 type veth peer name ea1",
        "ip link set ea0 up",
        "ip addr add 10.77.0.2/24 dev ea0",
        "ip route add default via 10.77.0.1",
    ):
        seen.clear()
        subprocess.run(cmd.split(), check=True)
        await asyncio.wait_for(seen.wait(), 5)
    print("changes", w.changes)
    w.stop()

asyncio.run(main())
"""


def test_address_route_and_link_changes_are_reported() -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    require(unshare is not None and ip is not None, "unshare (util-linux) and ip (iproute2)")
    require(os.geteuid() == 0, "root, for a network namespace of the test's own")
    assert unshare is not None
    res = subprocess.run(
        [unshare, "--net", sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[-1]) >= 4


async def test_a_derived_address_is_polled_only_without_rtnetlink(tmp_path: Path) -> None:
    """With the kernel's reports the joiner need not look at the address every second."""
    config = parse_config(
        {
            "node": {"name": "d", "data_dir": str(tmp_path)},
            "cluster": {"bind": "0.0.0.0:0", "discover": False},
        }
    )
    cluster = Cluster(config, "d")
    await cluster.start()
    try:
        cluster.peers = lambda: 1  # type: ignore[method-assign]  # not alone: no seeding
        r = cluster.rejoiner
        assert r.busy(0.0)  # derived, not watching: a look a second
        assert r.netwatch.start()
        assert not r.busy(0.0)
        r.netwatch.stop()
        assert r.busy(0.0)
        assert rejoin.FAST_INTERVAL == 1.0
    finally:
        await cluster.leave_and_stop(1.0)
