#!/usr/bin/env bash
# Build the edge-agent Raspberry Pi image (Pi 5, 4/400/CM4, 3, Zero 2 W; arm64, Debian 13 trixie):
# `make image`.
#
#   stage 1  mmdebstrap an arm64 root: packages.txt + Debian's kernel (trixie-backports: the first
#            Debian kernel with the Pi 5's RP1 drivers) + raspi-firmware.
#            Slow (12-20 min under emulation), so it is cached as a tarball keyed by
#            everything that goes into it. The lgpio wheel is compiled once, also cached.
#   stage 2  unpack that root, add the edge-agent venv (pinned wheels), the unit, the
#            first-boot service and the SD-card settings (rootfs/ + scripts/stage2-configure.sh).
#   stage 3  assemble the disk image without mounting anything: sfdisk on a sparse file,
#            mkfs.vfat + mcopy for the boot partition, mkfs.ext4 -d for the root. Before it,
#            scripts/board-check.py lists every board's device tree and drivers from the kernel
#            package's own files and fails the build if one is missing.
#
# Run as root. Downloads go only to Debian's mirror and PyPI, and are cached in
# $EDGE_IMAGE_CACHE (default /var/cache/edge-agent-image). Output: image/out/ (or $EDGE_IMAGE_OUT).
# docs/image.md explains every choice.
set -euo pipefail
export LC_ALL=C.UTF-8

IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$IMAGE_DIR")
CACHE=${EDGE_IMAGE_CACHE:-/var/cache/edge-agent-image}
OUT=${EDGE_IMAGE_OUT:-$IMAGE_DIR/out}
SUITE=trixie
PYTHON_VERSION=3.13   # trixie's python3: the pinned wheels are downloaded for it
MIRROR=${EDGE_IMAGE_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${EDGE_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
LGPIO_VERSION=0.2.2.0
BOOT_MIB=512           # FAT boot partition (firmware, 2 kernels + initrds fit with room)
ROOT_SLACK_MIB=384     # free space in the root file system before it grows at first boot
BOOT_LABEL=EDGEBOOT
ROOT_LABEL=EDGEROOT

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'image/build.sh: %s\n' "$*" >&2; exit 1; }
START=$(date +%s)

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, chroot and device nodes need it): sudo make image"

# --- host tools ---------------------------------------------------------------------------
HOST_PKGS=(mmdebstrap qemu-user-static arch-test mtools dosfstools fdisk e2fsprogs zstd
           python3 python3-pip ca-certificates)
missing=()
for p in "${HOST_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing host packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# arm64 binaries (maintainer scripts, python in the chroot) run through qemu-user-static.
# There is no systemd on a build container to register the handler, so do it here.
if ! arch-test arm64 >/dev/null 2>&1; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] ||
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
  arch-test arm64 >/dev/null || die "cannot run arm64 binaries (binfmt_misc + qemu-user-static)"
fi

# Wheels are kept per target Python (a cache from the bookworm image held cp311 wheels).
WHEELS=$CACHE/wheels-cp${PYTHON_VERSION/./}
mkdir -p "$CACHE"/{apt,sdist} "$WHEELS" "$OUT"

