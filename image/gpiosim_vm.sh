#!/usr/bin/env bash
# The LEDs' gpiochip-by-label check (image/pi_checks.py check_gpiochip_by_label) on real
# kernel GPIO chips, without the image: Debian's kernel under QEMU with a tiny initramfs.
#
# The build machine's kernel has no gpio-sim module, and Debian trixie's 6.12 kernel is
# built without CONFIG_GPIO_SIM; trixie-backports' 7.x kernel has it as a module. So this
# fetches that kernel and its modules (apt-get download, with private apt lists: the host's
# apt state is untouched), packs busybox-static and six modules (configfs, gpio-sim, 9p
# and what it needs) into an initramfs, boots it under qemu-system-x86_64 (TCG), mounts
# this machine's root read-only over virtio-9p, and runs pi_checks.py in a chroot of it,
# with the checkout's agent and lgpio (PyPI's x86_64 wheel) in a throwaway venv. It prints
# the guest's console and exits 0 when every check passed.
#
#   sudo image/gpiosim_vm.sh            # needs qemu-system-x86, busybox-static, cpio, root
# Work files: $EDGE_GPIOSIM_WORK (default /var/tmp/edge-agent-gpiosim), kept for reruns.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${EDGE_GPIOSIM_WORK:-/var/tmp/edge-agent-gpiosim}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
MIRROR=${EDGE_IMAGE_MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || { echo "gpiosim_vm.sh: run as root (9p export of /, chroot)" >&2; exit 2; }
for t in qemu-system-x86_64 cpio busybox; do
  command -v "$t" >/dev/null || { echo "missing: $t (apt: qemu-system-x86 cpio busybox-static)" >&2; exit 2; }
done
mkdir -p "$WORK"/apt/{lists/partial,cache/archives/partial} "$WORK/debs"
cd "$WORK"

# --- the kernel: trixie-backports' amd64 kernel (base, binary, modules) ---------------------
printf 'deb %s trixie main\ndeb %s trixie-backports main\n' "$MIRROR" "$MIRROR" > apt/sources.list
APT=(-o Dir::Etc::sourcelist="$WORK/apt/sources.list" -o Dir::Etc::sourceparts=-
     -o Dir::State::Lists="$WORK/apt/lists" -o Dir::Cache="$WORK/apt/cache"
     -o Dir::State::status=/dev/null -o APT::Architecture=amd64)
if [ ! -f kernel.ok ]; then
  apt-get "${APT[@]}" update -qq
  image=$(apt-cache "${APT[@]}" depends linux-image-amd64/trixie-backports | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$image" ] || { echo "no linux-image in trixie-backports" >&2; exit 1; }
  ver=${image#linux-image-}
  # the image package is empty: vmlinuz and config are in linux-base-*, the modules in
  # linux-modules-*, the rest in linux-binary-*
  (cd debs && apt-get "${APT[@]}" download "linux-base-$ver" "linux-binary-$ver" "linux-modules-$ver" 2>&1 | grep -v '^W:' || true)
  rm -rf kroot && mkdir kroot
  for p in base binary modules; do dpkg-deb -x debs/linux-"$p-$ver"_*.deb kroot; done
  [ -f "kroot/usr/lib/modules/$ver/vmlinuz" ] || { echo "no vmlinuz for $ver" >&2; exit 1; }
  echo "$ver" > kernel.ok
fi
ver=$(cat kernel.ok)
mods=kroot/usr/lib/modules/$ver
grep -q '^CONFIG_GPIO_SIM=m' "$mods/config" || { echo "kernel $ver has no gpio-sim" >&2; exit 1; }

# --- the guest's Python: the checkout's agent, the repo venv's packages, lgpio --------------
if [ ! -x gvenv/bin/python ]; then
  base=$("$PYTHON" -c 'import sys; print(sys._base_executable)')
  "$base" -m venv gvenv
  site=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$site" > "$(gvenv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/repo-venv.pth"
  gvenv/bin/pip install -q --disable-pip-version-check --only-binary=:all: lgpio
fi

# --- initramfs: busybox, the modules, an init that chroots into the host's root -------------
rm -rf initrd && mkdir -p initrd/{bin,lib/mod,proc,sys,dev,host}
cp "$(command -v busybox)" initrd/bin/busybox
for m in netfs 9pnet 9pnet_virtio 9p configfs gpio-sim; do
  xzcat "$(find "$mods" -name "$m.ko.xz")" > "initrd/lib/mod/$m.ko"
done
cat > initrd/init <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in netfs 9pnet 9pnet_virtio 9p configfs gpio-sim; do insmod /lib/mod/\$m.ko; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host
mount -t proc proc /host/proc; mount -t sysfs sysfs /host/sys; mount -t devtmpfs devtmpfs /host/dev
mount -t configfs none /host/sys/kernel/config
mount -t tmpfs tmpfs /host/run   # lgpio's notification FIFOs go to \$LG_WD (else the cwd)
echo "guest kernel: \$(uname -r)"
chroot /host /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1 HOME=/root \\
  $WORK/gvenv/bin/python -u $REPO/image/pi_checks.py gpiochip --python $WORK/gvenv/bin/python \\
  --env "PYTHONPATH=$REPO PYTHONDONTWRITEBYTECODE=1 LG_WD=/run"
echo "PI_CHECKS_RC=\$?"
poweroff -f
EOF
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc 2>/dev/null | gzip -1) > initrd.cpio.gz

# --- boot (TCG: KVM is not always there, nor reliable nested; no_timer_check: a busy host
# makes the kernel's IO-APIC timer test fail and panic) -----------------------------------------
t0=$(date +%s)
timeout 900 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 -nographic -no-reboot \
  -monitor none -kernel "$mods/vmlinuz" -initrd initrd.cpio.gz \
  -append "console=ttyS0 panic=-1 quiet no_timer_check" \
  -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
  > console.log 2>&1 || true
grep -v '^\s*$' console.log | sed -n '/guest kernel/,$p'
echo "boot and checks took $(( $(date +%s) - t0 )) s"
grep -q '^PI_CHECKS_RC=0' console.log
