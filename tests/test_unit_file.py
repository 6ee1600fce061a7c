"""systemd/edge-agent.service: valid for systemd, hardened, and consistent with the agent.

The checks use the real systemd-analyze from Debian's `systemd` package (bootstrap.sh
installs it for tests). Without it they fail in CI and skip elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.shell.systemd import watchdog_interval
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "edge-agent.service"
MAX_EXPOSURE = 2.5


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        reason = "systemd-analyze not found (apt-get install systemd)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return exe


def directives() -> dict[str, list[str]]:
    """The unit's Key=value lines, each key's values in order (repeated keys accumulate)."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_verify(systemd_analyze: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit, byte for byte, inside a scratch root.

    verify insists that ExecStart's binary exists, and /opt/edge-agent/venv does not on a
    build machine. So the test builds a root directory holding the unit, stub executables
    at the unit's command paths, and a copy of this machine's stock units (verify loads
    the dependencies the unit implies, like sysinit.target), and points --root at it.
    """
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    stock = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
        None,
    )
    assert stock is not None, "no stock unit directory on this machine"
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    d = directives()
    for key in ("ExecStart", "ExecReload"):
        exe = d[key][0].split()[0].lstrip("-@:+!")
        stub = root / exe.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    r = _run([systemd_analyze, "verify", f"--root={root}", UNIT.name])
    output = (r.stdout + r.stderr).strip()
    assert r.returncode == 0, output
    # Unknown keys and bad values are only warnings (exit 0): any line about us fails.
    about_us = [line for line in output.splitlines() if "edge-agent" in line]
    assert not about_us, output


def test_verify_catches_mistakes(systemd_analyze: str, tmp_path: Path) -> None:
    """The verify test above would notice a broken unit (so its silence means something)."""
    broken = tmp_path / "edge-agent.service"
    broken.write_text(UNIT.read_text().replace("ProtectClock=yes", "ProtectClok=yes"))
    r = _run([systemd_analyze, "verify", str(broken)])
    assert "Unknown key" in r.stdout + r.stderr


def test_security_exposure(systemd_analyze: str) -> None:
    r = _run([systemd_analyze, "security", "--offline=yes", "--no-pager", str(UNIT)])
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    exposure = float(m.group(1))
    assert exposure <= MAX_EXPOSURE, r.stdout
    print(f"systemd-analyze security exposure: {exposure}")


def test_unit_matches_what_the_agent_does() -> None:
    """The decisions docs/systemd.md explains, pinned so an edit cannot drop one silently."""
    d = directives()
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["ExecStart"].startswith("/opt/edge-agent/venv/bin/edge-agent run --config ")
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # The agent pings at half of WatchdogSec: 15 s for 30 s.
    assert one["WatchdogSec"] == "30s"
    assert watchdog_interval({"WATCHDOG_USEC": str(30 * 1_000_000)}) == 15.0
    assert one["TimeoutStopSec"] == "10s"
    assert one["User"] == one["Group"] == "edge-agent"
    assert "DynamicUser" not in one
    assert "gpio" in one["SupplementaryGroups"].split()
    assert one["PrivateDevices"] == "no" and one["DevicePolicy"] == "closed"
    assert {"char-gpiochip rw", "char-*gpiomem rw"} <= set(d["DeviceAllow"])
    # gpiozero reads the board revision from /proc (device-tree or cpuinfo) to map pins.
    assert one.get("ProcSubset", "all") != "pid"
    assert one["MemoryDenyWriteExecute"] == "yes"
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    families = set(one["RestrictAddressFamilies"].split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


# The rules systemd 252 installs for MemoryDenyWriteExecute=yes (a seccomp filter):
# mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC, and shmat with
# SHM_EXEC fail with EPERM. The child installs the same filter on itself, proves it is
# active, then does what the agent does: import its dependencies, AES-GCM, ctypes
# callbacks (zeroconf's ifaddr, libffi), TLS, the metrics registry, the LEDs.
_MDWE_CHILD = r"""
import ctypes, errno, mmap, platform, struct, sys

