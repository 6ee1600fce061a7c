#!/usr/bin/env python3
"""Checks of issue 22 that need a real kernel or a real systemd: run inside a booted VM.

image/boot_test.py calls these once the image's VM answers ssh; each takes

  sh(command: str) -> str     runs a shell command in the guest as root and returns its
                              stdout (+ stderr when it failed), as boot_test's check_vm
                              defines it: ``lambda cmd: vm.ssh(key, cmd).stdout + ...``
  c: Checks                   boot_test's Checks object (c.check(ok, what, detail))

and, for the update, ``put(local: Path, remote: str)`` that copies a host file into the
guest. Python stdlib only, like boot_test.py. boot_test.py calls them through
:func:`run_checks` (its run_pi_checks hook, for the virt and the raspi4b VM); by hand:

    import pi_checks
    pi_checks.check_gpiochip_by_label(sh, c)                  # gpio-sim, one chip a board
    wheels = pi_checks.release_wheels(work)                   # on the host: pip wheel
    pi_checks.check_self_update(sh, c, put, wheels)           # update, then a broken one

``check_gpiochip_by_label`` needs a kernel with gpio-sim (CONFIG_GPIO_SIM: Debian's
trixie-backports 7.x has it as a module, trixie's 6.12 does not; the check says so and
fails). For each board's header label (agent/shell/gpiochip.py KNOWN_LABELS) it makes a
gpio-sim device whose first bank is a decoy (a SoC GPIO block, as on a Pi 5 where the
header used to be gpiochip4) and whose second bank carries the label, then asks the
image's own agent which chip it would drive (``python -m agent.shell.gpiochip --json``)
and drives the LEDs there through gpiozero/lgpio: GPIO17 (green) must read 1 and GPIO22
(red) 0 on the simulated lines (sysfs ``sim_gpioN/value``), with "healthy" shown.

``check_self_update`` runs ``edge-agent self-update`` in the guest under its systemd: a
good release (reaches READY, /v1/health answers the new version, the cluster's members
alive again), then a broken one (its agent cannot start) that must be rolled back by
itself to the good one, exit status 1.

Without the image: ``python3 image/pi_checks.py gpiochip [--python PY]`` runs the first
check on this machine (as root, on a kernel with gpio-sim); tests/image/ boots Debian's
kernel under QEMU with a tiny initramfs to do exactly that (see docs/leds.md).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parent.parent
AGENT_PYTHON = "/opt/edge-agent/venv/bin/python"

#: label -> (board, lines): the pin controllers of the 40-pin header (gpiochip.py)
BOARDS = {
    "pinctrl-rp1": ("Raspberry Pi 5", 54),
    "pinctrl-bcm2711": ("Raspberry Pi 4", 58),
    "pinctrl-bcm2835": ("Raspberry Pi 3 / Zero 2 W", 54),
}
DECOY = ("gpio-brcmstb@107d508500", 32)  # what sits before RP1 on a Pi 5's older kernels
CONFIGFS = "/sys/kernel/config/gpio-sim"


class Checks(Protocol):
    def check(self, ok: bool, what: str, detail: str = "") -> bool: ...


Sh = Callable[[str], str]


# --- the LEDs find the header chip by label (gpio-sim) --------------------------------------------


def _make_sim(sh: Sh, name: str, banks: list[tuple[str, int]]) -> str:
    """A live gpio-sim device with these (label, lines) banks; returns its dev_name."""
    cmds = [f"mkdir {CONFIGFS}/{name}"]
    for i, (label, lines) in enumerate(banks):
        bank = f"{CONFIGFS}/{name}/bank{i}"
        cmds += [
            f"mkdir {bank}",
            f"echo {lines} > {bank}/num_lines",
            f"printf %s {shlex.quote(label)} > {bank}/label",
        ]
    cmds += [f"echo 1 > {CONFIGFS}/{name}/live", f"cat {CONFIGFS}/{name}/dev_name"]
    return sh(" && ".join(cmds)).strip()


def _drop_sim(sh: Sh, name: str) -> None:
    sh(
        f"d={CONFIGFS}/{name}; [ -d $d ] || exit 0; echo 0 > $d/live; "
        "for b in $d/bank*; do rmdir $b; done; rmdir $d"
    )


LED_SCRIPT = """
import json, sys, pathlib
from agent.shell.config import LedsConfig
from agent.shell.leds import Leds, LedState
sim = pathlib.Path(sys.argv[1])
leds = Leds(LedsConfig(green=17, amber=27, red=22, gpiochip=sys.argv[2]))
leds.set(LedState.HEALTHY)
def read(n):  # what the simulated line is driven to ("-": a real chip, not read back)
    return "-" if sys.argv[1] == "-" else (sim / f"sim_gpio{n}" / "value").read_text().strip()
