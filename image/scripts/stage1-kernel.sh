#!/bin/sh
# mmdebstrap customize hook of stage 1 (runs on the build host; $1 = the arm64 root).
# Installs Debian's arm64 kernel and raspi-firmware, with the initramfs built once, not twice.
# The kernel comes from trixie-backports: trixie's own 6.12 has the Pi 5's device tree but not
# the drivers of its RP1 I/O chip (rp1_pci, clk-rp1, pinctrl-rp1, the macb Ethernet glue arrived
# in 6.17), so on a Pi 5 it would boot without Ethernet or GPIO. scripts/board-check.py proves
# from the installed package that every board's dtb and drivers are there.
set -eu
root=$1
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

# apt in the chroot needs DNS: systemd-resolved's postinst pointed /etc/resolv.conf at a
# stub that only exists on a running system. Use the host's for now, restore the link after.
resolv=$(readlink "$root/etc/resolv.conf" || true)
rm -f "$root/etc/resolv.conf"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
restore_resolv() {
  rm -f "$root/etc/resolv.conf"
  if [ -n "$resolv" ]; then ln -s "$resolv" "$root/etc/resolv.conf"; fi
}
trap restore_resolv EXIT

# The kernel's postinst builds the initramfs, and initramfs-tools' trigger would build it
# again (about 8 minutes each under emulation): update_initramfs=no while installing makes
# the trigger a no-op, so it is built once.
# FSTYPE=ext4: initramfs-tools' fsck hook cannot find the root's type in a chroot (it
# resolves LABEL=EDGEROOT, which does not exist here) and would leave e2fsck out; with it
# the root is checked (fsck.repair=yes) before it is mounted. The image's fstab goes in now
# too, for the hook's other checks.
printf 'COMPRESS=zstd\nFSTYPE=ext4\n' > "$root/etc/initramfs-tools/conf.d/edge-agent-image.conf"
cp "$(dirname "$0")/../rootfs/etc/fstab" "$root/etc/fstab"
sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$root/etc/initramfs-tools/update-initramfs.conf"
in_root apt-get install -y --no-install-recommends -t trixie-backports linux-image-arm64 raspi-firmware
sed -i 's/^update_initramfs=.*/update_initramfs=yes/' "$root/etc/initramfs-tools/update-initramfs.conf"

# raspi-firmware writes cmdline.txt from this file; set it only now (a pre-created conffile
# stops dpkg at a prompt). The serial console is ttyS1 on Pi 3/4 (the mini UART on GPIO 14/15)
# and ttyAMA10 on the Pi 5 (its 3-pin debug UART); a console the board lacks is ignored, and
# the last one (tty0, HDMI) gets /dev/console.
# CMA=0: no cma= on the command line. The hook cannot see the board in a chroot, so it would
# write cma=64M for every board, which its own notes say can make a Pi 4 unbootable; without
# it each board uses its device tree's CMA region, as on a Pi 4 installed by Debian itself.
f="$root/etc/default/raspi-firmware"
sed -i -e 's/^#\?ROOTPART=.*/ROOTPART=LABEL=EDGEROOT/' \
       -e 's/^#\?CONSOLES=.*/CONSOLES="ttyS1,115200 ttyAMA10,115200 tty0"/' \
       -e 's/^#\?CMA=.*/CMA=0/' "$f"
grep -q '^ROOTPART=' "$f" || echo 'ROOTPART=LABEL=EDGEROOT' >> "$f"
grep -q '^CMA=' "$f" || echo 'CMA=0' >> "$f"
kver=$(ls "$root/lib/modules" | sort -V | tail -n 1)
[ -e "$root/boot/initrd.img-$kver" ] || in_root update-initramfs -c -k "$kver"
# Copies kernel, initrd and dtbs to /boot/firmware and writes config.txt and cmdline.txt
# (with ROOTPART); without DEB_MAINT_PARAMS=configure it silently does nothing.
in_root env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware "$kver"
grep -q 'root=LABEL=EDGEROOT' "$root/boot/firmware/cmdline.txt"
