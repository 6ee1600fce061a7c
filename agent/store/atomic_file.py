"""Replace a small file so that a power cut leaves either the old or the new content.

Write a temporary file, fsync it, rename it over the target, fsync the directory:
the rename is atomic and the directory fsync makes it durable. Pis lose power
without warning, and a half-written file must never be what the next boot reads.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