print(json.dumps({"kind": leds.kind, "problem": leds.problem, "shown": leds.describe(),
                  "green": read(17), "amber": read(27), "red": read(22)}))
leds.close()
"""


def check_gpiochip_by_label(sh: Sh, c: Checks, python: str = AGENT_PYTHON, env: str = "") -> None:
    """For each board's label: the agent finds the simulated header chip and drives its LEDs
    there. ``env``: a prefix for the guest's python command (e.g. ``PYTHONPATH=…``)."""
    print("LEDs: the header's gpiochip by label (gpio-sim)")
    ready = sh(
        "modprobe gpio-sim 2>/dev/null; "
        "mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config; "
        f"test -d {CONFIGFS} && echo ready || (uname -r; echo no gpio-sim)"
    )
    if not c.check(
        "ready" in ready,
        "gpio-sim available (configfs /sys/kernel/config/gpio-sim)",
        f"kernel {ready.strip()}: needs CONFIG_GPIO_SIM (Debian trixie-backports' kernel)",
    ):
        return
    for n, (label, (board, lines)) in enumerate(BOARDS.items()):
        name = f"edge-pi-check-{n}"
        try:
            dev = _make_sim(sh, name, [DECOY, (label, lines)])
            chip_name = sh(f"cat {CONFIGFS}/{name}/bank1/chip_name").strip()
            if not c.check(
                chip_name.startswith("gpiochip") and chip_name[8:].isdigit(),
                f"{board}: a gpio-sim chip labelled {label}",
                f"{dev} {chip_name}",
            ):
                continue
            number = int(chip_name[8:])
            header = f"/sys/devices/platform/{dev}/{chip_name}"
            out = sh(f"{env} {python} -m agent.shell.gpiochip --json")
            try:
                choice = json.loads(out.strip().splitlines()[-1])["choice"]
            except (ValueError, IndexError, KeyError):
                choice = {}
            c.check(
                choice.get("number") == number and choice.get("label") == label,
                f"{board}: {label} found as /dev/gpiochip{number} (decoy before it)",
                out,
            )
            out = sh(f"{env} {python} -c {shlex.quote(LED_SCRIPT)} {header} auto 2>&1 | tail -n 1")
            try:
                got: dict[str, Any] = json.loads(out)
            except ValueError:
                got = {}
            c.check(
                got.get("kind") == "gpio"
                and got.get("problem") is None
                and (got.get("green"), got.get("amber"), got.get("red")) == ("1", "0", "0"),
                f"{board}: healthy lights GPIO17 on the simulated chip through lgpio",
                out,
            )
            # the override by label picks the decoy; by a number that is not there: a fault
            out = sh(f"{env} {python} -m agent.shell.gpiochip --json --gpiochip {DECOY[0]}")
            c.check(
                f'"number": {number - 1}' in out,
                f"{board}: [leds] gpiochip = label overrides the search",
                out,
            )
        finally:
            _drop_sim(sh, name)
    out = sh(f"{env} {python} -m agent.shell.gpiochip --json --gpiochip 999; echo rc=$?")
    c.check("rc=1" in out and "gpiochip999" in out, "a configured chip that is absent is said", out)


# --- self-update under systemd -------------------------------------------------------------------


def release_wheels(work: Path, base_version: str | None = None) -> dict[str, Path]:
    """On the host: the agent's wheel from this checkout (pip wheel, as build.sh makes it),
    and two releases made from it: "good" (version +good) and "broken" (+broken, whose agent
    installs and passes check-config but cannot start)."""
    src = work / "src"
    shutil.copytree(REPO / "agent", src / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work), str(src)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(src)
    (built,) = work.glob("edge_agent-*.whl")
    version = base_version or built.name.split("-")[1]
    return {
        "good": rewheel(built, f"{version}+good"),
        "broken": rewheel(built, f"{version}+broken", broken=True),
    }


