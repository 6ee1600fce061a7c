#!/bin/bash
# ansible/.venv: ansible-core and ansible-lint for the controller (kept out of the
# project's .venv). Re-run after changing ansible/requirements.txt.
set -euo pipefail
dir=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
if [[ ! -x $dir/.venv/bin/ansible-playbook || $dir/requirements.txt -nt $dir/.venv/.installed ]]; then
    "$PY" -m venv "$dir/.venv"
    "$dir/.venv/bin/pip" install -q --disable-pip-version-check -r "$dir/requirements.txt"
    touch "$dir/.venv/.installed"
fi
