#!/usr/bin/env python3
"""Boot the built image under QEMU and prove it comes up as a working edge-agent node.

`make image-test` runs this (as root, after `make image`). It boots the image under two
emulations, one after the other (`--machine virt|raspi4b|all`, default all):

  virt     two VMs of QEMU's generic `virt` machine (-cpu cortex-a72, the host's
           qemu-system-aarch64) that form one gossip cluster over a private link
           (QEMU socket netdev over 127.0.0.1; addresses from TEST-NET-1, 192.0.2.0/24);
  raspi4b  one emulated Raspberry Pi 4 (QEMU >= 9: Debian 12's 7.2 has no raspi4b, so
           trixie's qemu-system-aarch64 runs from a trixie amd64 root that this script
           builds once with mmdebstrap into the image cache). It boots what a Pi 4's
           firmware would: the kernel and initramfs named by config.txt, the board's own
           bcm2711-rpi-4-b.dtb and cmdline.txt as written, all read from the image's boot
           partition, the root from the image as an SD card. QEMU's raspi4b has no GENET
           Ethernet, so the guest's network is a USB network adapter on the board's USB
           (dwc2) port, which the image's DHCP config already covers (usb*).

For each VM it copies the image (sparse) onto a bigger "card" (so the first-boot growth
has room), writes the first-boot settings onto the copy's FAT boot partition with mtools
(edge-agent.toml, a gossip keyring, an API token, authorized_keys, a hostname for the
first VM only, a networkd file for the VM-to-VM link), boots it under the image's own
systemd, and then, through forwarded loopback ports only (QEMU user networking with
restrict=on: the guests reach nothing else), checks that

  - the agent reached READY (Type=notify: ActiveState=active) and /v1/health answers 200;
  - the hostname and the config from the boot partition were applied (and the secrets
    removed from it); a board without a hostname file named itself pi-<8 hex digits>;
  - the hardware watchdog is armed (RuntimeWatchdogUSec=14s, /dev/watchdog0 active) and
    the unit's own WatchdogSec is set;
  - journald writes to /run only, no swap, / mounted noatime,commit=30, root grown;
  - ssh takes keys only and root has no password;
  - a bad edge-agent.toml is rejected without touching the running config;
  - (raspi4b) the kernel runs on the Pi 4 device tree, / is on the SD card, the GPIO chip
    is there;
  - the checks of image/pi_checks.py, if that file exists (see run_pi_checks).

It prints the time from starting QEMU to the first 200 from /v1/health and to READY.
Missing host tools (QEMU, mtools, fdisk, ssh, mmdebstrap) are installed with apt when run
as root, as `make image` does. Exit status 0 when every check passed. Python stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_DIR = Path(__file__).resolve().parent
DEFAULT_IMAGE = IMAGE_DIR / "out" / "edge-agent.img"
GOSSIP_KEY = "T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s="  # a test key (32 bytes, AES-256)
API_TOKEN = "image-boot-test-token"
HOST_TOOLS = {
    "qemu-system-aarch64": "qemu-system-arm",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mmdebstrap": "mmdebstrap",  # for the trixie root that runs QEMU's raspi4b
    "fdtput": "device-tree-compiler",  # raspi4b: the test's copy of the dtb (qemu_pi4_dtb)
}
CACHE = Path(os.environ.get("EDGE_IMAGE_CACHE", "/var/cache/edge-agent-image"))
MIRROR = os.environ.get("EDGE_IMAGE_MIRROR", "http://deb.debian.org/debian")
QEMU_ROOT = CACHE / "qemu-trixie-amd64"  # trixie's qemu-system-arm (10.x): has raspi4b
RASPI_CARD = 4 << 30  # QEMU wants an SD card whose size is a power of 2
RASPI_DTB = "bcm2711-rpi-4-b.dtb"
# QEMU's raspi4b does not map the BCM2711's HDMI block (the VC address range 0x7ef00000 up):
# the first driver that reads a register there (the HDMI interrupt controller's, built into
# Debian's kernel) takes a synchronous external abort and the kernel panics 2 s into the
# boot, before any console driver has printed a line. QEMU itself disables the nodes it
# knows it lacks (PCIe, GENET, RNG200, thermal); qemu_pi4_dtb disables these too.
QEMU_UNMAPPED = (0x7EF00000, 0x7F000000)
# QEMU's raspi4b wires the SD card to the Arasan SDHCI (mmc@7e300000, the Wi-Fi's SDIO
# controller on a real Pi 4), not to EMMC2 (mmc@7e340000, the card slot on a real Pi 4).
# In the Pi 4 tree that controller waits for the Wi-Fi's power sequence, whose reset line
# is on the firmware's GPIO expander, which QEMU does not emulate (its mailbox answers no
# GPIO requests): without the mmc-pwrseq property it probes and finds the card.
QEMU_SD_NODE = "/soc/mmc@7e300000"
# Added to cmdline.txt's arguments for raspi4b only. QEMU's BCM2835 watchdog resets the
# board as soon as it is started (systemd arms it with RuntimeWatchdogSec=14s right after
# it starts: the emulated Pi rebooted in a loop 40 s into each boot, silently), so systemd
# is told not to arm it; the driver still binds it.
RASPI_TEST_ARGS = "systemd.watchdog_sec=off"
# The unit's watchdog under TCG. The agent pings every 15 s from its event loop and systemd
# kills it after 30 s without one. Under TCG the guest's clocks keep the host's pace
# whatever CPU QEMU gets, and on a shared host a niced QEMU can get little of a core for
# a while (CpuShare measures it). By default the test enforces the watchdog as a Pi does;
# `--watchdog-allowance` (for a loaded host) adds this to the test's kernel command line
# (the card's cmdline.txt is not changed): systemd then still times every ping and logs
# "Watchdog disabled! Ignoring watchdog timeout" for each late one, without killing;
# still_running counts those either way and checks that the loop still pings
# (docs/image.md, "The agent's watchdog under TCG").
TCG_ALLOWANCE = "systemd.service_watchdogs=no"
PING_STALE = 120.0  # s since the last ping at the end of the checks: the loop has stopped
# cmdline.txt's serial console is the mini UART (console=ttyS1, GPIO 14/15 on a real Pi 4).
# QEMU's model of it raises its interrupt without end once a program opens the port (here
# systemd-getty-generator, 20 s into the boot): CPU 0 spent minutes in the handler (RCU
# stalls, soft lockups) and the SD card's interrupts starved (mmc0 timeouts). The test's
# kernel console is the PL011 instead (ttyAMA0, QEMU's first serial port), so nothing opens
# ttyS1; the rest of cmdline.txt is kept.
RASPI_CONSOLE = ("console=ttyS1", "console=ttyAMA0")
# Runs QEMU from the trixie root: the test's work directory bind-mounted at the same path,
# /dev and /proc for QEMU, all in a private mount namespace that vanishes with QEMU.
IN_QEMU_ROOT = """
root=$1 work=$2; shift 2
mkdir -p "$root$work"
mount --bind "$work" "$root$work"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
exec chroot "$root" "$@"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