# --- Python wheels (host side, for aarch64) -------------------------------------------------
# --isolated: ignore this machine's pip.conf/env (extra indexes, constraints); --cert: the
# system CA bundle (HTTPS to PyPI may be re-signed by a local CA that the host trusts).
PIP=(python3 -m pip --isolated --disable-pip-version-check --cert /etc/ssl/certs/ca-certificates.crt)
need_download=0
while read -r req; do
  name=${req%%==*}; ver=${req#*==}
  norm=$(printf '%s' "$name" | tr '-' '_')
  ls "$WHEELS/" 2>/dev/null | grep -qi "^${norm}-${ver}-" || need_download=1
done < <(grep -E '^[A-Za-z0-9]' "$IMAGE_DIR/requirements.txt")
if [ "$need_download" = 1 ]; then
  log "downloading pinned aarch64 wheels into $WHEELS"
  "${PIP[@]}" download -q --no-deps --only-binary=:all: -d "$WHEELS" \
    --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_36_aarch64 \
    --python-version "$PYTHON_VERSION" --implementation cp -r "$IMAGE_DIR/requirements.txt"
fi
LGPIO_SDIST=$CACHE/sdist/lgpio-$LGPIO_VERSION.tar.gz
[ -f "$LGPIO_SDIST" ] ||
  "${PIP[@]}" download -q --no-deps --no-binary=:all: -d "$CACHE/sdist" "lgpio==$LGPIO_VERSION"

# --- stage 1: the Debian root (cached) ----------------------------------------------------
pkgs=$(grep -Ev '^\s*(#|$)' "$IMAGE_DIR/packages.txt" | tr '\n' ',' | sed 's/,$//')
# (the package list without its comments: rewording one does not rebuild the root)
key=$(cat <(printf '%s\n' "$pkgs") "$IMAGE_DIR/scripts/stage1-kernel.sh" "$IMAGE_DIR/rootfs/etc/fstab" <(echo "$SUITE $MIRROR v2") |
      sha256sum | cut -c1-16)
ROOT_TAR=$CACHE/rootfs-$SUITE-arm64-$key.tar
# Options common to both mmdebstrap runs: the apt archive cache is synced in and out
# (mmdebstrap's documented recipe), so a rebuild downloads no .deb twice.
MMDEBSTRAP=(mmdebstrap --architectures=arm64 --mode=root --format=tar --skip=essential/unlink
  --aptopt='APT::Install-Recommends "false"'
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/'
  --setup-hook="sync-in '$CACHE/apt' /var/cache/apt/archives/")
# trixie-backports: only the kernel is taken from it (stage1-kernel.sh: apt-get -t); apt's default
# priorities keep every other package on trixie.
SOURCES=("deb $MIRROR $SUITE main non-free-firmware"
         "deb $MIRROR $SUITE-updates main non-free-firmware"
         "deb $SECURITY_MIRROR $SUITE-security main non-free-firmware"
         "deb $MIRROR $SUITE-backports main non-free-firmware")
if [ -f "$ROOT_TAR" ]; then
  log "stage 1: cached root $ROOT_TAR"
else
  log "stage 1: mmdebstrap $SUITE arm64 (12 to 20 minutes cold: the initramfs is built under emulation)"
  t1=$(date +%s)
  "${MMDEBSTRAP[@]}" --variant=minbase --include="$pkgs" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook="sh '$IMAGE_DIR/scripts/stage1-kernel.sh' \"\$1\"" \
    --customize-hook="sync-out /var/cache/apt/archives '$CACHE/apt'" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    "$SUITE" "$ROOT_TAR.tmp" "${SOURCES[@]}"
  mv "$ROOT_TAR.tmp" "$ROOT_TAR"
  # keep only the newest root tarball
  find "$CACHE" -maxdepth 1 -name 'rootfs-*.tar' ! -path "$ROOT_TAR" -delete
  log "stage 1 took $(( $(date +%s) - t1 )) s"
fi

# --- the lgpio wheel (cached), compiled in a throwaway arm64 root --------------------------
if ! ls "$WHEELS"/lgpio-"$LGPIO_VERSION"-*.whl >/dev/null 2>&1; then
  log "compiling the lgpio $LGPIO_VERSION wheel for aarch64 (once; about 4 minutes)"
  t1=$(date +%s)
  "${MMDEBSTRAP[@]}" --variant=apt \
    --include=gcc,libc6-dev,swig,python3-dev,python3-pip,python3-setuptools,python3-wheel \
    --customize-hook="sh '$IMAGE_DIR/scripts/build-lgpio-wheel.sh' \"\$1\" '$LGPIO_SDIST' '$WHEELS'" \
    --customize-hook="sync-out /var/cache/apt/archives '$CACHE/apt'" \
    "$SUITE" /dev/null "${SOURCES[0]}"
  log "lgpio wheel took $(( $(date +%s) - t1 )) s"
fi

# --- stage 2: edge-agent and the appliance settings ----------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/edge-agent-image.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
ROOT=$WORK/root
mkdir -p "$ROOT"
log "stage 2: unpacking the root and installing edge-agent"
tar -C "$ROOT" -xf "$ROOT_TAR"

# edge-agent's own wheel, built from a copy of the source (the work tree is left untouched).
mkdir -p "$WORK/src" "$ROOT/tmp/wheels"
cp -a "$REPO/agent" "$REPO/pyproject.toml" "$REPO/README.md" "$WORK/src/"
[ -f "$REPO/LICENSE" ] && cp "$REPO/LICENSE" "$WORK/src/"
find "$WORK/src" -name '__pycache__' -prune -exec rm -rf {} +
"${PIP[@]}" wheel -q --no-deps -w "$ROOT/tmp/wheels" "$WORK/src"
AGENT_VERSION=$(python3 -c 'import re,sys; print(re.search(r"__version__\s*=\s*\"([^\"]+)\"", open(sys.argv[1]).read()).group(1))' "$REPO/agent/__init__.py")
while read -r req; do
  name=${req%%==*}; ver=${req#*==}; norm=$(printf '%s' "$name" | tr '-' '_')
  f=$(ls "$WHEELS/" | grep -i "^${norm}-${ver}-" | head -n 1)
  [ -n "$f" ] || die "no wheel for $req in $WHEELS"
  cp "$WHEELS/$f" "$ROOT/tmp/wheels/"
done < <(grep -E '^[A-Za-z0-9]' "$IMAGE_DIR/requirements.txt")
cp "$WHEELS"/lgpio-"$LGPIO_VERSION"-*.whl "$ROOT/tmp/wheels/"
cp "$IMAGE_DIR/requirements.txt" "$ROOT/tmp/wheels/"

# Files of the appliance (owned by root; modes as in the tree), the unit from systemd/.
cp -a --no-preserve=ownership "$IMAGE_DIR/rootfs/." "$ROOT/"
install -m 0644 "$REPO/systemd/edge-agent.service" "$ROOT/etc/systemd/system/edge-agent.service"
chmod 0755 "$ROOT/usr/lib/edge-agent-image/boot-config"
install -m 0755 "$IMAGE_DIR/scripts/stage2-configure.sh" "$ROOT/tmp/stage2-configure.sh"
printf 'EDGE_AGENT_VERSION=%s\nIMAGE_BUILT=%s\nDEBIAN_SUITE=%s\n' \
  "$AGENT_VERSION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SUITE" > "$ROOT/etc/edge-agent-image-release"

# Run the configure script in the arm64 root, in a private mount namespace so that the
# /proc and /dev mounts vanish with it whatever happens.
unshare --mount --propagation private -- sh -ec '
  root=$1
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount -t sysfs sysfs "$root/sys"
  chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 HOME=/root \
    DEBIAN_FRONTEND=noninteractive /tmp/stage2-configure.sh
' sh "$ROOT"
rm -rf "$ROOT/tmp/wheels" "$ROOT/tmp/stage2-configure.sh"

# --- stage 3: the disk image ---------------------------------------------------------------
NAME=edge-agent-$AGENT_VERSION-rpi-arm64
IMG=$OUT/$NAME.img
log "stage 3: assembling $IMG"
BOOT_DIR=$WORK/boot
mkdir -p "$BOOT_DIR"
# The FAT partition gets what raspi-firmware put in /boot/firmware; the root keeps the empty
# mount point.
cp -a "$ROOT/boot/firmware/." "$BOOT_DIR/"
find "$ROOT/boot/firmware" -mindepth 1 -delete
cp "$IMAGE_DIR/boot/README.txt" "$IMAGE_DIR/boot/edge-agent.toml.example" "$BOOT_DIR/"

# Every board's device tree and drivers, from the kernel package's own files, the boot
# partition and the initramfs: printed, and the build stops if one is missing.
log "board check: device trees and drivers for Pi 5, Pi 4/400/CM4, Pi 3, Zero 2 W"
python3 "$IMAGE_DIR/scripts/board-check.py" "$ROOT" "$BOOT_DIR" ||
  die "board check failed: a board's device tree or driver is missing (see above)"

root_kib=$(du -sk --apparent-size "$ROOT" | cut -f1)
# ext4 overhead (inode tables, journal) is about 6 %; round up to whole MiB.
root_mib=$(( (root_kib * 108 / 100) / 1024 + ROOT_SLACK_MIB ))
start_mib=4
img_mib=$(( start_mib + BOOT_MIB + root_mib ))
rm -f "$IMG" "$IMG.zst"
truncate -s "${img_mib}M" "$IMG"
sfdisk -q "$IMG" <<EOF
label: dos
unit: sectors
start=$(( start_mib * 2048 )), size=$(( BOOT_MIB * 2048 )), type=c, bootable
start=$(( (start_mib + BOOT_MIB) * 2048 )), type=83
EOF

# FAT32 boot partition, filled with mtools (this kernel need not mount vfat).
truncate -s "${BOOT_MIB}M" "$WORK/boot.fat"
mkfs.vfat -F 32 -n "$BOOT_LABEL" "$WORK/boot.fat" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -Q -i "$WORK/boot.fat" "$BOOT_DIR"/* ::/
dd if="$WORK/boot.fat" of="$IMG" bs=1M seek="$start_mib" conv=notrunc,sparse status=none

# ext4 root, made from the directory. Its mount options (noatime, commit=) are in fstab.
truncate -s "${root_mib}M" "$WORK/root.ext4"
mkfs.ext4 -q -L "$ROOT_LABEL" -d "$ROOT" -E root_owner=0:0 "$WORK/root.ext4"
dd if="$WORK/root.ext4" of="$IMG" bs=1M seek=$(( start_mib + BOOT_MIB )) conv=notrunc,sparse status=none

if [ "${EDGE_IMAGE_COMPRESS:-1}" = 1 ]; then
  log "compressing $IMG.zst (Raspberry Pi Imager and zstdcat | dd both take it)"
  zstd -q -T0 -3 --sparse -f "$IMG" -o "$IMG.zst"
fi
ln -sfn "$NAME.img" "$OUT/edge-agent.img"

size_h=$(du -h --apparent-size "$IMG" | cut -f1)
used_h=$(du -h "$IMG" | cut -f1)
cat <<EOF

edge-agent image built in $(( $(date +%s) - START )) s
  image:  $IMG
          $size_h ($used_h of data; the root partition grows to the card at first boot)
EOF
[ -f "$IMG.zst" ] && echo "  zstd:   $IMG.zst ($(du -h "$IMG.zst" | cut -f1))"
cat <<EOF

Flash it:
  Raspberry Pi Imager: "Choose OS" > "Use custom" > $NAME.img(.zst)
                       (skip Imager's "OS customisation": this is not Raspberry Pi OS)
  or dd:               sudo dd if=$IMG of=/dev/sdX bs=4M conv=fsync status=progress
                       (/dev/sdX is the whole card: check with lsblk first)
Then, on the card's boot partition (EDGEBOOT, readable from any laptop), add:
  authorized_keys        your ssh public key(s), for root (there is no password)
  edge-agent.toml        the agent config (see edge-agent.toml.example there)
  edge-agent.keyring / edge-agent.token / hostname   optional; see README.txt there
Boot test under QEMU: make image-test        Docs: docs/image.md
EOF