ARCHES = {  # machine: (AUDIT_ARCH_*, mmap syscalls, mprotect syscalls, shmat syscalls)
    "x86_64": (0xC000003E, (9,), (10, 329), (30,)),
    "aarch64": (0xC00000B7, (222,), (226, 288), (196,)),
    "armv7l": (0x40000028, (192,), (125, 394), (305,)),
}
arch, mmaps, mprotects, shmats = ARCHES[platform.machine()]
LD_W_ABS, ALU_AND_K, JEQ_K, JSET_K, RET_K = 0x20, 0x54, 0x15, 0x45, 0x06
ALLOW, DENY = 0x7FFF0000, 0x00050000 | errno.EPERM
PROT_WRITE, PROT_EXEC, SHM_EXEC = 2, 4, 0o100000
ARG2 = 16 + 2 * 8  # seccomp_data.args[2] (prot / shmflg), low 32 bits

def ins(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)

def deny_if_all(bits):
    return [ins(LD_W_ABS, 0, 0, ARG2), ins(ALU_AND_K, 0, 0, bits), ins(JEQ_K, 0, 1, bits),
            ins(RET_K, 0, 0, DENY), ins(RET_K, 0, 0, ALLOW)]

def deny_if_any(bit):
    return [ins(LD_W_ABS, 0, 0, ARG2), ins(JSET_K, 0, 1, bit),
            ins(RET_K, 0, 0, DENY), ins(RET_K, 0, 0, ALLOW)]

prog = [ins(LD_W_ABS, 0, 0, 4), ins(JEQ_K, 1, 0, arch), ins(RET_K, 0, 0, ALLOW)]
for nrs, block in ((mmaps, deny_if_all(PROT_WRITE | PROT_EXEC)),
                   (mprotects, deny_if_any(PROT_EXEC)), (shmats, deny_if_any(SHM_EXEC))):
    for nr in nrs:
        prog += [ins(LD_W_ABS, 0, 0, 0), ins(JEQ_K, 0, len(block), nr), *block]
prog.append(ins(RET_K, 0, 0, ALLOW))
code = b"".join(prog)
buf = ctypes.create_string_buffer(code, len(code))

class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

fprog = SockFprog(len(prog), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit(f"SKIP: PR_SET_NO_NEW_PRIVS: errno {ctypes.get_errno()}")
if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
    sys.exit(f"SKIP: seccomp unavailable: errno {ctypes.get_errno()}")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("filter not active: a W+X mapping was allowed")
except PermissionError:
    pass

import aiohttp, mmh3, msgpack, zeroconf, gpiozero, prometheus_client, ssl, ifaddr
from agent.membership.aesgcm import AesGcm
aes = AesGcm(b"k" * 16)
assert aes.open(b"n" * 12, aes.seal(b"n" * 12, b"hi", b"ad"), b"ad") == b"hi"
assert ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)() == 7
ssl.create_default_context()
ifaddr.get_adapters()
try:
    import systemd.journal, systemd.daemon
except ImportError:
    print("systemd-python: missing")
else:
    systemd.journal.JournalHandler(SYSLOG_IDENTIFIER="edge-agent")
    assert systemd.daemon.notify("READY=1") is False  # $NOTIFY_SOCKET unset: loaded, not sent
    print("systemd-python: loaded")
import agent.shell.config, agent.shell.metrics, agent.shell.leds, agent.shell.systemd
agent.shell.metrics.Metrics()
from gpiozero.pins.mock import MockFactory
leds = agent.shell.leds.Leds(agent.shell.config.LedsConfig(), pin_factory=MockFactory())
leds.set(agent.shell.leds.LedState.STARTING)
leds.close()
print("OK")
"""


def test_agent_works_under_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes cannot be tried without systemd as PID 1; its filter can."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64", "armv7l"):
        require(False, f"a seccomp filter written for {sys.platform}/{platform.machine()}")
    r = subprocess.run(
        [sys.executable, "-c", _MDWE_CHILD],
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    if r.returncode != 0 and r.stderr.startswith("SKIP:"):
        require(False, r.stderr.strip())
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr
    # systemd-python's C extensions are part of what runs under the filter: on this machine
    # too when it has the library, and always in CI (the product dependency, not optional).
    if os.environ.get("CI") == "true" or importlib.util.find_spec("systemd") is not None:
        assert "systemd-python: loaded" in r.stdout, r.stdout