def ensure_host_tools(tools: dict[str, str]) -> bool:
    """Install what is missing with apt when root (as image/build.sh does); else say what."""
    missing = {t: p for t, p in tools.items() if not shutil.which(t)}
    if not missing:
        return True
    pkgs = sorted(set(missing.values()))
    if os.geteuid() != 0:
        print(
            "image-test: missing host tools: "
            + ", ".join(f"{t} (apt: {p})" for t, p in missing.items())
            + "; run as root (sudo make image-test) to have them installed",
            file=sys.stderr,
        )
        return False
    print(f"image-test: installing host packages: {' '.join(pkgs)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    still = [t for t in missing if not shutil.which(t)]
    if still:
        print(f"image-test: still missing after apt: {', '.join(still)}", file=sys.stderr)
    return not still


def qemu_root_version() -> str | None:
    qemu = QEMU_ROOT / "usr/bin/qemu-system-aarch64"
    if not qemu.exists():
        return None
    r = subprocess.run(
        ["chroot", str(QEMU_ROOT), "qemu-system-aarch64", "-version"],
        text=True,
        capture_output=True,
        check=False,
    )
    m = re.search(r"version (\d+\.\d+(\.\d+)?)", r.stdout)
    return m[1] if m else None


def ensure_qemu_root() -> str:
    """A Debian trixie amd64 root with qemu-system-arm, built once (about 1 minute)."""
    version = qemu_root_version()
    if version:
        return version
    print(f"building {QEMU_ROOT} (Debian trixie amd64 + qemu-system-arm; once)")
    t0 = time.monotonic()
    tmp = QEMU_ROOT.with_name(QEMU_ROOT.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mmdebstrap",
            "--variant=apt",
            "--mode=root",
            "--format=directory",
            "--include=qemu-system-arm",
            '--aptopt=APT::Install-Recommends "false"',
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            '--customize-hook=chroot "$1" apt-get clean',
            "trixie",
            str(tmp),
            f"deb {MIRROR} trixie main",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    shutil.rmtree(QEMU_ROOT, ignore_errors=True)
    tmp.rename(QEMU_ROOT)
    version = qemu_root_version()
    if not version:
        raise RuntimeError(f"no working qemu-system-aarch64 in {QEMU_ROOT}")
    print(f"  trixie QEMU {version} ready in {time.monotonic() - t0:.0f} s")
    return version


@dataclass
class Vm:
    name: str
    index: int
    work: Path
    hostname: str | None
    link_ip: str  # the address the agent advertises
    peer_ip: str | None
    link: bool = True  # a second NIC on the VM-to-VM link (virt); raspi4b has only usb0
    ssh_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    t_ssh: float | None = None
    t_health: float | None = None
    img: Path = Path()
    config: str = ""

    @property
    def mac_user(self) -> str:
        return f"52:54:00:12:34:{self.index + 10:02x}"

    @property
    def mac_link(self) -> str:
        return f"52:54:00:ed:9e:{self.index + 10:02x}"

    def ssh(self, key: Path, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``command`` as root in the guest. A guest too slow to answer within
        ``timeout`` is a failed command (exit 124, as timeout(1)), not an exception: the
        boot wait polls with short timeouts while a starved guest's sshd is still slow."""
        cmd = [
            "ssh",
            "-i",
            str(key),
            "-p",
            str(self.ssh_port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            "root@127.0.0.1",
            command,
        ]
        try:
            return subprocess.run(cmd, text=True, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else ""
            return subprocess.CompletedProcess(cmd, 124, out, f"ssh: no answer in {timeout:.0f} s")


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failed.append(what)
            print(f"  FAIL  {what}" + (f": {detail.strip()[:600]}" if detail else ""))
        return ok


def boot_partition_offset(img: Path) -> int:
    table = json.loads(run(["sfdisk", "--json", str(img)]).stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    first = table["partitions"][0]
    return int(first["start"]) * sector


def mtools(*args: str) -> str:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    return run(list(args), env=env).stdout


def agent_config(vm: Vm) -> str:
    join = f'["{vm.peer_ip}:7946"]' if vm.peer_ip else "[]"
    return f"""# written by image/boot_test.py
[node]
tags = {{ site = "qemu", vm = "{vm.name}" }}

[cluster]
name = "imagetest"
bind = "0.0.0.0:7946"
advertise = "{vm.link_ip}:7946"
join = {join}
discover = false
keyring_file = "/etc/edge-agent/keyring"

[api]
listen = "0.0.0.0:8080"
token_file = "/etc/edge-agent/api-token"

[leds]
enabled = false

[[origin]]
id = "guest-ssh"
url = "tcp://127.0.0.1:22"
interval = "2s"
timeout = "1s"
"""


@dataclass
class BootFiles:
    """What a Pi's firmware would take from the boot partition, copied out of it."""

    kernel: Path
    initrd: Path
    cmdline: str
    dtb: Path | None = None


def prepare(vm: Vm, base: Path, pubkey: str, card_size: int, dtb: str | None = None) -> BootFiles:
    """Copy the image onto a card of card_size, put the first-boot files on its boot
    partition, and take out the kernel and initramfs that config.txt names (and a dtb)."""
    vm.img = vm.work / f"{vm.name}.img"
    run(["cp", "--sparse=always", str(base), str(vm.img)])
    with open(vm.img, "r+b") as f:  # a bigger "card": the root must grow into it
        f.truncate(card_size)
    fat = f"{vm.img}@@{boot_partition_offset(vm.img)}"
    files = vm.work / f"{vm.name}-boot"
    files.mkdir()
    vm.config = agent_config(vm)
    (files / "edge-agent.toml").write_text(vm.config)
    (files / "edge-agent.keyring").write_text(GOSSIP_KEY + "\r\n")  # CRLF, as from a laptop
    (files / "edge-agent.token").write_text(API_TOKEN + "\n")
    (files / "authorized_keys").write_text(pubkey)
    if vm.hostname:
        (files / "hostname").write_text(vm.hostname + "\n")
    if vm.link:
        (files / "network").mkdir()
        (files / "network" / "10-test-link.network").write_text(
            f"[Match]\nMACAddress={vm.mac_link}\n\n[Network]\nAddress={vm.link_ip}/24\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )
    for p in sorted(files.iterdir()):
        mtools("mcopy", "-s", "-o", "-i", fat, str(p), "::/")
    # As the firmware does: config.txt names the kernel and the initramfs.
    config = mtools("mtype", "-i", fat, "::/config.txt")
    kline = re.search(r"^kernel=(\S+)", config, re.M)
    iline = re.search(r"^initramfs\s+(\S+)", config, re.M)
    if not kline or not iline:
        raise RuntimeError(f"config.txt names no kernel or initramfs:\n{config}")
    kernel, initrd = kline[1], iline[1]
    cmdline = mtools("mtype", "-i", fat, "::/cmdline.txt").strip()
    out = BootFiles(vm.work / f"{vm.name}-{kernel}", vm.work / f"{vm.name}-{initrd}", cmdline)
    mtools("mcopy", "-i", fat, f"::/{kernel}", str(out.kernel))
    mtools("mcopy", "-i", fat, f"::/{initrd}", str(out.initrd))
    if dtb:
        out.dtb = vm.work / f"{vm.name}-{dtb}"
        mtools("mcopy", "-i", fat, f"::/{dtb}", str(out.dtb))
    return out


def qemu_pi4_dtb(dtb: Path) -> list[str]:
    """Adapt the test's copy of the card's Pi 4 device tree to what QEMU's raspi4b emulates
    (the card itself is not changed; a real Pi 4 boots the tree as it is). Returns what was
    changed, to be printed."""
    changes: list[str] = []
    for node in run(["fdtget", "-l", str(dtb), "/soc"]).stdout.split():
        try:
            addr = int(node.partition("@")[2], 16)
        except ValueError:
            continue
        if QEMU_UNMAPPED[0] <= addr < QEMU_UNMAPPED[1]:
            run(["fdtput", "-t", "s", str(dtb), f"/soc/{node}", "status", "disabled"])
            changes.append(f"/soc/{node} disabled")
    if "mmc-pwrseq" in run(["fdtget", "-p", str(dtb), QEMU_SD_NODE]).stdout.split():
        run(["fdtput", "-d", str(dtb), QEMU_SD_NODE, "mmc-pwrseq"])
        changes.append(f"{QEMU_SD_NODE} without mmc-pwrseq")
    return changes


def start(vm: Vm, boot: BootFiles, link: str, smp: int, mem: int, extra: str = "") -> None:
    """QEMU's generic virt machine: the image's kernel, root by label, virtio devices."""
    console = vm.work / f"{vm.name}-console.log"
    cmd = [
        "qemu-system-aarch64",
        "-M",
        "virt",
        "-cpu",
        "cortex-a72",
        "-smp",
        str(smp),
        "-m",
        str(mem),
        "-accel",
        "tcg,thread=multi",
        "-kernel",
        str(boot.kernel),
        "-initrd",
        str(boot.initrd),
        # Pi-like: root by label, eth0; console on QEMU's PL011
        "-append",
        " ".join(
            filter(
                None,
                [
                    "root=LABEL=EDGEROOT rw rootwait fsck.repair=yes net.ifnames=0 console=ttyAMA0",
                    extra,
                ],
            )
        ),
        "-drive",
        f"file={vm.img},format=raw,if=none,id=d0,cache=unsafe",
        "-device",
        "virtio-blk-pci,drive=d0",
        "-netdev",
        "user,id=n0,restrict=on,"
        f"hostfwd=tcp:127.0.0.1:{vm.ssh_port}-:22,hostfwd=tcp:127.0.0.1:{vm.api_port}-:8080",
        # romfile=: no PXE option ROM (the kernel is given), so no ipxe-qemu package needed
        "-device",
        f"virtio-net-pci,netdev=n0,mac={vm.mac_user},romfile=",
        "-netdev",
        f"socket,id=n1,{link}",
        "-device",
        f"virtio-net-pci,netdev=n1,mac={vm.mac_link},romfile=",
        # a PCI watchdog stands in for the BCM2835 one (same /dev/watchdog0 to systemd)
        "-device",
        "i6300esb",
        "-object",
        "rng-random,filename=/dev/urandom,id=rng0",
        "-device",
        "virtio-rng-pci,rng=rng0",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{console}",
    ]
    vm.started = time.monotonic()
    with open(vm.work / f"{vm.name}-qemu.err", "wb") as err:
        vm.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )


def start_raspi4b(vm: Vm, boot: BootFiles) -> None:
    """QEMU's raspi4b from the trixie root: kernel, initramfs, dtb and cmdline.txt as the
    Pi 4's firmware would load them, the image as its SD card, a USB network adapter."""
    assert boot.dtb is not None
    serial0, serial1 = vm.work / f"{vm.name}-console.log", vm.work / f"{vm.name}-ttyS1.log"
    qemu = [
        "qemu-system-aarch64",
        "-M",
        "raspi4b",
        "-m",
        "2G",
        # one host thread for the 4 vCPUs (raspi4b cannot have fewer): the machine that runs
        # this has 2 shared cores (the stalls first blamed on a thread per vCPU were the mini
        # UART's, RASPI_CONSOLE; a thread per vCPU was not tried again after that fix)
        "-accel",
        "tcg,thread=single",
        "-kernel",
        str(boot.kernel),
        "-initrd",
        str(boot.initrd),
        "-dtb",
        str(boot.dtb),
        "-append",
        boot.cmdline,
        "-drive",
        f"file={vm.img},format=raw,if=sd,cache=unsafe",
        "-netdev",
        "user,id=n0,restrict=on,"
        f"hostfwd=tcp:127.0.0.1:{vm.ssh_port}-:22,hostfwd=tcp:127.0.0.1:{vm.api_port}-:8080",
        "-device",
        f"usb-net,netdev=n0,mac={vm.mac_user}",
        "-display",
        "none",
        "-monitor",
        "none",
        # the PL011 (ttyAMA0: Bluetooth on a real Pi 4; the test's console, RASPI_CONSOLE),
        # then the mini UART (ttyS1: GPIO 14/15, cmdline.txt's serial console)
        "-serial",
        f"file:{serial0}",
        "-serial",
        f"file:{serial1}",
    ]
    cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", IN_QEMU_ROOT]
    cmd += ["sh", str(QEMU_ROOT), str(vm.work), *qemu]
    vm.started = time.monotonic()
    with open(vm.work / f"{vm.name}-qemu.err", "wb") as err:
        vm.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )


def health(vm: Vm) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{vm.api_port}/v1/health", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def api_json(vm: Vm, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{vm.api_port}{path}", timeout=5) as r:
        return json.loads(r.read())


def wait_up(vms: list[Vm], key: Path, deadline: float) -> None:
    pending = list(vms)
    while pending and time.monotonic() < deadline:
        for vm in list(pending):
            assert vm.proc is not None
            if vm.proc.poll() is not None:
                pending.remove(vm)
                continue
            if vm.t_health is None and health(vm)[0] == 200:
                vm.t_health = time.monotonic() - vm.started
                print(f"  {vm.name}: /v1/health 200 after {vm.t_health:.1f} s")
            if vm.t_ssh is None and vm.ssh(key, "true", timeout=15).returncode == 0:
                vm.t_ssh = time.monotonic() - vm.started
                print(f"  {vm.name}: ssh after {vm.t_ssh:.1f} s")
            if vm.t_health is not None and vm.t_ssh is not None:
                pending.remove(vm)
        time.sleep(1)


def check_vm(
    vm: Vm, key: Path, c: Checks, base_root_mib: int, machine: str = "virt"
) -> dict[str, float]:
    print(f"{vm.name} (ssh 127.0.0.1:{vm.ssh_port}, api 127.0.0.1:{vm.api_port}):")
    figures: dict[str, float] = {}

    def sh(command: str) -> str:
        r = vm.ssh(key, command)
        return r.stdout + (r.stderr if r.returncode else "")

    c.check(vm.t_ssh is not None, "ssh with the key from authorized_keys on the boot partition")
    code, body = health(vm)
    c.check(code == 200, "GET /v1/health answers 200", f"{code} {body}")
    if vm.t_ssh is None:  # every check below reads the guest over ssh: say so once
        c.check(False, "the guest's own checks (they need ssh)", "skipped: ssh never answered")
        return figures
    show = dict(
        line.split("=", 1)
        for line in sh(
            "systemctl show edge-agent -p ActiveState -p SubState -p StatusText -p WatchdogUSec "
            "-p NRestarts -p ActiveEnterTimestampMonotonic -p ExecMainStartTimestampMonotonic"
        ).splitlines()
        if "=" in line
    )
    c.check(
        show.get("ActiveState") == "active" and show.get("SubState") == "running",
        "edge-agent READY under the image's systemd (Type=notify: active/running)",
        str(show),
    )
    restarted = not c.check(show.get("NRestarts") == "0", "edge-agent never restarted", str(show))
    if restarted or show.get("ActiveState") != "active":
        print_agent_journal(vm, key)
    c.check(show.get("WatchdogUSec") == "30s", "the unit's WatchdogSec=30s is set", str(show))
    ready_us = int(show.get("ActiveEnterTimestampMonotonic", "0") or 0)
    if ready_us:
        figures["kernel_to_ready_s"] = ready_us / 1e6
        print(f"  .     READY {ready_us / 1e6:.1f} s after the guest kernel started")
    hostname = sh("hostname").strip()
    if vm.hostname:
        c.check(
            hostname == vm.hostname, f"hostname from the boot partition ({vm.hostname})", hostname
        )
    else:
        c.check(
            re.fullmatch(r"pi-[0-9a-f]{8}", hostname) is not None,
            "hostname unique per board without a hostname file (pi-<8 hex>)",
            hostname,
        )
        mid = sh("cat /etc/machine-id").strip()
        c.check(
            mid.endswith(hostname[3:]), "... derived as the agent derives it (machine-id here)", mid
        )
    installed = sh("cat /etc/edge-agent/agent.toml")
    c.check(
        installed.strip() == vm.config.strip(), "edge-agent.toml from the boot partition installed"
    )
    boot_ls = sh("ls -1 /boot/firmware").split()
    c.check(
        "edge-agent.toml.applied" in boot_ls and "edge-agent.toml" not in boot_ls,
        "boot partition: edge-agent.toml renamed .applied",
        " ".join(boot_ls),
    )
    c.check(
        "edge-agent.keyring" not in boot_ls and "edge-agent.token" not in boot_ls,
        "boot partition: keyring and token removed after install",
        " ".join(boot_ls),
    )
    perms = sh("stat -c '%U:%G %a' /etc/edge-agent/keyring /etc/edge-agent/api-token").split("\n")
    c.check(
        all(p.strip() == "edge-agent:edge-agent 600" for p in perms if p.strip())
        and len(perms) >= 2,
        "keyring and token installed edge-agent:edge-agent 0600",
        "|".join(perms),
    )
    keyring = sh("cat /etc/edge-agent/keyring").strip()
    c.check(keyring == GOSSIP_KEY, "keyring installed without the laptop's CR", repr(keyring))
    # Watchdog: PID 1 holds /dev/watchdog0 with the 14 s runtime timeout.
    if machine == "raspi4b":
        # QEMU's BCM2835 watchdog resets the board the moment it is started, so the test
        # boots with systemd.watchdog_sec=off (RASPI_TEST_ARGS): the image's setting and the
        # driver bound to the SoC's watchdog are what can be checked here.
        conf = sh("cat /etc/systemd/system.conf.d/edge-agent-watchdog.conf")
        c.check(
            "RuntimeWatchdogSec=14s" in conf,
            "RuntimeWatchdogSec=14s configured (not armed: QEMU's model resets at once)",
            conf,
        )
        drv = sh("basename $(readlink -f /sys/class/watchdog/watchdog0/device/driver)").strip()
        c.check(drv == "bcm2835-wdt", "the BCM2835 watchdog is watchdog0 (bcm2835-wdt)", drv)
    else:
        c.check(
            sh("systemctl show -p RuntimeWatchdogUSec --value").strip() == "14s",
            "systemd RuntimeWatchdogSec=14s",
        )
        wd = sh("cat /sys/class/watchdog/watchdog0/state /sys/class/watchdog/watchdog0/timeout")
        c.check(
            wd.split()[:1] == ["active"],
            "hardware watchdog armed (/sys/class/watchdog/watchdog0 active)",
            wd,
        )
    # SD-card care
    jr = sh(
        "find /var/log/journal -type f 2>/dev/null; ls -d /run/log/journal/*; "
        "journalctl --header -q | grep -m1 'File path'"
    )
    c.check(
        "/var/log/journal/" not in jr and "File path: /run/log/journal/" in jr,
        "journald writes to /run only (volatile), no file under /var/log/journal",
        jr,
    )
    c.check(sh("tail -n +2 /proc/swaps").strip() == "", "no swap")
    opts = sh("findmnt -n -o OPTIONS /").strip()
    c.check("noatime" in opts and "commit=30" in opts, "/ mounted noatime,commit=30", opts)
    root_mib = int(sh("df -B1M --output=size / | tail -n 1").strip() or 0)
    figures["root_mib"] = root_mib
    c.check(
        root_mib > base_root_mib + 300,
        f"root grown to the card ({base_root_mib} -> {root_mib} MiB)",
    )
    sshd = sh(
        "sshd -T 2>/dev/null | grep -E '^(passwordauthentication|kbdinteractiveauthentication) '"
    )
    c.check(
        sshd.split() == ["passwordauthentication", "no", "kbdinteractiveauthentication", "no"],
        "sshd: no password or keyboard-interactive login",
        sshd,
    )
    shadow = sh("getent shadow | awk -F: 'length($2) > 2 {print $1}'").strip()
    c.check(shadow == "", "no account has a password", shadow)
    warnings = sh("journalctl -b -u edge-agent -p warning -o cat --no-pager -q").strip()
    for line in warnings.splitlines()[:10]:
        print(f"  .     agent warning: {line[:160]}")
    boot_log = sh("cat /boot/firmware/edge-agent-boot.log")
    c.check(
        "edge-agent.toml applied" in boot_log,
        "edge-agent-boot.log on the boot partition says what was applied",
        boot_log,
    )
    return figures


def still_running(vm: Vm, key: Path, c: Checks, restarts_expected: bool = False) -> None:
    """At the end of a machine's checks: the agent is running, its loop still pings
    systemd's watchdog, and systemd never killed it in this boot (a kill after the first
    checks would otherwise go unseen); and, unless the self-update check restarted it on
    purpose (the broken release exits and is restarted), it was never restarted. Pings
    later than the unit's 30 s are counted (killed, or only logged with TCG_ALLOWANCE)."""
    r = vm.ssh(
        key,
        "systemctl show edge-agent -p NRestarts -p SubState -p WatchdogTimestampMonotonic; "
        "echo now=$(cut -d' ' -f1 /proc/uptime); "
        "journalctl -b -u edge-agent -q --no-pager > /run/agent-journal; "
        "echo watchdog_kills=$(grep -c 'Watchdog timeout' /run/agent-journal); "
        "echo late_pings=$(grep -c 'Ignoring watchdog timeout' /run/agent-journal)",
    )
    show = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    ok = show.get("SubState") == "running" and show.get("watchdog_kills") == "0"
    what = f"{vm.name}: edge-agent running at the end, no watchdog kill in this boot"
    if not restarts_expected:
        ok = ok and show.get("NRestarts") == "0"
        what += ", never restarted"
    if not c.check(ok, what, str(show) + r.stderr):
        print_agent_journal(vm, key)
    # Not "after READY": the loop's first ping goes out just before READY=1, so an agent
    # restarted less than 15 s ago (self-update) has its last ping from before its READY.
    try:
        last = int(show["WatchdogTimestampMonotonic"])
        since = float(show["now"]) - last / 1e6 if last else float("inf")
    except (KeyError, ValueError):
        since = float("inf")
    c.check(
        since < PING_STALE,
        f"{vm.name}: the agent's loop still pings the watchdog (last ping {since:.0f} s ago)",
        str(show),
    )
    print(
        f"  .     {vm.name}: {show.get('late_pings', '?')} watchdog pings later than the "
        "unit's 30 s in this boot (systemd's \"Ignoring watchdog timeout\"; 0 without "
        "--watchdog-allowance, where a late ping is a kill)"
    )


def print_agent_journal(vm: Vm, key: Path) -> None:
    """The agent's journal of this boot (the unit's own lines and systemd's about it, on the
    guest's monotonic clock) and the kernel's lines about stalls and clocks: what a failed
    READY or a restart leaves to read. A watchdog kill (SIGABRT) brings faulthandler's
    stacks of every thread (agent/shell/cli.py)."""
    r = vm.ssh(
        key,
        "journalctl -b -u edge-agent -o short-monotonic --no-pager -q | tail -n 200; "
        "echo '--- kernel (stalls, clocks) ---'; "
        "journalctl -b -k -o short-monotonic --no-pager -q "
        "| grep -iE 'rcu|stall|lockup|clocksource|hung|oom|watchdog' | tail -n 40; "
        "echo '--- load ---'; cat /proc/loadavg /proc/pressure/cpu 2>/dev/null",
        timeout=120,
    )
    print(f"--- {vm.name}: journalctl -u edge-agent (guest monotonic seconds) ---")
    print((r.stdout + r.stderr).rstrip())
    print(f"--- end of {vm.name}'s agent journal ---")


def check_bad_config(vm: Vm, key: Path, c: Checks) -> None:
    """A bad edge-agent.toml on the card is rejected; the running config and agent stay."""
    print(f"{vm.name}: a bad edge-agent.toml on the boot partition")
    before = vm.ssh(key, "md5sum /etc/edge-agent/agent.toml").stdout.strip()
    r = vm.ssh(
        key,
        'printf \'[node]\\nweigth = 2\\n[[origin]]\\nid = "x"\\nurl = "ftp://nope"\\n\' '
        "> /boot/firmware/edge-agent.toml && /usr/lib/edge-agent-image/boot-config >/dev/null; "
        "ls /boot/firmware; tail -n 8 /boot/firmware/edge-agent-boot.log",
        timeout=120,
    )
    out = r.stdout + r.stderr
    after = vm.ssh(key, "md5sum /etc/edge-agent/agent.toml").stdout.strip()
    c.check("edge-agent.toml.rejected" in out, "bad config renamed edge-agent.toml.rejected", out)
    c.check(
        before != "" and before == after, "the previous /etc/edge-agent/agent.toml is kept", after
    )
    c.check("weigth" in out and "REJECTED" in out, "edge-agent-boot.log names the bad key", out)
    state = vm.ssh(key, "systemctl is-active edge-agent").stdout.strip()
    c.check(state == "active", "agent still running", state)


def check_cluster(vms: list[Vm], c: Checks, deadline: float) -> float | None:
    print("cluster:")
    want = len(vms)
    t0 = time.monotonic()
    seen: object = None
    while time.monotonic() < deadline:
        try:
            views = [api_json(vm, "/v1/members") for vm in vms]
        except (OSError, ValueError) as e:
            views = [str(e)]
        seen = views
        if all(
            isinstance(v, list) and sum(1 for m in v if m.get("state") == "alive") == want
            for v in views
        ):
            c.check(True, f"{want} VMs form one gossip cluster (encrypted, over 192.0.2.0/24)")
            first = views[0]
            names = (
                sorted(m["name"] for m in first if isinstance(m, dict))
                if isinstance(first, list)
                else []
            )
            print(f"  .     members: {', '.join(names)}")
            return time.monotonic() - t0
        time.sleep(2)
    c.check(False, f"{want} VMs form one gossip cluster", json.dumps(seen)[:600])
    return None


def check_raspi4b(vm: Vm, key: Path, c: Checks) -> None:
    """What only the emulated Pi 4 shows: its own device tree, / on the SD card, its GPIO."""

    def sh(command: str) -> str:
        r = vm.ssh(key, command)
        return r.stdout + (r.stderr if r.returncode else "")

    model = sh("tr -d '\\0' < /proc/device-tree/model").strip()
    c.check(model.startswith("Raspberry Pi 4"), f"kernel runs on the Pi 4 device tree ({model})")
    compat = sh("tr '\\0' ' ' < /proc/device-tree/compatible").strip()
    c.check("brcm,bcm2711" in compat, "device tree compatible brcm,bcm2711", compat)
    root = sh("findmnt -n -o SOURCE /").strip()
    c.check(root.startswith("/dev/mmcblk"), f"/ is on the SD card ({root})", root)
    host = sh(f"readlink -f /sys/block/$(lsblk -no PKNAME {root})/device").strip()
    print(f"  .     SD card at {host} (QEMU: the Arasan SDHCI; a real Pi 4: EMMC2, fe340000)")
    mem = sh("grep MemTotal /proc/meminfo").split()
    print(f"  .     MemTotal {' '.join(mem[1:])} (from the memory node QEMU writes)")
    # Which device each gpiochip belongs to (its parent in sysfs); the label is checked by
    # image/pi_checks.py through the agent's own code.
    chips = sh(
        "for d in /sys/bus/gpio/devices/gpiochip*; do "
        'echo "$(basename $d) $(basename $(dirname $(readlink -f $d)))"; done'
    ).strip()
    c.check(
        "fe200000.gpio" in chips,
        "the BCM2711 GPIO controller (fe200000.gpio) has a gpiochip",
        chips,
    )
    nic = sh("ls /sys/class/net").split()
    c.check(
        "usb0" in nic,
        "network over the emulated USB adapter (usb0; no GENET in QEMU)",
        " ".join(nic),
    )


def run_pi_checks(vm: Vm, key: Path, c: Checks, machine: str) -> None:
    """Hook for image/pi_checks.py (the `pi` helper's LED-by-label and self-update checks).

    Contract: if image/pi_checks.py exists, it exposes
        run_checks(shell, check, machine) -> None
    where shell(command, timeout=120) runs a command as root in the guest and returns a
    subprocess.CompletedProcess[str], check(ok, what, detail="") records one result, and
    machine is "virt" or "raspi4b". Nothing runs when the file is absent.
    """
    sys.path.insert(0, str(IMAGE_DIR))
    try:
        import pi_checks  # image/pi_checks.py (the Pi checks: LEDs by gpiochip, self-update)
    except ImportError:
        print(f"  .     image/pi_checks.py absent: no LED/self-update checks on {vm.name}")
        return
    finally:
        sys.path.remove(str(IMAGE_DIR))

    def shell(command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return vm.ssh(key, command, timeout=timeout)

    print(f"{vm.name}: image/pi_checks.py")
    pi_checks.run_checks(shell, c.check, machine)


class CpuShare:
    """How much host CPU each QEMU got: its user+system time, read from /proc/<pid>/stat
    every SAMPLE seconds by a thread, as a share of one host core over the whole boot and
    over the worst WINDOW seconds. Under TCG the guest's clocks follow the host's clock
    whatever CPU QEMU gets, so a QEMU starved on the host looks, from inside the guest, like
    a guest whose programs stall: this tells the two apart."""

    SAMPLE = 5.0
    WINDOW = 30.0  # the unit's WatchdogSec

    def __init__(self, vms: list[Vm]) -> None:
        self.vms = vms
        self.samples: dict[str, list[tuple[float, float]]] = {vm.name: [] for vm in vms}
        self.loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-share", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while True:
            now = time.monotonic()
            self.loads.append(os.getloadavg()[0])
            for vm in self.vms:
                if vm.proc is None or vm.proc.poll() is not None:
                    continue
                try:  # the fields after "(comm)": state is the 3rd, utime the 14th
                    stat = Path(f"/proc/{vm.proc.pid}/stat").read_text().rpartition(")")[2]
                except OSError:
                    continue
                fields = stat.split()
                self.samples[vm.name].append((now, (int(fields[11]) + int(fields[12])) / tick))
            if self._stop.wait(self.SAMPLE):
                return

    def summary(self, vm: Vm) -> str:
        s = self.samples[vm.name]
        if len(s) < 2 or s[-1][0] - s[0][0] < self.WINDOW:
            return f"{vm.name}: QEMU ran too briefly to measure its CPU share"
        whole = (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0])
        worst, at = float("inf"), 0.0
        for i, (t0, c0) in enumerate(s):
            for t1, c1 in s[i + 1 :]:
                if t1 - t0 >= self.WINDOW:
                    if (c1 - c0) / (t1 - t0) < worst:
                        worst, at = (c1 - c0) / (t1 - t0), t0 - vm.started
                    break
        return (
            f"{vm.name}: QEMU got {whole:.0%} of a host core over {s[-1][0] - s[0][0]:.0f} s, "
            f"{worst:.0%} in its worst {self.WINDOW:.0f} s (from {at:.0f} s after its start); "
            f"host load average {min(self.loads):.1f} to {max(self.loads):.1f}, "
            f"QEMU's nice {os.getpriority(os.PRIO_PROCESS, 0)}"
        )


def stop(vms: list[Vm]) -> None:
    for vm in vms:
        if vm.proc and vm.proc.poll() is None:
            vm.proc.send_signal(signal.SIGTERM)
            try:
                vm.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                vm.proc.kill()
                vm.proc.wait()


def console_tail(vms: list[Vm]) -> None:
    for vm in vms:
        log = vm.work / f"{vm.name}-console.log"
        if log.exists():
            print(f"--- {vm.name} console (last 40 lines) ---")
            print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        err = vm.work / f"{vm.name}-qemu.err"
        if err.exists() and err.stat().st_size:
            print(f"--- {vm.name} qemu stderr ---\n{err.read_text(errors='replace')[-2000:]}")


def figure_line(vm: Vm, f: dict[str, float]) -> str:
    return (
        f"{vm.name}: qemu start -> ssh {vm.t_ssh or float('nan'):.1f} s, "
        f"-> /v1/health 200 {vm.t_health or float('nan'):.1f} s; "
        f"guest kernel -> agent READY {f.get('kernel_to_ready_s', float('nan')):.1f} s; "
        f"root {f.get('root_mib', 0):.0f} MiB"
    )


def run_virt(
    args: argparse.Namespace, base: Path, work: Path, key: Path, pubkey: str, c: Checks
) -> list[str]:
    """The generic virt machine: one or two VMs, the two forming a cluster."""
    print(f"\n== virt: {args.vms} VM(s), QEMU's generic arm64 machine")
    base_root_mib = root_mib_of(base)
    vms: list[Vm] = []
    lines: list[str] = []
    share: CpuShare | None = None
    try:
        ips = ["192.0.2.11", "192.0.2.12"]
        for i in range(args.vms):
            peer = ips[1 - i] if args.vms == 2 else None
            hostname = "edge-test-a" if i == 0 else None
            vms.append(Vm(f"vm{i + 1}", i, work, hostname, ips[i], peer))
        link_port = free_port()
        smp, mem = (2, 1536) if args.vms == 1 else (1, 1024)
        card = base.stat().st_size + 512 * 1024 * 1024
        prepared = [prepare(vm, base, pubkey, card) for vm in vms]
        print(f"boot partition cmdline.txt (used by a real Pi): {prepared[0].cmdline}")
        c.check(
            "root=LABEL=EDGEROOT" in prepared[0].cmdline, "cmdline.txt boots root=LABEL=EDGEROOT"
        )
        for i, (vm, boot) in enumerate(zip(vms, prepared, strict=True)):
            link = f"listen=127.0.0.1:{link_port}" if i == 0 else f"connect=127.0.0.1:{link_port}"
            start(vm, boot, link, smp, mem, allowance(args))
            if i == 0 and len(vms) > 1:
                time.sleep(1)  # the listening end of the link first
        share = CpuShare(vms)
        share.start()
        print(
            f"booting {len(vms)} VM(s): TCG, {smp} vCPU and {mem} MiB each, "
            f"kernel {prepared[0].kernel.name.split('-', 1)[1]}"
            + (f", + {allowance(args)}" if allowance(args) else "")
        )
        wait_up(vms, key, time.monotonic() + args.timeout)
        figures: dict[str, dict[str, float]] = {}
        for vm in vms:
            figures[vm.name] = check_vm(vm, key, c, base_root_mib)
        t_cluster = check_cluster(vms, c, time.monotonic() + 120) if len(vms) == 2 else None
        check_bad_config(vms[0], key, c)
        run_pi_checks(vms[0], key, c, "virt")
        for vm in vms:  # the checks above took minutes: the agents must have lasted them
            still_running(vm, key, c, restarts_expected=vm is vms[0])
        lines = [f"virt {figure_line(vm, figures.get(vm.name, {}))}" for vm in vms]
        if t_cluster is not None:
            lines.append(
                f"virt cluster of {len(vms)} converged {t_cluster:.1f} s after both answered"
            )
    finally:
        stop(vms)
        if share is not None:
            share.stop()
            lines += [f"virt {share.summary(vm)}" for vm in vms]
        if c.failed:
            console_tail(vms)
    return lines


def run_raspi4b(
    args: argparse.Namespace, base: Path, work: Path, key: Path, pubkey: str, c: Checks
) -> list[str]:
    """An emulated Raspberry Pi 4 booting what its firmware would take from the card."""
    version = ensure_qemu_root()
    print(
        f"\n== raspi4b: one emulated Raspberry Pi 4 (trixie's QEMU {version}, TCG, 4 cores, 2 GiB)"
    )
    base_root_mib = root_mib_of(base)
    vm = Vm("pi4", 2, work, "edge-test-pi4", "10.0.2.15", None, link=False)
    share: CpuShare | None = None
    try:
        boot = prepare(vm, base, pubkey, RASPI_CARD, dtb=RASPI_DTB)
        kernel = boot.kernel.name.split("-", 1)[1]
        print(f"  kernel {kernel}, {RASPI_DTB}, cmdline.txt: {boot.cmdline}")
        assert boot.dtb is not None
        for change in qemu_pi4_dtb(boot.dtb):
            print(f"  .     test copy of {RASPI_DTB} for QEMU: {change}")
        boot.cmdline = boot.cmdline.replace(*RASPI_CONSOLE)
        extra = " ".join(filter(None, [RASPI_TEST_ARGS, allowance(args), args.append]))
        boot.cmdline += f" {extra}"
        print(f"  .     kernel command line: {' -> '.join(RASPI_CONSOLE)}, + {extra}")
        start_raspi4b(vm, boot)
        share = CpuShare([vm])
        share.start()
        wait_up([vm], key, time.monotonic() + (args.raspi_timeout or args.timeout))
        if vm.proc is not None and vm.proc.poll() is not None:
            c.check(False, "raspi4b QEMU kept running", f"exit {vm.proc.returncode}")
        figures = check_vm(vm, key, c, base_root_mib, "raspi4b")
        if vm.t_ssh is not None:  # without ssh every guest check would only time out
            check_raspi4b(vm, key, c)
            run_pi_checks(vm, key, c, "raspi4b")
            still_running(vm, key, c)
        return [f"raspi4b {figure_line(vm, figures)}", f"raspi4b {share.summary(vm)}"]
    finally:
        stop([vm])
        if share is not None:
            share.stop()
        with contextlib.suppress(OSError):
            (QEMU_ROOT / str(work).lstrip("/")).rmdir()  # the bind mount point
        if c.failed:
            console_tail([vm])


def allowance(args: argparse.Namespace) -> str:
    """What --watchdog-allowance adds to the test's kernel command lines (TCG_ALLOWANCE)."""
    return TCG_ALLOWANCE if args.watchdog_allowance else ""


def root_mib_of(image: Path) -> int:
    table = json.loads(run(["sfdisk", "--json", str(image)]).stdout)["partitiontable"]
    return int(table["partitions"][1]["size"]) * 512 // 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("image", nargs="?", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument(
        "--machine",
        choices=("all", "virt", "raspi4b"),
        default="all",
        help="which emulation(s) to boot (default: virt, then raspi4b)",
    )
    ap.add_argument("--vms", type=int, default=2, choices=(1, 2), help="VMs of the virt test")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for each boot")
    ap.add_argument(
        "--raspi-timeout",
        type=float,
        default=1200,
        help="seconds to wait for the raspi4b boot (slower: 4 emulated cores; default 1200)",
    )
    ap.add_argument(
        "--append",
        default="",
        help="raspi4b: more kernel arguments after cmdline.txt's (e.g. 'earlycon keep_bootcon')",
    )
    ap.add_argument(
        "--watchdog-allowance",
        action="store_true",
        help="on a loaded host: systemd logs the agent's late watchdog pings instead of "
        "killing it (systemd.service_watchdogs=no on the test's kernel command lines)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    tools = dict(HOST_TOOLS)
    if args.machine == "virt":
        tools.pop("mmdebstrap")
        tools.pop("fdtput")
    if not ensure_host_tools(tools):
        return 2
    base: Path = args.image.resolve()
    if not base.is_file():
        print(f"image-test: no image at {args.image}: run `make image` first", file=sys.stderr)
        return 2
    print(f"image: {base} ({base.stat().st_size / 2**20:.0f} MiB)")

    work = Path(tempfile.mkdtemp(prefix="edge-agent-image-test."))
    c = Checks()
    t_start = time.monotonic()
    lines: list[str] = []
    try:
        key = work / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "image-test", "-f", str(key)])
        pubkey = (work / "id_ed25519.pub").read_text()
        if args.machine in ("all", "virt"):
            lines += run_virt(args, base, work, key, pubkey, c)
        if args.machine in ("all", "raspi4b"):
            lines += run_raspi4b(args, base, work, key, pubkey, c)
        print("\nfigures:")
        for line in lines:
            print(f"  {line}")
        print(f"  whole test {time.monotonic() - t_start:.0f} s")
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{c.passed} passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
