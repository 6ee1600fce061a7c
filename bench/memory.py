"""Memory of an idle node against the import floor, and per origin (issue 21, item 2).

    .venv/bin/python bench/memory.py [--seconds 20] [--origins 1000] [--big 100000]

Measured in one run, each from /proc/PID/status (VmRSS: resident now):

* **idle**: one `edge-agent run`, encryption on (a keyring file, the production
  setting), no origins, LEDs off, mDNS off, after --seconds idle;
* **import floor**: a bare interpreter that imports exactly the modules that idle agent
  had loaded (dumped at its exit, bench/_module_dump.py) other than the agent's own,
  with the start-up settings `edge-agent run` makes (a lazily loaded CA store, no system
  MIME table) and the same heap trim: what the libraries themselves cost;
* **with origins**: the same node checking --origins origins of a local farm every
  --interval s, and --big origins every --big-interval s (long, so the machine is not
  measuring its own load): the catalogue, placement, engine entries and history.
  Per-origin cost = (VmRSS with N - VmRSS idle) / N.

Goals (issue 21): idle <= 44 MiB and within 1 MiB of the floor; <= 50 MiB with 1,000
origins. Exits 1 only if the harness could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from _common import (
    MIB,
    PYTHON,
    REPO,
    Children,
    HarnessError,
    cancel_on_signals,
    compile_agent,
    run_async_main,
    start_agent,
    start_farm,
    status_kib,
)

BENCH = Path(__file__).resolve().parent
GOAL_IDLE_MIB = 44.0
GOAL_FLOOR_MIB = 1.0
GOAL_1000_MIB = 50.0

#: the floor process: cmd_run's start-up settings, the modules, the heap trim, then wait
FLOOR = """
import sys
from agent.shell.cli import lazy_ca_store
lazy_ca_store()
import mimetypes
mimetypes.knownfiles = []
for k in [m for m in sys.modules if m == "agent" or m.startswith("agent.")]:
    del sys.modules[k]
failed = 0
for name in open(sys.argv[1]).read().split():
    if name == "agent" or name.startswith(("agent.", "_module_dump", "__main__")):
        continue
    try:
        __import__(name)
    except Exception:
        failed += 1
import ctypes, gc
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
print(f"ready {failed}", flush=True)
sys.stdin.read()
"""


def mib(pid: int) -> float:
    return status_kib(pid)["VmRSS"] * 1024 / MIB


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables for the children started inside, then put them back."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def idle_agent(
    children: Children,
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    keyring: Path,
    modules: Path,
) -> float:
    """VmRSS MiB of an idle node; the modules it loaded are written to ``modules``."""
    argv = [
        PYTHON,
        "-c",
        "import sys, _module_dump\nfrom agent.shell.cli import main\nsys.exit(main(sys.argv[1:]))",
    ]
    path = os.pathsep.join([str(BENCH), str(REPO)])
    with environ(EA_MODULES_OUT=str(modules), PYTHONPATH=path):
        agent = await start_agent(
            children, session, "idle", targets=[], interval=10.0, keyring_file=keyring, argv=argv
        )
    try:
        await asyncio.sleep(args.seconds)  # idle: what a node settles at
        agent.check_alive()
        return mib(agent.pid)
    finally:
        children.stop(agent.proc)  # it writes the module list as it exits


def import_floor(modules: Path) -> tuple[float, int, int]:
    """(VmRSS MiB, modules listed, imports that failed) of the floor process."""
    p = subprocess.Popen(
        [PYTHON, "-c", FLOOR, str(modules)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert p.stdout is not None
        line = p.stdout.readline().decode().split()
        if not line or line[0] != "ready":
            raise HarnessError("the import-floor process did not start")
        time.sleep(1.0)  # let the allocator settle as the agent's did
        return mib(p.pid), len(modules.read_text().split()), int(line[1])
    finally:
        p.kill()
        p.wait()


async def with_origins(
    children: Children,
    session: aiohttp.ClientSession,
    n: int,
    interval: float,
    settle: float,
    keyring: Path,
) -> float:
    farm = await start_farm(children, count=n, processes=1)
    try:
        agent = await start_agent(
            children,
            session,
            f"o{n}",
            targets=[farm.url(i) for i in range(n)],
            interval=interval,
            keyring_file=keyring,
            ready_timeout=600.0,
        )
        try:
            await asyncio.sleep(settle)
            agent.check_alive()
            return mib(agent.pid)
        finally:
            children.stop(agent.proc)
    finally:
        children.stop(farm.proc)


async def main_async(args: argparse.Namespace) -> int:
    cancel_on_signals()
    with Children() as children:
        keyring = children.dir / "keyring"
        keyring.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
        modules = children.dir / "modules.txt"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            idle = await idle_agent(children, session, args, keyring, modules)
            floor, listed, failed = import_floor(modules)
            rows = [(0, idle)]
            for n, interval in ((args.origins, args.interval), (args.big, args.big_interval)):
                if n > 0:
                    rows.append(
                        (
                            n,
                            await with_origins(
                                children, session, n, interval, args.seconds, keyring
                            ),
                        )
                    )
    print(f"idle node, encrypted, no origins, after {args.seconds:g} s: VmRSS {idle:.1f} MiB")
    print(
        f"import floor ({listed} modules the agent had loaded, ours left out"
        f"{f'; {failed} would not import alone' if failed else ''}): VmRSS {floor:.1f} MiB"
    )
    print(f"the agent above its floor: {idle - floor:+.1f} MiB")
    for n, rss in rows[1:]:
        print(f"{n:,} origins: VmRSS {rss:.1f} MiB, {(rss - idle) * 1024 / n:.2f} KiB per origin")
    print()
    print(f"goal idle <= {GOAL_IDLE_MIB:g} MiB: {'met' if idle <= GOAL_IDLE_MIB else 'MISSED'}")
    print(
        f"goal within {GOAL_FLOOR_MIB:g} MiB of the floor: "
        f"{'met' if idle - floor <= GOAL_FLOOR_MIB else 'MISSED'}"
    )
    for n, rss in rows[1:]:
        if n == 1000:
            print(
                f"goal <= {GOAL_1000_MIB:g} MiB with 1,000 origins: "
                f"{'met' if rss <= GOAL_1000_MIB else 'MISSED'}"
            )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="idle/settle time, s (20)")
    ap.add_argument("--origins", type=int, default=1000, help="origins (1000; 0 skips)")
    ap.add_argument("--interval", type=float, default=10.0, help="their check interval (10 s)")
    ap.add_argument("--big", type=int, default=100_000, help="the large catalogue (0 skips)")
    ap.add_argument("--big-interval", type=float, default=3600.0, help="its interval (3600 s)")
    args = ap.parse_args()
    compile_agent()
    return run_async_main(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
