"""Fixtures for multi-host tests: a fleet of agents in network namespaces (agent/fleet.py).

Every namespace carries the prefix "eatest-". The fleet removes leftovers with that
prefix when it is built (an earlier run that was killed), and the fixture finalizer
tears everything down even when the test failed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.fleet import Fleet, cleanup, missing_prerequisites
from tests.conftest import require

PREFIX = "eatest-"


def require_fleet(nft: bool = False) -> None:
    missing = missing_prerequisites(need_nft=nft)
    require(not missing, "fleet harness: " + ", ".join(missing))


def require_tool(tool: str, package: str) -> None:
    require(shutil.which(tool) is not None, f"Debian package {package} ({tool})")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(**kwargs: Any) -> Fleet:
        require_fleet()
        f = Fleet(tmp_path / f"fleet{len(made)}", prefix=PREFIX, **kwargs)
        made.append(f)
        return f

    try:
        yield make
    finally:
        for f in made:
            for h in [*f.hosts, *f.extra.values()]:
                text = h.log()
                if text:
                    print(f"----- {h.name} ({h.ns}) log tail -----\n{text[-4000:]}")
            f.close()
        if made:
            cleanup(PREFIX)
