#!/bin/sh
# mmdebstrap customize hook of the throwaway wheel-builder root (runs on the build host;
# $1 = an arm64 root with gcc, swig and python3-dev; $2 = the lgpio sdist; $3 = where the
# wheel goes). lgpio is gpiozero's pin factory for /dev/gpiochip*: Debian's kernel has no
# /dev/gpiomem, trixie has no python3-lgpio and PyPI no aarch64 wheel, so it is compiled
# here, once (build.sh caches the wheel). PYPI=1 makes its setup.py link the bundled C
# library statically (otherwise it wants a system liblgpio).
set -eu
root=$1 sdist=$2 out=$3
mkdir -p "$root/tmp/lgpio" "$out"
cp "$sdist" "$root/tmp/lgpio/"
chroot "$root" env PYPI=1 LC_ALL=C.UTF-8 python3 -m pip wheel --no-deps --no-build-isolation \
  --no-index --disable-pip-version-check -w /tmp/lgpio/out "/tmp/lgpio/$(basename "$sdist")"
cp "$root"/tmp/lgpio/out/lgpio-*.whl "$out/"
