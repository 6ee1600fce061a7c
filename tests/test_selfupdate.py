"""`edge-agent self-update` (agent/shell/selfupdate.py): the decisions, then the whole thing
with real venvs, real wheels built from this checkout (pip wheel) and real agent processes:
an update that comes up healthy in a two-node cluster, one that does not and rolls back,
the first update of a plain venv directory (as the image and Ansible make it), a download
over http on loopback, and refusals that change nothing.

No systemd here: the restart is a callable that stops the agent and starts
``<home>/venv/bin/edge-agent run`` (what the unit's ExecStart runs) again. On a Pi it is
``systemctl restart edge-agent``; image/pi_checks.py runs it so in a VM.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.metadata as md
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.shell import selfupdate as su
from tests.conftest import ROOT, AgentProcess, free_port, wait_for

pytestmark = [pytest.mark.slow]


# --- pure parts --------------------------------------------------------------------------------


def health(version: str = "2", status: str = "ok", uptime: float = 1.0, reasons=()) -> dict:  # type: ignore[no-untyped-def]
    return {"version": version, "status": status, "uptime_s": uptime, "reasons": list(reasons)}


BASE = su.Baseline(frozenset({"a", "b"}), frozenset({"leds"}), "a")


@pytest.mark.parametrize(
    ("snap", "ok", "says"),
    [
        (su.Snapshot(error="refused"), False, "refused"),
        (su.Snapshot(health("1"), frozenset({"a", "b"})), False, "not '2'"),
        (su.Snapshot(health(uptime=99), frozenset({"a", "b"})), False, "not the one just started"),
        (su.Snapshot(health(status="starting"), frozenset({"a", "b"})), False, "status starting"),
        (su.Snapshot(health(status="failing", reasons=["config: x"])), False, "config: x"),
        (
            su.Snapshot(health(status="degraded", reasons=["store: full"]), frozenset({"a", "b"})),
            False,
            "did not have before: store",
        ),
        (su.Snapshot(health(), frozenset({"a"})), False, "not (yet) alive now: b"),
        (su.Snapshot(health(), frozenset({"a", "b", "c"})), True, "2 ok, 3 members alive"),
        (
            su.Snapshot(
                health(status="degraded", reasons=["leds: no chip"]), frozenset({"a", "b"})
            ),
            True,
            "2 degraded",
        ),
    ],
)
def test_judge(snap: su.Snapshot, ok: bool, says: str) -> None:
    got, why = su.judge(snap, "2", BASE, since=10.0)
    assert (got, says in why) == (ok, True), why


def test_wheel_names_and_release_ids() -> None:
    assert su.wheel_version("edge_agent-0.2.0-py3-none-any.whl") == "0.2.0"
    assert su.wheel_version("edge_agent-0.2.0+local.1-py3-none-any.whl") == "0.2.0+local.1"
    with pytest.raises(su.UpdateError, match="not an edge-agent wheel"):
        su.wheel_version("aiohttp-3.9.0-py3-none-any.whl")
    assert su.release_id("0.2.0", "ab" * 32) == "0.2.0-abababababab"


def test_exchange_swaps_a_directory_and_a_link_atomically(tmp_path: Path) -> None:
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "old").touch()
    (tmp_path / "new").mkdir()
    (tmp_path / "link").symlink_to("new")
    su.exchange(tmp_path / "link", tmp_path / "venv")
    assert (tmp_path / "venv").is_symlink() and (tmp_path / "link" / "old").exists()


def test_a_moved_venv_gets_its_scripts_repointed(tmp_path: Path) -> None:
    old, new = tmp_path / "venv", tmp_path / "releases" / "x"
    (new / "bin").mkdir(parents=True)
    (new / "bin" / "edge-agent").write_text(f"#!{old}/bin/python\nimport sys\n")
    (new / "bin" / "other").write_text("#!/bin/sh\n")
    (new / "bin" / "activate").write_text(f"VIRTUAL_ENV='{old}'\n")
    assert su.rewrite_shebangs(new, old, new) == 1
    assert (new / "bin" / "edge-agent").read_text().startswith(f"#!{new}/bin/python\n")
    assert (new / "bin" / "other").read_text() == "#!/bin/sh\n"
    assert str(new) in (new / "bin" / "activate").read_text()


def test_pi_checks_copies_a_wheel_into_a_guest_with_shell_commands_only(tmp_path: Path) -> None:
    # image/pi_checks.py's put for boot_test's hook, whose shell() takes commands only
    def shell(command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)

    local = tmp_path / "edge_agent-9-py3-none-any.whl"
    local.write_bytes(os.urandom(150_000))
    _pi_checks().put_through_shell(shell, local, str(tmp_path / "copied.whl"))
    assert (tmp_path / "copied.whl").read_bytes() == local.read_bytes()


# --- real venvs, wheels and agents -------------------------------------------------------------


def build_wheel(out: Path) -> Path:
    """A wheel of this checkout, built as image/build.sh and Ansible build it."""
    src = out / "src"
    shutil.copytree(ROOT / "agent", src / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(src)
    (wheel,) = out.glob("edge_agent-*.whl")
    return wheel


def _pi_checks() -> Any:
    """image/pi_checks.py (not a package): its rewheel() makes the releases here too."""
    spec = importlib.util.spec_from_file_location("pi_checks", ROOT / "image" / "pi_checks.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def runtime_distributions() -> list[md.Distribution]:
    """The agent's runtime dependencies, transitively, as installed in this venv."""
    seen: dict[str, md.Distribution] = {}
    todo = [
        "aiohttp",
        "mmh3",
        "msgpack",
        "zeroconf",
        "gpiozero",
        "prometheus-client",
    ]
    while todo:
        name = re.split(r"[ ;<>=!~\[]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            d = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[name] = d
        for req in d.requires or []:
            if "extra ==" not in req:
                todo.append(req)
    return list(seen.values())


def plain_venv(path: Path, wheel: Path) -> None:
    """A venv as the image or Ansible makes it (a directory), offline: this venv's runtime
    dependencies copied in, then the agent's wheel installed."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    (site,) = path.glob("lib/python3*/site-packages")
    for d in runtime_distributions():
        for f in d.files or []:
            src = Path(str(d.locate_file(f)))
            if ".." in f.parts or not src.is_file():
                continue
            (site / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, site / f)
    subprocess.run(
        [str(path / "bin" / "pip"), "install", "-q", "--no-index", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    built = Path(shutil.copy(build_wheel(tmp_path_factory.mktemp("build")), out))
    rewheel = _pi_checks().rewheel
    return {
        "one": rewheel(built, "0.1.0+one"),
        "two": rewheel(built, "0.1.0+two"),
        "broken": rewheel(built, "0.1.0+broken", broken=True),
    }


class VenvAgent(AgentProcess):
    """An agent run as the unit runs it: <home>/venv/bin/edge-agent, nothing of this checkout
    on its path."""

    def __init__(self, tmp: Path, home: Path, cluster: str) -> None:
        super().__init__(tmp, "", name="updated", cluster=cluster)
        self.home = home
        self.env = {k: v for k, v in self.env.items() if k != "PYTHONPATH"}

    def start(self) -> VenvAgent:
        exe = self.home / "venv" / "bin" / "edge-agent"
        self.proc = subprocess.Popen(
            [str(exe), "run", "--config", str(self.config)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_path.open("ab"),
            cwd=self.tmp,
        )
        return self

    def restart(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        self.start()


@pytest.fixture
def node(tmp_path: Path, wheels: dict[str, Path]) -> Iterator[tuple[VenvAgent, AgentProcess, Path]]:
    """A node whose venv (a plain directory) runs wheel "one", in a cluster with a peer."""
    home = tmp_path / "opt"
    plain_venv(home / "venv", wheels["one"])
    peer = AgentProcess(tmp_path / "peer", "", name="peer")
    me = VenvAgent(tmp_path / "me", home, f'join = ["127.0.0.1:{peer.gossip_port}"]')
    peer.cluster = f'join = ["127.0.0.1:{me.gossip_port}"]'
    peer.write_config("")
    me.start()
    peer.start()
    try:
        wait_for(lambda: alive(me) == {"updated", "peer"}, 30, "a cluster of two")
        yield me, peer, home
    finally:
        me.close()
        peer.close()


def alive(a: AgentProcess) -> set[str]:
    code, members = a.get("/v1/members")
    return {m["name"] for m in members if m["state"] == "alive"} if code == 200 else set()


def restart_script(me: VenvAgent, home: Path) -> Path:
    """What systemctl restart does for the unit: stop the old process, start the new one
    from <home>/venv (detached: this shell exits, so no zombie of ours lingers)."""
    restart = home / "restart.sh"
    restart.write_text(
        "#!/bin/sh\n"
        f"pid=$(cat {home}/agent.pid 2>/dev/null)\n"
        'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; '
        'while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; fi\n'
        f"{home}/venv/bin/edge-agent run --config {me.config} >/dev/null 2>>{me.stderr_path} &\n"
        f"echo $! > {home}/agent.pid\n"
    )
    restart.chmod(0o755)
    return restart


def cli(me: VenvAgent, home: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """`edge-agent self-update` from the node's own venv, as an operator runs it."""
    restart = restart_script(me, home)
    r = subprocess.run(
        [
            str(home / "venv" / "bin" / "edge-agent"),
            "self-update",
            "--json",
            "--home",
            str(home),
            "--api",
            me.url,
            "--config",
            str(me.config),
            "--restart-command",
            str(restart),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert r.stdout.strip(), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_update_then_a_broken_update_rolls_back(
    node: tuple[VenvAgent, AgentProcess, Path], wheels: dict[str, Path]
) -> None:
    me, _peer, home = node
    out: list[str] = []
    opts = su.Options(
        str(wheels["two"]), home=home, deadline=60, restart=me.restart, config=me.config
    )
    probe = functools.partial(snapshot, me)
    res = su.Updater(opts, probe, out.append).run()
    assert res.code == su.EXIT_OK, "\n".join(out)
    assert me.get("/v1/health")[1]["version"] == "0.1.0+two"
    assert (home / "venv").is_symlink() and (home / "previous").is_symlink()
    assert (home / "previous").resolve().name == "0.1.0+one-initial"
    assert (home / "venv").resolve().parent == home / "releases"
    # the old venv still runs where it was moved to: its scripts point at their own Python
    v = subprocess.run(
        [str(home / "previous" / "bin" / "edge-agent"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        env=me.env,
    )
    assert v.stdout.strip() == "edge-agent 0.1.0+one"
    assert alive(me) == {"updated", "peer"}
    # the same wheel again: nothing to do
    again = su.Updater(opts, probe, out.append).run()
    assert (again.code, "already running" in again.message) == (su.EXIT_OK, True)

    good = (home / "venv").resolve()
    opts = su.Options(
        str(wheels["broken"]), home=home, deadline=20, restart=me.restart, config=me.config
    )
    res = su.Updater(opts, probe, out.append).run()
    assert res.code == su.EXIT_ROLLED_BACK, "\n".join(out)
    assert "rolled back to" in res.message, res.message
    assert (home / "venv").resolve() == good
    assert (home / "previous").resolve().name == "0.1.0+one-initial"  # as before the try
    assert me.get("/v1/health")[1]["version"] == "0.1.0+two"
    assert not any("broken" in p.name for p in (home / "releases").iterdir())
    assert "edge_agent_module_that_is_not_there" in me.stderr(), "\n".join(out)
    wait_for(lambda: alive(me) == {"updated", "peer"}, 30, "the cluster back")


def snapshot(me: AgentProcess) -> su.Snapshot:
    try:
        _code, h = me.get("/v1/health")
        _, members = me.get("/v1/members")
    except OSError as e:
        return su.Snapshot(error=str(e))
    return su.Snapshot(h, frozenset(m["name"] for m in members if m["state"] == "alive"))


def test_the_cli_updates_from_an_http_url_and_refuses_bad_input(
    node: tuple[VenvAgent, AgentProcess, Path], wheels: dict[str, Path], tmp_path: Path
) -> None:
    me, _peer, home = node
    # the agent as the restart script will manage it from now on
    me.stop()
    me.proc = None
    subprocess.run([str(restart_script(me, home))], check=True, env=me.env)
    try:
        wait_for(lambda: alive(me) == {"updated", "peer"}, 30, "the node back")
        handler = functools.partial(
            http.server.SimpleHTTPRequestHandler, directory=str(wheels["two"].parent)
        )
        server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/{wheels['two'].name}"
        try:
            code, doc = cli(me, home, "--sha256", "0" * 64, url)
            assert code == su.EXIT_UNCHANGED and "sha256" in doc["message"]
            code, doc = cli(me, home, str(tmp_path / "edge_agent-9-py3-none-any.whl"))
            assert code == su.EXIT_UNCHANGED and "no such file" in doc["message"]
            not_a_wheel = tmp_path / "edge_agent-9-py3-none-any.whl"
            not_a_wheel.write_bytes(b"not a zip")
            code, doc = cli(me, home, str(not_a_wheel))
            assert code == su.EXIT_UNCHANGED and "not a readable" in doc["message"]
            assert not (home / "venv").is_symlink()  # nothing changed
            code, doc = cli(me, home, "--deadline", "60", url)
        finally:
            server.shutdown()
        assert code == su.EXIT_OK, doc
        assert doc["release"].startswith("0.1.0+two-") and doc["previous"] == "0.1.0+one-initial"
        assert me.get("/v1/health")[1]["version"] == "0.1.0+two"
        code, doc = cli(me, home, "--rollback", "--deadline", "60")
        assert code == su.EXIT_OK, doc
        assert me.get("/v1/health")[1]["version"] == "0.1.0+one"
    finally:
        pid = int((home / "agent.pid").read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
