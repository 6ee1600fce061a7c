"""The harness itself: runs on one machine must not delete each other's hosts.

Two fleets of one family ("eaown-"), one in this process and one in a child process,
are alive at once; building the second must not remove the first's namespaces. The
child then dies without tearing down (a killed test run): the next fleet built removes
the dead run's namespaces, and only those.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge_harness.fleet import Fleet, namespaces
from tests.fleet.conftest import require_fleet

FAMILY = "eaown-"

# builds a fleet with one host, prints its namespaces, then waits for a line on stdin
# and dies without closing the fleet (os._exit: no teardown, as under kill -9)
CHILD = """
import os, sys
from pathlib import Path
from edge_harness.fleet import Fleet
f = Fleet(Path(sys.argv[1]), prefix=sys.argv[2])
h = f.add_plain("x")
print(f.switch, h.ns, flush=True)
sys.stdin.readline()
os._exit(0)
"""


def _child(workdir: Path) -> tuple[subprocess.Popen[str], set[str]]:
    root = Path(__file__).resolve().parents[2]
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(workdir), FAMILY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    assert p.stdout is not None
    line = p.stdout.readline()  # blocks until the child's fleet is built (or it died)
    assert line, f"the child fleet failed to start (exit {p.wait(10)})"
    return p, set(line.split())


def test_concurrent_fleets_keep_their_hosts_and_stale_ones_are_reaped(tmp_path: Path) -> None:
    require_fleet()
    with Fleet(tmp_path / "mine", prefix=FAMILY) as mine:
        h = mine.add_plain("x")
        own = {mine.switch, h.ns}
        assert own <= set(namespaces())

        child, theirs = _child(tmp_path / "theirs")  # a second run, alive at once
        try:
            assert not own & theirs, "two runs must not share namespace names"
            assert own <= set(namespaces()), "the second run removed the first one's hosts"
            assert theirs <= set(namespaces())
        finally:
            assert child.stdin is not None
            child.stdin.write("\n")
            child.stdin.close()
            assert child.wait(10) == 0
        assert theirs <= set(namespaces()), "the dead run left its namespaces (as kill -9 does)"

        with Fleet(tmp_path / "third", prefix=FAMILY) as third:  # the next run starts
            left = set(namespaces())
            assert not theirs & left, "the dead run's namespaces were not removed"
            assert own <= left, "the next run removed a live run's hosts"
            assert third.switch in left
        assert third.switch not in set(namespaces())
    assert not own & set(namespaces())
