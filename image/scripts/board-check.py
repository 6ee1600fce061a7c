#!/usr/bin/env python3
"""Build-time board check: every supported Pi's device tree and drivers are in the image.

    board-check.py ROOT [BOOT_DIR]

ROOT is the image's root directory (the installed kernel package is read from
ROOT/usr/lib/modules/KVER and ROOT/usr/lib/linux-image-KVER); BOOT_DIR is what goes on the
FAT boot partition (default ROOT/boot/firmware). Run by image/build.sh before the disk is
assembled; Python stdlib only, nothing is executed from the image.

For each board it proves, from the kernel package's own files rather than from a list
someone typed once:

  - its device tree(s) ship in the kernel package and sit, byte-identical, on the boot
    partition where the firmware looks for them (upstream names: raspi-firmware's
    config.txt says upstream_kernel=1);
  - every device the image depends on is in that device tree (parsed, not grepped) and a
    driver for its `compatible` is built in (modules.builtin.modinfo) or shipped as a
    module (modules.alias, else the modules' own .modinfo);
  - drivers found by name rather than by device tree (PHYs, USB NICs, the watchdog) exist;
  - the root file system's path (SD host driver, ext4) and e2fsck are in the initramfs;
  - the firmware files the board's boot ROM needs, config.txt naming the kernel and
    initramfs that exist, cmdline.txt booting root=LABEL=EDGEROOT.

It prints one line per fact and exits 1 if any needed one is missing.
"""

from __future__ import annotations

import lzma
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ROOT_LABEL = "EDGEROOT"


@dataclass(frozen=True)
class Need:
    """One device a board needs: found in its device tree by `compatible` (or by name)."""

    what: str
    compatible: str | None = None  # matched in the dtb ("a|b": either); driver through aliases
    module: str | None = None  # or a driver by module name (PHYs, USB NICs)
    pci: str | None = None  # or by a PCI id alias (RP1 itself: 1de4:0001)
    root: bool = False  # must be reachable from the initramfs (mounts /)


@dataclass(frozen=True)
class Board:
    name: str
    dtbs: tuple[str, ...]
    firmware: tuple[str, ...]  # boot-ROM files on the FAT partition (Pi 5: in EEPROM)
    needs: tuple[Need, ...]
    note: str = ""


COMMON = (
    Need("root file system", module="ext4", root=True),
    Need("boot partition (FAT)", module="vfat"),
    Need("FAT code page 437", module="nls_cp437"),
    Need("watchdog (systemd RuntimeWatchdogSec)", compatible="brcm,bcm2835-pm-wdt"),
    Need("watchdog device", module="bcm2835_wdt"),
    Need("firmware mailbox", compatible="raspberrypi,bcm2835-firmware"),
)
USB_NICS = (
    Need("USB Ethernet adapter (Realtek)", module="r8152"),
    Need("USB Ethernet adapter (ASIX)", module="ax88179_178a"),
    Need("USB Ethernet adapter (CDC)", module="cdc_ether"),
)
BOARDS = (
    Board(
        "Raspberry Pi 5",
        ("bcm2712-rpi-5-b.dtb", "bcm2712-d-rpi-5-b.dtb"),
        (),
        (
            Need("SD card", compatible="brcm,bcm2712-sdhci", root=True),
            Need("PCIe to RP1", compatible="brcm,bcm2712-pcie"),
            Need("RP1 I/O chip", pci="1de4:0001"),
            Need("RP1 clocks", compatible="raspberrypi,rp1-clocks"),
            Need("GPIO header (RP1)", compatible="raspberrypi,rp1-gpio"),
            Need("Ethernet (RP1 GEM)", compatible="raspberrypi,rp1-gem"),
            Need("Ethernet PHY (BCM54213PE)", module="broadcom"),
            Need("SoC pin control", compatible="brcm,bcm2712c0-pinctrl|brcm,bcm2712d0-pinctrl"),
            *COMMON,
        ),
        "bcm2712-d-rpi-5-b.dtb: D0-stepping boards (2 GB, 16 GB)",
    ),
    Board(
        "Raspberry Pi 4 / 400 / CM4",
        ("bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4-io.dtb"),
        ("start4.elf", "fixup4.dat"),
        (
            Need("SD card (emmc2)", compatible="brcm,bcm2711-emmc2", root=True),
            Need("GPIO header", compatible="brcm,bcm2711-gpio"),
            Need("Ethernet (GENET)", compatible="brcm,bcm2711-genet-v5"),
            Need("Ethernet MDIO", compatible="brcm,genet-mdio-v5"),
            Need("Ethernet PHY (BCM54213PE)", module="broadcom"),
            Need("PCIe (USB 3 controller)", compatible="brcm,bcm2711-pcie"),
            Need("USB 3 (VL805)", module="xhci_pci"),
            *COMMON,
        ),
        "CM4: the CM4 IO board's tree",
    ),
    Board(
        "Raspberry Pi 3 B / B+ / A+",
        ("bcm2837-rpi-3-b.dtb", "bcm2837-rpi-3-b-plus.dtb", "bcm2837-rpi-3-a-plus.dtb"),
        ("bootcode.bin", "start.elf", "fixup.dat"),
        (
            Need("SD card (sdhost)", compatible="brcm,bcm2835-sdhost", root=True),
            Need("SDHCI (SD or Wi-Fi)", compatible="brcm,bcm2835-sdhci", root=True),
            Need("GPIO header", compatible="brcm,bcm2835-gpio"),
            Need("USB (DWC2)", compatible="brcm,bcm2835-usb"),
            Need("Ethernet 3 B (LAN9514)", module="smsc95xx"),
            Need("Ethernet 3 B+ (LAN7515)", module="lan78xx"),
            *COMMON,
        ),
        "A+: no Ethernet port",
    ),
    Board(
        "Raspberry Pi Zero 2 W",
        ("bcm2837-rpi-zero-2-w.dtb",),
        ("bootcode.bin", "start.elf", "fixup.dat"),
        (
            Need("SD card (sdhost)", compatible="brcm,bcm2835-sdhost", root=True),
            Need("SDHCI (SD or Wi-Fi)", compatible="brcm,bcm2835-sdhci", root=True),
            Need("GPIO header", compatible="brcm,bcm2835-gpio"),
            Need("USB OTG (DWC2)", compatible="brcm,bcm2835-usb"),
            *USB_NICS,
            *COMMON,
        ),
        "no Ethernet port and no Wi-Fi in the image: wired through a USB adapter only",
    ),
)


