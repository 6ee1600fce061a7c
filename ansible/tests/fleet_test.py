"""The Ansible role and playbooks against real hosts: the Done-when scenarios of issue 10.

Run by tests/run.sh (`make ansible-test`) inside the test network namespace, after
tests/hosts.sh has booted the hosts. Standard library only. Every scenario is timed;
the playbook outputs go to OUT/*.log and a summary to OUT/summary.txt.

  1. deploy to fresh hosts: a converged cluster, every host healthy
  2. deploy again: changed=0 on every host
  3. rolling upgrade to another version, watched: one host at a time, never more than
     one member not alive in anyone's view
  4. rolling upgrade with a host that fails its health check: the roll stops there with
     a clear message; the hosts after it are not touched
  5. deploy repairs the fleet
  4b/5b. the same with a host whose cluster cannot hear it (a key nobody else has), repaired
  6. gossip key rotation, watched: zero membership flaps; then a restarted node (which
     now has only the new key) rejoins, which shows the fleet really uses the new key
  7. identify: POST /v1/identify with the API token
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ANSIBLE_DIR = HERE.parent
HOSTS = {"edge1": "10.213.7.11", "edge2": "10.213.7.12", "edge3": "10.213.7.13"}
API_PORT = 8080
CACHE = Path(os.environ.get("EDGE_AGENT_ANSIBLE_CACHE", "/var/cache/edge-agent-ansible"))
SSH_KEY = CACHE / "ssh/id_ed25519"
NEW_KEY = "qcWPrAXuCSSXZb6AgdXEoGf1mp/wfAk1ercfADktFDg="  # test key: rotate-key.yml's new key
BAD_KEY = "WaMSxpqgf+3gqdqDdrMLoWJMlvJ6jI1waPAPN78khw0="  # a valid key nobody else has


def get_json(host: str, path: str, timeout: float = 1.0) -> object:
    with urllib.request.urlopen(f"http://{HOSTS[host]}:{API_PORT}{path}", timeout=timeout) as r:
        return json.load(r)


def health(host: str) -> dict:
    try:
        return get_json(host, "/v1/health")  # type: ignore[return-value]
    except urllib.error.HTTPError as e:  # 503 still carries the JSON body
        return json.load(e)
    except OSError as e:
        return {"status": "unreachable", "error": str(e)}


def ssh(host: str, command: str) -> str:
    out = subprocess.run(
        [
            "ssh",
            "-i",
            str(SSH_KEY),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            f"root@{HOSTS[host]}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


class Watcher:
    """Polls every host's /v1/members (and /v1/health) every `interval` seconds.

    A round asks every host in turn; a member is *down in a round* if any host that
    answered sees it in a state other than alive (or not at all), or if its own API does
    not answer. `max_down` is the most members down in one round; `flaps` counts each
    (observer, member) pair going from alive to anything else.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.rounds = 0
        self.max_down = 0
        self.max_down_at: list[str] = []
        self.flaps: list[str] = []
        self.down_rounds: dict[str, int] = {}
        self.restarts: dict[str, list[float]] = {h: [] for h in HOSTS}
        self.versions: dict[str, set[str]] = {h: set() for h in HOSTS}
        self._last: dict[tuple[str, str], str] = {}
        self._uptime: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = 0.0

    def __enter__(self) -> Watcher:
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._round()
            self._stop.wait(self.interval)

    def _round(self) -> None:
        now = time.monotonic() - self.t0
        down: set[str] = set()
        why: list[str] = []
        for obs in HOSTS:
            try:
                members = get_json(obs, "/v1/members")
            except (OSError, ValueError):
                down.add(obs)
                why.append(f"{obs}: API down")
                continue
            states = {m["name"]: m["state"] for m in members}  # type: ignore[union-attr]
            # a node that has just started and not joined yet knows nobody: its view of the
            # others says nothing about them (it counts as down itself until it has joined)
            joined = any(st == "alive" for n, st in states.items() if n != obs)
            if not joined:
                down.add(obs)
                why.append(f"{obs}: not joined")
            for name in HOSTS:
                state = states.get(name, "absent")
                if joined and state != "alive":
                    down.add(name)
                    why.append(f"{obs} sees {name} {state}")
                before = self._last.get((obs, name))
                if before == "alive" and state != "alive":
                    self.flaps.append(f"t={now:.1f}s {obs} sees {name} {state}")
                self._last[(obs, name)] = state
            h = health(obs)
            if "version" in h:
                self.versions[obs].add(h["version"])
                up = float(h.get("uptime_s", 0))
                if obs in self._uptime and up + 0.5 < self._uptime[obs]:
                    self.restarts[obs].append(round(now, 1))
                self._uptime[obs] = up
        self.rounds += 1
        for name in down:
            self.down_rounds[name] = self.down_rounds.get(name, 0) + 1
        if len(down) > self.max_down:
            self.max_down = len(down)
            self.max_down_at = [f"t={now:.1f}s down: {sorted(down)} ({'; '.join(why)})"]

    def describe(self) -> str:
        return (
            f"{self.rounds} rounds, max members down at once {self.max_down} {self.max_down_at}, "
            f"flaps {len(self.flaps)}, restarts seen {self.restarts}, "
            f"rounds down per member {self.down_rounds}"
        )


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Suite:
    out: Path
    wheelhouses: dict[str, Path]
    results: list[Result] = field(default_factory=list)

    def playbook(
        self, log: str, playbook: str, *args: str, inventory: Path | None = None
    ) -> tuple[int, str, float]:
        cmd = [str(ANSIBLE_DIR / ".venv/bin/ansible-playbook"), playbook, *args]
        if inventory is not None:
            cmd += ["-i", str(inventory)]
        # ssh masters live in the hosts' run directory, which tests/hosts.sh down removes
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=str(HERE / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(CACHE / "run/ssh-cp"),
        )
        t = time.monotonic()
        p = subprocess.run(
            cmd, cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=900
        )
        dt = time.monotonic() - t
        text = p.stdout + p.stderr
        (self.out / f"{log}.log").write_text(
            f"$ {' '.join(cmd)}\n{text}\nexit {p.returncode} after {dt:.1f}s\n"
        )
        return p.returncode, text, dt

    def check(self, name: str, fn) -> bool:  # type: ignore[no-untyped-def]
        print(f"--- {name}", flush=True)
        t = time.monotonic()
        try:
            detail = fn() or ""
            ok = True
        except AssertionError as e:
            ok, detail = False, f"FAILED: {e}"
        except Exception as e:  # a harness error is a failure too, with its reason
            ok, detail = False, f"ERROR: {type(e).__name__}: {e}"
        r = Result(name, ok, time.monotonic() - t, detail)
        self.results.append(r)
        print(f"{'ok  ' if ok else 'FAIL'} {r.seconds:6.1f}s  {name}: {detail}", flush=True)
        return ok


