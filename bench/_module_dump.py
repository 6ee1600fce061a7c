"""Writes the names of every module a process has loaded, in import order, to
$EA_MODULES_OUT when it exits (bench/memory.py loads it into an agent, then builds the
import floor from the list). Importing it costs nothing else."""

from __future__ import annotations

import atexit
import os
import sys


def _dump() -> None:
    path = os.environ.get("EA_MODULES_OUT")
    if path:
        with open(path, "w") as f:
            f.write("\n".join(sys.modules) + "\n")


atexit.register(_dump)
