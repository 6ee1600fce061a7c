"""The runtime wheel, what the image and Ansible install on a Pi, carries the runtime only.

The test and demo harness (origin farm, network-namespace fleet, demos: netns, nftables,
ctypes setns) is its own distribution in harness/, installed into the dev venv only.
The wheel is built as image/build.sh and ansible/scripts/build-wheelhouse.sh build it:
`pip wheel --no-deps` of the repository (a copy, so the work tree gets no build/).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HARNESS_MODULES = ("fleet", "farm", "demo", "fleet_demo")
# what the harness does and a runtime module never should (agent/shell/cli.py names the
# harness, importing it lazily for `edge-agent demo`, so its name is no mark)
HARNESS_MARKS = (b"ip netns", b"setns", b"CLONE_NEWNET", b"nft -f")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src") / "edge-agent"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "out"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    (whl,) = out.glob("edge_agent-*.whl")
    return zipfile.ZipFile(whl)


def test_the_wheel_has_no_harness_module(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert modules, names
    harness = [
        n for n in modules if Path(n).stem in HARNESS_MODULES or n.startswith("edge_harness/")
    ]
    assert harness == [], f"harness modules in the runtime wheel: {harness}"
    marked = {
        n: [m.decode() for m in HARNESS_MARKS if m in wheel.read(n)]
        for n in modules
        if any(m in wheel.read(n) for m in HARNESS_MARKS)
    }
    assert marked == {}, f"runtime modules doing the harness's work: {marked}"
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"agent"}, tops


def test_the_wheel_has_every_runtime_module_and_its_entry_point(wheel: zipfile.ZipFile) -> None:
    shipped = set(wheel.namelist())
    runtime = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "agent").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert runtime, "no runtime source found"
    assert runtime <= shipped, f"missing from the wheel: {sorted(runtime - shipped)}"
    (entry_points,) = [n for n in shipped if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "edge-agent = agent.shell.cli:main" in text, text
    assert "agent/shell/cli.py" in shipped


def test_demo_on_an_installed_node_says_to_run_it_from_a_clone(
    wheel: zipfile.ZipFile, tmp_path: Path
) -> None:
    """A node as the image makes it: the runtime wheel installed, the harness absent."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python3*/site-packages")
    wheel.extractall(site)  # what installing the wheel does (its entry script aside)
    # the runtime's dependencies from this venv, without its editable installs (those
    # are activated by .pth files, which a path added this way does not process)
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    (site / "deps.pth").write_text(f"{deps}\n")
    code = (
        "import sys, agent; print(agent.__file__, flush=True)\n"
        "from agent.shell.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    res = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert res.stdout.startswith(str(site)), res.stdout + res.stderr  # the wheel's agent
    assert res.returncode == 2, res.stderr
    assert "make demo" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