def recap(text: str) -> dict[str, dict[str, int]]:
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", text, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def version_of(wheelhouse: Path) -> str:
    (whl,) = wheelhouse.glob("edge_agent-*.whl")
    return whl.name.split("-")[1]


def converged() -> dict[str, list[str]]:
    """{observer: [names it sees alive]} for every host."""
    out = {}
    for h in HOSTS:
        try:
            out[h] = sorted(m["name"] for m in get_json(h, "/v1/members") if m["state"] == "alive")  # type: ignore[union-attr]
        except OSError:
            out[h] = []
    return out


def wait_converged(seconds: float) -> dict[str, list[str]]:
    deadline = time.monotonic() + seconds
    while True:
        view = converged()
        if all(v == sorted(HOSTS) for v in view.values()) or time.monotonic() > deadline:
            return view
        time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--v1", type=Path, required=True, help="wheelhouse of the version to deploy")
    ap.add_argument("--v2", type=Path, required=True, help="wheelhouse of the version to roll to")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    s = Suite(args.out, {"v1": args.v1, "v2": args.v2})
    v1, v2 = version_of(args.v1), version_of(args.v2)
    wh1, wh2 = f"edge_agent_wheelhouse={args.v1}", f"edge_agent_wheelhouse={args.v2}"
    t_all = time.monotonic()

    def deploy_fresh() -> str:
        rc, _, dt = s.playbook("1-deploy", "deploy.yml", "-e", wh1)
        assert rc == 0, f"deploy.yml exit {rc} (see 1-deploy.log)"
        view = wait_converged(10)
        assert all(v == sorted(HOSTS) for v in view.values()), f"not converged: {view}"
        hs = {h: health(h) for h in HOSTS}
        assert all(x["status"] == "ok" and x["version"] == v1 for x in hs.values()), hs
        files = ssh(
            "edge2",
            "stat -c '%a %U:%G %n' /etc/edge-agent/keyring /etc/edge-agent/api-token "
            "/etc/edge-agent/agent.toml; systemctl is-enabled edge-agent; "
            "systemctl show -p MemoryMax --value edge-agent",
        ).split("\n")
        assert files[:5] == [
            "600 edge-agent:edge-agent /etc/edge-agent/keyring",
            "600 edge-agent:edge-agent /etc/edge-agent/api-token",
            "640 root:edge-agent /etc/edge-agent/agent.toml",
            "enabled",
            str(256 * 1024 * 1024),  # MemoryMax from the drop-in
        ], files
        seen = f"every host sees {sorted(HOSTS)} alive"
        return f"playbook {dt:.1f}s; {seen}; all ok at {v1}; {'; '.join(files[:5])}"

    def deploy_again() -> str:
        rc, text, dt = s.playbook("2-deploy-again", "deploy.yml", "-e", wh1)
        assert rc == 0, f"deploy.yml exit {rc}"
        r = recap(text)
        assert set(r) == set(HOSTS), r
        changed = {h: v["changed"] for h, v in r.items()}
        assert all(c == 0 for c in changed.values()), f"changed: {changed}"
        return f"playbook {dt:.1f}s; changed={changed}"

    def rolling_upgrade() -> str:
        with Watcher() as w:
            rc, _, dt = s.playbook("3-rolling-upgrade", "rolling-upgrade.yml", "-e", wh2)
            time.sleep(2)
        assert rc == 0, f"rolling-upgrade.yml exit {rc}"
        hs = {h: health(h) for h in HOSTS}
        assert all(x["version"] == v2 and x["status"] == "ok" for x in hs.values()), hs
        assert w.max_down <= 1, f"more than one member down at once: {w.describe()}"
        assert all(len(t) == 1 for t in w.restarts.values()), (
            f"each host restarts once: {w.describe()}"
        )
        order = sorted(HOSTS, key=lambda h: w.restarts[h][0])
        at = [w.restarts[h][0] for h in order]
        return f"playbook {dt:.1f}s; {v1} -> {v2}; restart order {order} at {at}s; {w.describe()}"

    def inventory_with(edge2_vars: str) -> Path:
        inv = Path(tempfile.mkdtemp(prefix="inv-", dir=args.out))
        shutil.copytree(HERE / "inventory", inv, dirs_exist_ok=True)
        (inv / "host_vars").mkdir(exist_ok=True)
        (inv / "host_vars/edge2.yml").write_text(
            "---\n" + edge2_vars + "edge_agent_verify_retries: 5\n"
        )
        return inv

    def failing_roll() -> str:
        # edge2 gets a keyring it cannot parse: after its restart /v1/health says "failing"
        inv = inventory_with("edge_agent_gossip_keys: [not-a-base64-key]\n")
        before = {h: health(h) for h in HOSTS}
        rc, text, dt = s.playbook(
            "4-failing-roll", "rolling-upgrade.yml", "-e", wh1, inventory=inv / "hosts.yml"
        )
        after = {h: health(h) for h in HOSTS}
        shutil.rmtree(inv)
        assert rc != 0, "the roll did not fail"
        m = re.search(r"ROLL STOPPED at edge2[^\n]*", text)
        assert m, "no 'ROLL STOPPED at edge2' message (see 4-failing-roll.log)"
        assert after["edge1"]["version"] == v1, f"edge1 not rolled: {after['edge1']}"
        assert after["edge2"]["status"] != "ok", f"edge2 healthy?: {after['edge2']}"
        assert (
            after["edge3"]["version"] == v2
            and after["edge3"]["uptime_s"] > before["edge3"]["uptime_s"]
        ), f"edge3 was touched: {before['edge3']} -> {after['edge3']}"
        return f"playbook {dt:.1f}s, exit {rc}; message: {m.group(0)[:400]}"

    def unseen_roll() -> str:
        # edge2 gets a valid key that nobody else has: it stays up (a reload applies the key)
        # but its cluster cannot hear it any more
        inv = inventory_with(f"edge_agent_gossip_keys: [{BAD_KEY}]\n")
        before = {h: health(h) for h in HOSTS}
        rc, text, dt = s.playbook(
            "4b-unseen-roll",
            "rolling-upgrade.yml",
            "-e",
            wh1,
            "-e",
            "edge_agent_roll_restart=true",
            inventory=inv / "hosts.yml",
        )
        after = {h: health(h) for h in HOSTS}
        shutil.rmtree(inv)
        assert rc != 0, "the roll did not fail"
        m = re.search(r"ROLL STOPPED at edge2[^\n]*", text)
        assert m, "no 'ROLL STOPPED at edge2' message (see 4b-unseen-roll.log)"
        assert after["edge1"]["uptime_s"] < before["edge1"]["uptime_s"], "edge1 was not restarted"
        assert after["edge3"]["uptime_s"] > before["edge3"]["uptime_s"], "edge3 was touched"
        return f"playbook {dt:.1f}s, exit {rc}; message: {m.group(0)[:400]}"

    def repair() -> str:
        rc, _, dt = s.playbook(f"5-repair-deploy-{len(s.results)}", "deploy.yml", "-e", wh1)
        assert rc == 0, f"deploy.yml exit {rc}"
        view = wait_converged(10)
        assert all(v == sorted(HOSTS) for v in view.values()), f"not converged: {view}"
        return f"playbook {dt:.1f}s; converged again at {v1}"

    def rotate() -> str:
        view = wait_converged(20)
        assert all(v == sorted(HOSTS) for v in view.values()), f"not converged before: {view}"
        with Watcher() as w:
            rc, _, dt = s.playbook(
                "6-rotate-key", "rotate-key.yml", "-e", f"edge_agent_new_gossip_key={NEW_KEY}"
            )
            time.sleep(3)
        assert rc == 0, f"rotate-key.yml exit {rc}"
        assert not w.flaps and w.max_down == 0, (
            f"flaps during rotation: {w.flaps[:10]} {w.describe()}"
        )
        assert all(not t for t in w.restarts.values()), f"a host restarted: {w.restarts}"
        keyrings = {h: ssh(h, "cat /etc/edge-agent/keyring").split() for h in HOSTS}
        assert all(k == [NEW_KEY] for k in keyrings.values()), (
            "keyring files do not hold only the new key"
        )
        return f"playbook {dt:.1f}s; {w.describe()}"

    def rotated_key_in_use() -> str:
        # edge1 restarts with only the new key; it can rejoin only if the others encrypt with
        # it and accept it, i.e. if the reloads really applied the rotated keyring
        ssh("edge1", "systemctl restart edge-agent")
        view = wait_converged(30)
        assert all(v == sorted(HOSTS) for v in view.values()), (
            f"after restarting edge1 with only the new key the cluster does not converge: {view} "
            "(does `systemctl reload` apply the keyring?)"
        )
        return "edge1 restarted with only the new key and everyone sees everyone alive"

    def identify() -> str:
        rc, text, dt = s.playbook(
            "7-identify", "identify.yml", "-e", "identify_host=edge1", "-e", "identify_seconds=5"
        )
        if rc == 0:
            h = health("edge1")
            return f"playbook {dt:.1f}s; edge1 health after: identify_s={h.get('identify_s')}"
        m = re.search(r"refused /v1/identify[^\n\"]*", text)
        assert m, f"identify.yml exit {rc} without a clear message (see 7-identify.log)"
        raise AssertionError(m.group(0))

    s.check("1 deploy to 3 fresh hosts gives a converged cluster", deploy_fresh)
    s.check("2 second deploy reports changed=0", deploy_again)
    s.check("3 rolling upgrade, one host at a time, <= 1 member down", rolling_upgrade)
    s.check("4 a host failing its health check stops the roll", failing_roll)
    s.check("5 deploy repairs the fleet", repair)
    s.check("4b a host its cluster cannot hear stops the roll", unseen_roll)
    s.check("5b deploy repairs the fleet", repair)
    s.check("6 key rotation with zero membership flaps", rotate)
    s.check("6b the rotated key is the one in use (restart rejoins)", rotated_key_in_use)
    s.check("7 identify blinks one host's LEDs", identify)

    total = time.monotonic() - t_all
    passed = sum(r.ok for r in s.results)
    lines = [
        f"{'ok  ' if r.ok else 'FAIL'} {r.seconds:6.1f}s  {r.name}: {r.detail}" for r in s.results
    ]
    lines.append(f"{passed} passed, {len(s.results) - passed} failed")
    lines.append(f"scenarios took {total:.1f}s")
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-2:]))
    return 0 if passed == len(s.results) else 1


if __name__ == "__main__":
    sys.exit(main())