def rewheel(wheel: Path, version: str, broken: bool = False) -> Path:
    """The same wheel as release ``version`` (renamed dist-info, __version__, METADATA and a
    new RECORD); ``broken``: runtime.py imports a module that does not exist."""
    old = wheel.name.split("-")[1]
    out = wheel.with_name(wheel.name.replace(f"-{old}-", f"-{version}-"))
    records: list[str] = []
    record = f"edge_agent-{version}.dist-info/RECORD"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            name = item.filename.replace(
                f"edge_agent-{old}.dist-info", f"edge_agent-{version}.dist-info"
            )
            data = src.read(item)
            if name == "agent/__init__.py":
                data = data.replace(f'"{old}"'.encode(), f'"{version}"'.encode())
            elif name.endswith(".dist-info/METADATA"):
                data = data.replace(f"Version: {old}\n".encode(), f"Version: {version}\n".encode())
            elif name == "agent/shell/runtime.py" and broken:
                data += b"\nimport edge_agent_module_that_is_not_there  # noqa\n"
            if name == record:
                continue
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{name},sha256={digest.decode()},{len(data)}")
            dst.writestr(name, data)
        dst.writestr(record, "\n".join([*records, f"{record},,"]) + "\n")
    return out


def _update(sh: Sh, args: str) -> tuple[int | None, dict[str, Any], str]:
    out = sh(f"edge-agent self-update --json {args}; echo rc=$?")
    lines = out.strip().splitlines()
    rc = int(lines[-1][3:]) if lines and lines[-1].startswith("rc=") else None
    doc: dict[str, Any] = {}
    for line in reversed(lines[:-1]):
        try:
            doc = json.loads(line)
            break
        except ValueError:
            continue
    return rc, doc, out


def check_self_update(
    sh: Sh,
    c: Checks,
    put: Callable[[Path, str], None],
    wheels: dict[str, Path],
    deadline: float = 180,
    members: int | None = None,
) -> None:
    """Update to "good", then try "broken": rolled back by itself. ``members``: how many
    members must be alive afterwards (default: as many as before the update)."""
    print("self-update (under the image's systemd)")
    alive = 'edge-agent members --json | grep -c \'"state": "alive"\''
    if members is None:
        counted = sh(alive).strip()
        members = int(counted) if counted.isdigit() else 0
    for w in wheels.values():
        put(w, f"/root/{w.name}")
    before = sh("readlink -f /opt/edge-agent/venv; edge-agent --version").split()
    rc, doc, out = _update(sh, f"--deadline {deadline:g} /root/{wheels['good'].name}")
    good_version = wheels["good"].name.split("-")[1]
    c.check(
        rc == 0 and str(doc.get("release", "")).startswith(good_version),
        f"self-update to {good_version}: exit 0",
        out[-1500:],
    )
    health = sh("edge-agent status --json")
    c.check(
        f'"version": "{good_version}"' in health,
        "the agent answers as the new version",
        health[:600],
    )
    links = sh(
        "readlink /opt/edge-agent/venv /opt/edge-agent/previous; ls /opt/edge-agent/releases"
    )
    c.check(
        f"releases/{good_version}-" in links and "-initial" in links,
        "venv -> the new release, previous -> the image's venv (kept)",
        links,
    )
    c.check(
        sh("systemctl is-active edge-agent").strip() == "active",
        "edge-agent active (READY) under systemd after the update",
    )
    rc, doc, out = _update(sh, f"--deadline 60 /root/{wheels['broken'].name}")
    c.check(
        rc == 1 and "rolled back" in str(doc.get("message")),
        "a broken release: exit 1, rolled back",
        out[-1500:],
    )
    now = sh("readlink /opt/edge-agent/venv; edge-agent --version; systemctl is-active edge-agent")
    c.check(
        f"{good_version}" in now and "broken" not in now and now.strip().endswith("active"),
        "rolled back to the good release by itself, active again",
        now,
    )
    seen = sh(alive).strip()
    c.check(seen == str(members), f"{members} members alive after the rollback", seen)
    print(f"  .     before: {' '.join(before)}")