# --- device trees -----------------------------------------------------------------------


@dataclass
class Node:
    path: str
    compatible: list[str] = field(default_factory=list)
    status: str = "okay"


def parse_dtb(data: bytes) -> list[Node]:
    """The nodes of a flattened device tree (only what the check needs)."""
    magic, _size, off_struct, off_strings = struct.unpack_from(">IIII", data, 0)
    if magic != 0xD00DFEED:
        raise ValueError("not a flattened device tree")
    nodes: list[Node] = []
    stack: list[Node] = []
    pos = off_struct
    while True:
        (token,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if token == 1:  # BEGIN_NODE
            end = data.index(b"\0", pos)
            name = data[pos:end].decode()
            pos = (end + 4) & ~3
            parent = stack[-1].path if stack else ""
            node = Node(f"{parent.rstrip('/')}/{name}" if stack else "/")
            stack.append(node)
            nodes.append(node)
        elif token == 2:  # END_NODE
            stack.pop()
        elif token == 3:  # PROP
            length, nameoff = struct.unpack_from(">II", data, pos)
            pos += 8
            value = data[pos : pos + length]
            pos = (pos + length + 3) & ~3
            pname = data[off_strings + nameoff : data.index(b"\0", off_strings + nameoff)]
            if pname == b"compatible":
                stack[-1].compatible = [s.decode() for s in value.split(b"\0") if s]
            elif pname == b"status":
                stack[-1].status = value.rstrip(b"\0").decode()
        elif token == 4:  # NOP
            continue
        elif token == 9:  # END
            return nodes
        else:
            raise ValueError(f"bad FDT token {token} at {pos - 4}")


# --- the kernel package's drivers -----------------------------------------------------------


def module_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    name = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", name)
    return name.replace("-", "_")


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return data


class Kernel:
    """Drivers of one installed kernel: built in, as modules, and what each one matches."""

    def __init__(self, moddir: Path) -> None:
        self.moddir = moddir
        self.builtin = {module_name(x) for x in (moddir / "modules.builtin").read_text().split()}
        self.modules = {
            module_name(str(p)): p for p in moddir.rglob("*.ko*") if re.search(r"\.ko", p.name)
        }
        self.aliases: list[tuple[str, str, bool]] = []  # (pattern, module, builtin)
        for entry in (moddir / "modules.builtin.modinfo").read_bytes().split(b"\0"):
            m = re.match(rb"([^.]+)\.alias=(.*)", entry)
            if m:
                self.aliases.append((m[2].decode(), m[1].decode().replace("-", "_"), True))
        alias_file = moddir / "modules.alias"
        if alias_file.exists():  # written by depmod when the package was installed
            for line in alias_file.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "alias":
                    self.aliases.append((parts[1], parts[2].replace("-", "_"), False))
        else:  # not installed (checking an unpacked .deb): read each module's .modinfo
            for name, p in self.modules.items():
                for m in re.finditer(rb"alias=([^\0]+)\0", read_module(p)):
                    self.aliases.append((m[1].decode(), name, False))

    def where(self, name: str) -> str | None:
        name = name.replace("-", "_")
        if name in self.builtin:
            return "built in"
        if name in self.modules:
            return "module"
        return None

    def drivers_for_compatible(self, compat: str) -> list[tuple[str, bool]]:
        want = {f"of:N*T*C{compat}", f"of:N*T*C{compat}C*"}
        return sorted({(mod, bi) for pat, mod, bi in self.aliases if pat in want})

    def drivers_for_pci(self, vendor_device: str) -> list[tuple[str, bool]]:
        v, d = vendor_device.upper().split(":")
        prefix = f"pci:v0000{v}d0000{d}"
        return sorted({(mod, bi) for pat, mod, bi in self.aliases if pat.startswith(prefix)})


# --- initramfs ------------------------------------------------------------------------------


def cpio_names(data: bytes) -> set[str]:
    """File names in an initramfs: newc cpio archives, each maybe compressed, concatenated."""
    names: set[str] = set()
    pos = 0
    while pos < len(data):
        while pos < len(data) and data[pos] == 0:
            pos += 1
        if pos >= len(data):
            break
        rest = data[pos:]
        if rest[:6] in (b"070701", b"070702"):
            while True:
                hdr = data[pos : pos + 110]
                namesize = int(hdr[94:102], 16)
                filesize = int(hdr[54:62], 16)
                name = data[pos + 110 : pos + 110 + namesize - 1].decode(errors="replace")
                pos = (pos + 110 + namesize + 3) & ~3
                pos = (pos + filesize + 3) & ~3
                if name == "TRAILER!!!":
                    break
                names.add(name.lstrip("./"))
            continue
        tool = {
            b"\x28\xb5\x2f\xfd": ["zstd", "-dcq"],
            b"\x1f\x8b\x08": ["gzip", "-dc"],
            b"\xfd7zXZ": ["xz", "-dc"],
        }
        for magic, cmd in tool.items():
            if rest.startswith(magic):
                out = subprocess.run(cmd, input=rest, capture_output=True, check=False).stdout
                names |= cpio_names(out)
                return names
        raise ValueError(f"initramfs: unknown data at offset {pos}")
    return names


# --- the check ------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.missing: list[str] = []

    def line(self, ok: bool, text: str) -> None:
        print(f"  {'ok  ' if ok else 'MISSING'}  {text}")
        if not ok:
            self.missing.append(text)


def check(root: Path, boot: Path) -> int:
    kvers = sorted(p.name for p in (root / "usr/lib/modules").iterdir() if p.is_dir())
    if not kvers:
        print("board check: no kernel in the image")
        return 1
    kver = kvers[-1]
    moddir = root / "usr/lib/modules" / kver
    dtbdir = root / "usr/lib" / f"linux-image-{kver}" / "broadcom"
    kernel = Kernel(moddir)
    r = Report()
    print(
        f"kernel {kver}: {len(kernel.modules)} modules, {len(kernel.builtin)} built in; "
        f"device trees from {dtbdir.relative_to(root)}"
    )

    initrd_names: set[str] = set()
    initrds = sorted((root / "boot").glob(f"initrd.img-{kver}"))
    if initrds:
        initrd_names = cpio_names(initrds[0].read_bytes())
    in_initrd = {module_name(n) for n in initrd_names if re.search(r"\.ko(\.|$)", n)}

    # boot partition: kernel, initramfs, command line
    config = (boot / "config.txt").read_text() if (boot / "config.txt").exists() else ""
    kline = re.search(r"^kernel=(\S+)", config, re.M)
    iline = re.search(r"^initramfs\s+(\S+)", config, re.M)
    cmdline = (boot / "cmdline.txt").read_text() if (boot / "cmdline.txt").exists() else ""
    print("boot partition:")
    r.line(
        kline is not None and (boot / kline[1]).is_file(),
        f"config.txt kernel={kline[1] if kline else '?'} (on the partition)",
    )
    r.line(
        iline is not None and (boot / iline[1]).is_file(),
        f"config.txt initramfs {iline[1] if iline else '?'} (on the partition)",
    )
    r.line("arm_64bit=1" in config, "config.txt arm_64bit=1 (Pi 3/4; the Pi 5 is 64-bit only)")
    r.line(
        "upstream_kernel=1" in config,
        "config.txt upstream_kernel=1 (firmware loads the upstream dtb names below)",
    )
    r.line(f"root=LABEL={ROOT_LABEL}" in cmdline, f"cmdline.txt root=LABEL={ROOT_LABEL}")
    r.line(
        bool(initrd_names)
        and any(n.endswith(("sbin/e2fsck", "sbin/fsck.ext4")) for n in initrd_names),
        f"initramfs {initrds[0].name if initrds else '?'}: e2fsck (fsck.repair=yes before /)",
    )

    for board in BOARDS:
        print(f"{board.name}:" + (f"  ({board.note})" if board.note else ""))
        trees: list[Node] = []
        for dtb in board.dtbs:
            src, dst = dtbdir / dtb, boot / dtb
            ok = src.is_file() and dst.is_file() and src.read_bytes() == dst.read_bytes()
            r.line(ok, f"device tree {dtb} (kernel package -> boot partition)")
            if src.is_file():
                trees.append(Node(dtb))  # marker
                trees.extend(parse_dtb(src.read_bytes()))
        for fw in board.firmware:
            r.line((boot / fw).is_file(), f"firmware {fw} on the boot partition")
        if not board.firmware:
            print("  .     boot firmware in the board's EEPROM; it reads config.txt")
        for need in board.needs:
            detail, ok = describe(need, board, trees, kernel, in_initrd)
            r.line(ok, f"{need.what}: {detail}")

    print()
    if r.missing:
        print(f"board check: {len(r.missing)} missing:")
        for m in r.missing:
            print(f"  - {m}")
        return 1
    print(f"board check: all {len(BOARDS)} board families have their device trees and drivers")
    return 0


def driver_list(drivers: list[tuple[str, bool]]) -> str:
    return ", ".join(f"{m} ({'built in' if bi else 'module'})" for m, bi in drivers) or "NO DRIVER"


def describe(
    need: Need, board: Board, trees: list[Node], kernel: Kernel, in_initrd: set[str]
) -> tuple[str, bool]:
    """Where the driver for one need comes from, and whether it is all there."""
    if need.compatible:
        # each of the board's dtbs must carry an enabled node with this compatible
        compats = need.compatible.split("|")
        per_dtb: dict[str, bool] = {}
        current = ""
        for node in trees:
            if node.path.endswith(".dtb"):
                current = node.path
                per_dtb.setdefault(current, False)
            elif node.status in ("okay", "ok") and any(c in node.compatible for c in compats):
                per_dtb[current] = True
        lacking = [d for d, found in per_dtb.items() if not found]
        drivers = sorted({d for c in compats for d in kernel.drivers_for_compatible(c)})
        drv = (
            ", ".join(f"{m} ({'built in' if bi else 'module'})" for m, bi in drivers) or "NO DRIVER"
        )
        ok = not lacking and bool(drivers)
        text = f'"{need.compatible}" -> {drv}'
        if lacking:
            text += f"; not enabled in {', '.join(lacking)}"
        mods = [m for m, bi in drivers if not bi]
        builtin = any(bi for _, bi in drivers)
    elif need.pci:
        drivers = kernel.drivers_for_pci(need.pci)
        drv = (
            ", ".join(f"{m} ({'built in' if bi else 'module'})" for m, bi in drivers) or "NO DRIVER"
        )
        ok = bool(drivers)
        text = f"PCI {need.pci} -> {drv}"
        mods = [m for m, bi in drivers if not bi]
        builtin = any(bi for _, bi in drivers)
    else:
        assert need.module
        where = kernel.where(need.module)
        ok = where is not None
        text = f"{need.module} ({where or 'NOT IN THE PACKAGE'})"
        mods = [need.module] if where == "module" else []
        builtin = where == "built in"
    if need.root and ok and not builtin:
        inside = [m for m in mods if m in in_initrd]
        ok = bool(inside)
        text += "; in the initramfs" if ok else "; NOT IN THE INITRAMFS"
    return text, ok


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    root = Path(sys.argv[1])
    boot = Path(sys.argv[2]) if len(sys.argv) == 3 else root / "boot" / "firmware"
    return check(root, boot)


if __name__ == "__main__":
    sys.exit(main())
