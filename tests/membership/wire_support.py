"""Shared helpers for the wire-codec tests (a module, not a conftest: self-contained)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).resolve().parent / "wire_vectors"
IN_CI = os.environ.get("CI", "").lower() == "true"


@cache
def load_vectors(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def captures(kind: str) -> dict[str, str]:
    """Real bytes captured from Debian serf 0.9.4 (see serf_captures.json `_source`)."""
    data: dict[str, str] = load_vectors("serf_captures.json")[kind]
    return data


def require(condition: bool, what: str) -> None:
    """Skip when a prerequisite is missing, except under CI=true, where it must fail."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing prerequisite under CI: {what}")
    pytest.skip(f"missing prerequisite: {what}")
