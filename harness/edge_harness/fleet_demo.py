"""`edge-agent demo` as root: five real nodes on a private switch, finding each other by
mDNS alone, then surviving a kill -9 and a pulled cable while you watch.

Built on harness/edge_harness/fleet.py (network namespaces; the machine's own network is untouched).
Everything it made is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edge_harness.fleet import TRANSIENT, Fleet, Host

PREFIX = "eademo-"
NODES = 5
ORIGINS = {"0": "up", "1": "up", "2": "flap:30", "3": "down", "4": "slow:0.2", "5": "up"}


class Narrator:
    """Prints what changes in the nodes' views, one line per change, with a clock."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.t0 = time.monotonic()
        self.views: dict[str, dict[str, str]] = {}

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    def poll(self) -> None:
        for h in self.fleet.hosts:
            if not h.alive():
                self.views.pop(h.name, None)
                continue
            try:
                view = {n: s for n, (s, _) in h.members().items() if n != h.name}
            except TRANSIENT:  # not up yet, or paused
                continue
            old = self.views.get(h.name, {})
            changes = [
                f"{n} {s}" for n, s in sorted(view.items()) if old.get(n) != s and s != "left"
            ]
            if changes:
                self.say(f"{h.name} sees: " + ", ".join(changes))
            self.views[h.name] = view

    def watch(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            if until is not None and until():
                self.poll()
                return True
            time.sleep(0.3)
        return False


def _origins(farm_url: str) -> str:
    return "".join(
        f'[[origin]]\nid = "origin-{i}"\nurl = "{farm_url}/o/{i}"\ninterval = "2s"\n'
        f'timeout = "1s"\nrise = 1\nfall = 2\n'
        for i in ORIGINS
    )


def _verdicts(h: Host) -> str:
    _, body = h.get("/v1/origins")
    return " ".join(f"{o['id'].removeprefix('origin-')}:{o['verdict']}" for o in body)


def _scenario(f: Fleet, say: Narrator) -> None:
    hosts = f.hosts
    say.say(f"starting {len(hosts)} nodes, no seeds: they must find each other by mDNS")
    f.start()
    if say.watch(60, f.converged):
        say.say(f"converged: every node sees all {len(hosts)} alive")
    victim, unplugged, mover = hosts[-1], hosts[-2], hosts[1]
    spare = f.new_ip()  # the mover's addresses alternate between its own and this one

    def moved() -> bool:
        try:
            return all(h.members().get(mover.name) == ("alive", mover.ip) for h in hosts)
        except TRANSIENT:  # not up yet, or paused
            return False

    while True:
        say.say(f"origins as {hosts[0].name} sees them: {_verdicts(hosts[0])}")
        say.say(f"kill -9 {victim.name} (no goodbye): the others must notice")
        victim.kill()
        say.watch(
            30,
            lambda: all(say.views.get(h.name, {}).get(victim.name) == "dead" for h in hosts[:-1]),
        )
        say.say(f"restarting {victim.name}")
        victim.start()
        say.watch(30, f.converged)
        say.say(f"pulling {unplugged.name}'s cable for 20 s")
        unplugged.unplug()
        say.watch(20)
        say.say(f"plugging {unplugged.name} back in: it must rejoin without a restart")
        unplugged.plug()
        if say.watch(60, f.converged):
            say.say("healed: every node sees every other alive again")
        old_ip = mover.ip
        mover.move(spare)
        spare = old_ip
        say.say(
            f"{mover.name} gets a new DHCP lease ({old_ip} -> {mover.ip}): "
            "it must move without a restart"
        )
        if say.watch(30, moved):
            say.say(f"every node sees {mover.name} alive at {mover.ip}")
        say.watch(15)


def run_fleet_demo(nodes: int = NODES) -> int:
    print(
        f"edge-agent demo (root): {nodes} nodes in network namespaces '{PREFIX}<pid>-...' on\n"
        "a private bridge, plus an origin farm. Your machine's own network is not touched.\n"
        "Ctrl-C stops.",
        flush=True,
    )

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM tears down exactly like Ctrl-C

    signal.signal(signal.SIGTERM, on_term)
    with tempfile.TemporaryDirectory(prefix="edge-agent-fleet-demo-") as tmp:
        fleet = Fleet(Path(tmp), prefix=PREFIX, subnet="10.232.0", log_level="warning")
        try:
            farm_url = fleet.start_farm(count=len(ORIGINS), modes=ORIGINS)
            fleet.origins_toml = _origins(farm_url)
            fleet.add_many(nodes)
            say = Narrator(fleet)
            say.say(f"origin farm on {farm_url} ({len(ORIGINS)} origins, some flapping)")
            with contextlib.suppress(KeyboardInterrupt):
                _scenario(fleet, say)
        except KeyboardInterrupt:
            pass
        finally:
            print("\nedge-agent demo: tearing down namespaces and processes...", flush=True)
            fleet.close()
    print("edge-agent demo: stopped cleanly", flush=True)
    return 0
