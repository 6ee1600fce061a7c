#!/bin/bash
# Build a wheelhouse for the edge_agent role: the edge-agent wheel of this checkout plus
# every dependency, as wheels, so hosts without internet can `pip install --no-index`.
#
#   ansible/scripts/build-wheelhouse.sh [options] OUTDIR
#     --arch aarch64        wheels for 64-bit Raspberry Pi OS (bookworm): the manylinux
#                           aarch64 tags its glibc 2.36 accepts; default: this machine's
#     --platform TAG        one wheel platform tag (repeatable), for other targets
#     --python-version V    target Python (default 3.11, Debian/Raspberry Pi OS bookworm)
#     --local-version L     build edge-agent as VERSION+L (a test build: e.g. "test2")
#
# The source tree is never modified: the wheel is built from a copy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=${PYTHON:-python3}
platforms=() pyver=3.11 local_version=""
while [[ $# -gt 1 ]]; do
    case $1 in
        --platform) platforms+=("$2"); shift 2 ;;
        --arch)
            case $2 in
                aarch64|arm64) platforms+=(manylinux2014_aarch64 manylinux_2_28_aarch64 manylinux_2_34_aarch64) ;;
                x86_64|amd64) platforms+=(manylinux2014_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64) ;;
                *) echo "unknown --arch $2 (aarch64 or x86_64)" >&2; exit 64 ;;
            esac
            shift 2 ;;
        --python-version) pyver=$2; shift 2 ;;
        --local-version) local_version=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done
[[ $# -eq 1 ]] || { sed -n '2,13p' "$0" >&2; exit 64; }
out=$(mkdir -p "$1" && cd "$1" && pwd)

src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/agent" "$src/"
[[ -e $repo/LICENSE ]] && cp "$repo/LICENSE" "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
if [[ -n $local_version ]]; then
    sed -i -E "s/^__version__ = \"([^\"+]+)[^\"]*\"/__version__ = \"\\1+${local_version}\"/" \
        "$src/agent/__init__.py"
fi
version=$(sed -n -E 's/^__version__ = "(.*)"/\1/p' "$src/agent/__init__.py")
rm -f "$out"/edge_agent-*.whl
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$out" "$src" 2>/dev/null \
    || "$PY" -m pip wheel -q --no-deps -w "$out" "$src"
wheel=$(ls "$out"/edge_agent-*.whl)
args=(--only-binary=:all: --python-version "$pyver" --implementation cp)
if [[ ${#platforms[@]} -gt 0 ]]; then
    for p in "${platforms[@]}"; do args+=(--platform "$p"); done
fi
"$PY" -m pip download -q -d "$out" "${args[@]}" "$wheel"
echo "wheelhouse $out: edge-agent $version, $(ls "$out" | wc -l) wheels"