# --- the call site in boot_test.py ----------------------------------------------------------------


class _Check:
    """boot_test's ``check`` function as the Checks object the functions above take."""

    def __init__(self, check: Callable[..., bool]) -> None:
        self.check = check


def put_through_shell(shell: Callable[..., Any], local: Path, remote: str) -> None:
    """Copy a file into the guest with shell commands only (base64 in 60 kB pieces: one
    argument may not exceed 128 kB), then compare its sha256."""
    data = base64.b64encode(local.read_bytes()).decode()
    tmp = shlex.quote(remote + ".b64")
    shell(f": > {tmp}")
    for i in range(0, len(data), 60000):
        shell(f"printf %s {data[i : i + 60000]} >> {tmp}", timeout=120)
    r = shell(
        f"base64 -d {tmp} > {shlex.quote(remote)} && rm {tmp} && sha256sum {shlex.quote(remote)}"
    )
    want = hashlib.sha256(local.read_bytes()).hexdigest()
    if not str(r.stdout).startswith(want):
        raise RuntimeError(f"copying {local.name} into the guest: {r.stdout} {r.stderr}")


def check_real_header_chip(sh: Sh, c: Checks, label: str, python: str = AGENT_PYTHON) -> None:
    """On an emulated board (QEMU raspi4b): the kernel's own pin controller is found by its
    label, and the LEDs open it through lgpio (gpiozero's pin map from the label: QEMU's
    firmware-less boot has no board revision in the device tree)."""
    print(f"LEDs: the board's own header chip ({label})")
    out = sh(f"{python} -m agent.shell.gpiochip --json")
    try:
        choice = json.loads(out.strip().splitlines()[-1])["choice"]
    except (ValueError, IndexError, KeyError):
        choice = {}
    c.check(choice.get("label") == label, f"the header chip found by its label {label}", out)
    out = sh(f"cd /tmp && {python} -c {shlex.quote(LED_SCRIPT)} - auto 2>&1 | tail -n 1")
    try:
        got: dict[str, Any] = json.loads(out)
    except ValueError:
        got = {}
    c.check(
        got.get("kind") == "gpio" and got.get("problem") is None,
        "the LEDs drive it through lgpio (no fault)",
        out,
    )


def run_checks(shell: Callable[..., Any], check: Callable[..., bool], machine: str) -> None:
    """image/boot_test.py's hook (run_pi_checks): ``shell(command, timeout=120)`` runs a
    command as root in the guest and returns a CompletedProcess; ``check(ok, what,
    detail="")`` records a result; ``machine`` is "virt" or "raspi4b".

    virt: gpio-sim chips with each board's label, then self-update (a good release, then a
    broken one rolled back). raspi4b: the emulated Pi 4's own GPIO chip, by its label."""
    c = _Check(check)

    def sh(command: str) -> str:
        r = shell(command, timeout=900)
        return str(r.stdout) + (str(r.stderr) if r.returncode else "")

    if machine == "raspi4b":
        check_real_header_chip(sh, c, "pinctrl-bcm2711")
        return
    check_gpiochip_by_label(sh, c)
    with tempfile.TemporaryDirectory(prefix="edge-agent-pi-checks.") as work:
        wheels = release_wheels(Path(work))
        check_self_update(
            sh, c, lambda local, remote: put_through_shell(shell, local, remote), wheels, 300
        )


# --- run here ------------------------------------------------------------------------------------


class _Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {what}", flush=True)
        else:
            self.failed.append(what)
            print(f"  FAIL  {what}: {detail.strip()[:800]}", flush=True)
        return ok


def local_sh(command: str) -> str:
    r = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
    return r.stdout + (r.stderr if r.returncode else "")


def main() -> int:
    ap = argparse.ArgumentParser(description="run pi_checks on this machine (as root)")
    ap.add_argument("check", choices=["gpiochip"])
    ap.add_argument("--python", default=AGENT_PYTHON, help="the agent's Python")
    ap.add_argument("--env", default="", help="a prefix for it, e.g. PYTHONPATH=/src")
    args = ap.parse_args()
    c = _Checks()
    check_gpiochip_by_label(local_sh, c, args.python, args.env)
    print(f"\n{c.passed} passed, {len(c.failed)} failed", flush=True)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
