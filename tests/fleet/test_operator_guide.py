"""docs/operator-guide.md's 3-Pi walkthrough, followed on a network-namespace fleet.

The guide marks each command block it means to be typed with an HTML comment,
``<!-- walkthrough: ROLE -->``; this test runs every marked block, in the guide's order,
exactly as written (bash -euo pipefail), where the guide says to run it:

- ``laptop`` / ``monitor``: on the laptop (one namespace, its working directory the
  parent of the guide's ``fleet/`` and ``monitor/``); ``monitor (background)`` is started
  and left running (Prometheus);
- ``file PATH``: the block is the content of PATH on the laptop;
- ``card``: once per card, with NAME (pi-a, pi-b, pi-c) and CARD (a directory standing in
  for the card's boot partition) set, as the guide says;
- ``pi``: on every Pi, as over ssh (inside the Pi's namespaces);
- ``hardware``: not run (flashing a card).

Each "Pi" is a network namespace with its own mount namespace (``/etc`` and ``/var/lib``
overlaid, ``/run`` private, so ``/etc/edge-agent``, ``/var/lib/edge-agent`` and
``/run/edge-agent`` are its own, as on a real Pi) and its own UTS namespace (hostname). Names
resolve through each namespace's own ``/etc/hosts`` (pi-a.., and www/api/img.shop.lan for the
origin server, the farm on port 80 answering ``/healthz`` by Host). Two steps need hardware
and are stood in for: flashing, and the first boot's ``edge-agent-boot-config``, which the
test does as docs/image.md describes (secrets installed ``0600`` and deleted from the card,
the config installed once ``edge-agent check-config`` accepts it and renamed ``.applied``,
the hostname set), before starting ``edge-agent run --config /etc/edge-agent/agent.toml``,
the unit's ExecStart.

Between blocks the test checks what the guide says the reader will see: every Pi ``ok``
with a ``healthy`` (green) LED and all three members alive, the apply's diff, every origin
``up`` on every Pi, and Prometheus, told one Pi's SD URL, with ``up == 1`` for all three.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_harness.fleet import Fleet, Host, ns_http
from tests.conftest import require
from tests.fleet.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "operator-guide.md"
PIS = ("pi-a", "pi-b", "pi-c")
SITES = ("www", "api", "img")  # the guide's origins, virtual hosts of the origin server
BLOCK = re.compile(
    r"<!-- walkthrough: (?P<role>[^>]*?) -->\s*\n```(?P<lang>\w*)\n(?P<text>.*?)\n```", re.S
)
CONVERGE_WITHIN = 120.0  # three Pis booting, finding each other by mDNS, green
VERDICTS_WITHIN = 60.0  # origins checked at once when added (a small batch), then gossip
SCRAPE_WITHIN = 120.0  # Prometheus: SD fetch at start, then a 15 s scrape interval


@dataclass
class Block:
    role: str
    lang: str
    text: str

    @property
    def kind(self) -> str:
        return self.role.split()[0]


def guide_blocks() -> list[Block]:
    return [
        Block(m["role"].strip(), m["lang"], m["text"]) for m in BLOCK.finditer(GUIDE.read_text())
    ]


def test_the_guide_marks_its_walkthrough() -> None:
    """The parser finds the blocks the walkthrough needs, in the order it needs them."""
    kinds = [b.kind for b in guide_blocks()]
    assert kinds == [
        "laptop",
        "file",
        "hardware",
        "card",
        "laptop",
        "pi",
        "file",
        "laptop",
        "laptop",
        "file",
        "monitor",
        "monitor",
    ], kinds
    assert all(b.kind != "file" or len(b.role.split()) == 2 for b in guide_blocks())


# -- namespaces ----------------------------------------------------------------------------

SETUP = """
set -eu
d="$1"; shift
mkdir -p "$d/etc/up" "$d/etc/work" "$d/lib/up" "$d/lib/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$d/etc/up,workdir=$d/etc/work" /etc
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$d/lib/up,workdir=$d/lib/work" /var/lib
mount -t tmpfs -o mode=0755 tmpfs /run
cp "$d/hosts" /etc/hosts
mkdir -p /etc/edge-agent /var/lib/edge-agent /run/edge-agent
exec "$@"
"""


class Machine:
    """One namespace host with private /etc, /var/lib, /run and hostname: a Pi or the
    laptop. A holder process keeps the namespaces; commands enter them with nsenter."""

    def __init__(self, fleet: Fleet, host: Host, env: dict[str, str]) -> None:
        self.fleet = fleet
        self.host = host
        self.env = env
        self.root = host.dir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.holder: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None

    def start_holder(self, hosts_text: str) -> None:
        (self.root / "hosts").write_text(hosts_text)
        log = (self.host.dir / "holder.log").open("ab")
        argv = ["unshare", "--mount", "--uts", "--propagation", "private", "--"]
        argv += ["sh", "-c", SETUP, "setup", str(self.root), "sleep", "infinity"]
        self.holder = self.fleet.spawn(self.host, argv, log, env=self.env)
        wait_for(
            lambda: self._ready(),
            10.0,
            f"{self.host.name}: its namespaces",
            lambda: (self.host.dir / "holder.log").read_text(),
        )

    def _ready(self) -> bool:
        assert self.holder is not None and self.holder.poll() is None, "the holder died"
        r = self.run("test -d /run/edge-agent && test -d /etc/edge-agent", check=False)
        return r.returncode == 0

    def enter(self, cwd: Path) -> list[str]:
        """nsenter into the holder's namespaces (entering a mount namespace moves the
        working directory to its root: --wd names the one to keep)."""
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-u", "-n", f"--wd={cwd}", "--"]

    def run(
        self,
        script: str,
        *,
        check: bool = True,
        cwd: Path | None = None,
        extra: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [*self.enter(cwd or self.host.dir), "bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            cwd=cwd or self.host.dir,
            env={**self.env, **(extra or {})},
            timeout=120,
            check=False,
        )
        if check:
            assert r.returncode == 0, (
                f"on {self.host.name}, exit {r.returncode}:\n$ {script}\n{r.stdout}{r.stderr}"
            )
        return r

    def spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """A long-running process inside this machine; Fleet.close() kills it."""
        log = (self.host.dir / log_name).open("ab")
        return self.fleet.spawn(self.host, [*self.enter(self.host.dir), *argv], log, env=self.env)


def wait_for(
    cond: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] | None = None
) -> float:
    start = time.monotonic()
    last: BaseException | None = None
    while True:
        try:
            if cond():
                return time.monotonic() - start
        except (OSError, ValueError, KeyError) as e:
            last = e
        if time.monotonic() - start > timeout:
            more = detail() if detail else ""
            raise AssertionError(
                f"{what}: not within {timeout:.0f}s (last error: {last!r})\n{more}"
            )
        time.sleep(0.25)


def get(ns: str, ip: str, path: str, port: int = 8080) -> tuple[int, Any]:
    return ns_http(ns, "GET", path, port=port, host=ip)


# -- the walkthrough ---------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_the_operator_guide_walkthrough_works_on_a_three_pi_fleet(
    fleet: Callable[..., Fleet],
) -> None:
    for tool, package in (
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("curl", "curl"),
        ("openssl", "openssl"),
        ("prometheus", "prometheus"),
        ("bash", "bash"),
    ):
        require_tool(tool, package)
    require(
        "overlay" in Path("/proc/filesystems").read_text(),
        "the overlay file system (a Pi's own /etc and /var/lib in each namespace)",
    )

    f = fleet(subnet="10.231.7")
    hosts = {name: f.add_plain(name) for name in (*PIS, "laptop", "web")}
    hosts_text = "127.0.0.1 localhost\n" + "".join(f"{hosts[p].ip} {p}\n" for p in PIS)
    hosts_text += f"{hosts['web'].ip} " + " ".join(f"{s}.shop.lan" for s in SITES) + "\n"
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(f.workdir)}
    env.pop("EDGE_AGENT_CONFIG", None)

    # the origin server: the farm on port 80, /healthz answering for the Host it is asked as
    web = hosts["web"]
    farm_log = (web.dir / "farm.log").open("ab")
    f.spawn(
        web,
        [sys.executable, "-m", "edge_harness.farm", "--host", "0.0.0.0", "--port", "80"],
        farm_log,
    )
    wait_for(
        lambda: get(web.ns, web.ip, "/healthz", port=80)[0] in (200, 400), 20.0, "the origin server"
    )

    machines = {name: Machine(f, hosts[name], env) for name in (*PIS, "laptop")}
    for m in machines.values():
        m.start_holder(hosts_text)
    laptop = machines["laptop"]
    home = hosts["laptop"].dir / "home"
    home.mkdir()
    cards = {p: hosts[p].dir / "card" for p in PIS}
    for c in cards.values():
        c.mkdir()

    def detail() -> str:
        out = []
        for p in PIS:
            try:
                out.append(f"{p}: {get(hosts[p].ns, hosts[p].ip, '/v1/health')}")
            except OSError as e:
                out.append(f"{p}: {e!r}")
            log = hosts[p].dir / "agent.log"
            if log.exists():
                out.append(f"--- {p} agent.log tail\n{log.read_text()[-3000:]}")
        return "\n".join(out)

    prometheus: subprocess.Popen[bytes] | None = None
    outputs: list[tuple[Block, str]] = []
    for block in guide_blocks():
        kind = block.kind
        if kind == "hardware":
            continue
        if kind == "file":
            path = home / block.role.split()[1]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text + "\n")
            continue
        if kind == "card":
            for p in PIS:
                laptop.run(block.text, cwd=home, extra={"NAME": p, "CARD": str(cards[p])})
            boot_the_pis(machines, cards, hosts)
            took = wait_for(lambda: all_green(hosts), CONVERGE_WITHIN, "three green Pis", detail)
            print(f"booted: every Pi ok, LED healthy, all three members alive after {took:.1f}s")
            continue
        if kind == "pi":
            for p in PIS:
                r = machines[p].run(block.text, cwd=home)
                outputs.append((block, r.stdout))
                print(f"--- on {p}:\n$ {block.text}\n{r.stdout}")
                assert re.search(r"^status\s+ok$", r.stdout, re.M), r.stdout
                assert re.search(r"^LEDs\s+healthy:", r.stdout, re.M), r.stdout
                assert all(re.search(rf"^{q}\b.*\balive\b", r.stdout, re.M) for q in PIS), r.stdout
            continue
        if kind == "monitor" and "background" in block.role:
            prometheus = laptop.spawn(
                ["bash", "-euo", "pipefail", "-c", f"cd {home} && {block.text}"], "prometheus.log"
            )
            took = wait_for(
                lambda: targets_up(laptop, home, {p: hosts[p].ip for p in PIS}) == set(PIS),
                SCRAPE_WITHIN,
                "Prometheus to scrape every Pi (up == 1), told only pi-a's SD URL",
                lambda: (hosts["laptop"].dir / "prometheus.log").read_text()[-3000:],
            )
            print(f"Prometheus: up == 1 for all three Pis {took:.1f}s after it started")
            continue
        assert kind in ("laptop", "monitor"), f"unknown walkthrough role {block.role!r}"
        if "origins" in block.text and "apply" not in block.text:
            took = wait_for(
                lambda: all_up(hosts), VERDICTS_WITHIN, "every origin up on every Pi", detail
            )
            print(f"every origin up on every Pi {took:.1f}s after the apply")
        r = laptop.run(block.text, cwd=home)
        outputs.append((block, r.stdout))
        print(f"--- on the laptop:\n$ {block.text}\n{r.stdout}{r.stderr}")
        check_output(block, r.stdout)
    assert prometheus is not None and prometheus.poll() is None, "Prometheus did not keep running"
    ran = [b.kind for b, _ in outputs]
    assert ran.count("pi") == len(PIS) and "monitor" in ran, ran


def boot_the_pis(
    machines: dict[str, Machine], cards: dict[str, Path], hosts: dict[str, Host]
) -> None:
    """What edge-agent-boot-config does at a first boot (docs/image.md), then the unit."""
    for p in PIS:
        m, card = machines[p], cards[p]
        assert sorted(x.name for x in card.iterdir()) == [
            "edge-agent.keyring",
            "edge-agent.token",
            "edge-agent.toml",
            "hostname",
        ], sorted(x.name for x in card.iterdir())
        m.run(
            f"""
            cd /etc/edge-agent
            tr -d '\\r' < {card}/edge-agent.keyring > keyring && chmod 0600 keyring
            tr -d '\\r' < {card}/edge-agent.token > api-token && chmod 0600 api-token
            rm -f {card}/edge-agent.keyring {card}/edge-agent.token
            edge-agent check-config {card}/edge-agent.toml
            install -m 0640 {card}/edge-agent.toml /etc/edge-agent/agent.toml
            mv {card}/edge-agent.toml {card}/edge-agent.toml.applied
            hostname "$(tr -d '\\r\\n' < {card}/hostname)"
            mv {card}/hostname {card}/hostname.applied
            """
        )
        assert m.run("hostname").stdout.strip() == p
        m.agent = m.spawn(
            ["edge-agent", "run", "--config", "/etc/edge-agent/agent.toml"], "agent.log"
        )
        assert hosts[p].dir.exists()


def all_green(hosts: dict[str, Host]) -> bool:
    for p in PIS:
        code, health = get(hosts[p].ns, hosts[p].ip, "/v1/health")
        if code != 200 or health.get("status") != "ok":
            return False
        if health.get("led", {}).get("state") != "healthy":
            return False
        _, members = get(hosts[p].ns, hosts[p].ip, "/v1/members")
        alive = {m["name"] for m in members if m["state"] == "alive"}
        if alive != set(PIS):
            return False
    return True


def all_up(hosts: dict[str, Host]) -> bool:
    for p in PIS:
        _, body = get(hosts[p].ns, hosts[p].ip, "/v1/origins")
        verdicts = {o["id"]: o["verdict"] for o in body}
        if verdicts != dict.fromkeys(SITES, "up"):
            return False
    return True


def targets_up(laptop: Machine, home: Path, ips: dict[str, str]) -> set[str]:
    """The Pis (by name) whose target Prometheus reports up == 1."""
    q = urllib.parse.quote('up{job="edge-agent"}')
    r = laptop.run(f"curl -s 'http://127.0.0.1:9090/api/v1/query?query={q}'", check=False, cwd=home)
    if r.returncode != 0 or not r.stdout.strip():
        return set()
    data = json.loads(r.stdout)
    up: set[str] = set()
    for res in data.get("data", {}).get("result", []):
        if res["value"][1] == "1":
            up.add(str(res["metric"].get("instance", "")))
    by_ip = {ip: p for p, ip in ips.items()}
    return {by_ip.get(i.rsplit(":", 1)[0], i) for i in up}


def check_output(block: Block, out: str) -> None:
    """What the guide says each laptop block prints."""
    text = block.text
    if "/v1/health" in text:
        assert '"status": "ok"' in out or '"status":"ok"' in out, out
        assert "healthy" in out, out
    if "/v1/members" in text:
        assert all(p in out for p in PIS), out
    if "origin apply" in text:
        for s in SITES:
            assert f"+ {s}" in out, out
    if text.strip().endswith(" origins"):
        for s in SITES:
            assert re.search(rf"\b{s}\b.*\bup\b", out), out
    if "api/v1/query" in text:
        data = json.loads(out)
        values = [r["value"][1] for r in data["data"]["result"]]
        assert values == ["1", "1", "1"], out
