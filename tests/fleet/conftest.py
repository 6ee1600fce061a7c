"""Fixtures for multi-host tests: a fleet of agents in network namespaces
(harness/edge_harness/fleet.py).

Every fleet's namespaces are named "eatest-<pid>-<start>-<n>-...": its own, so two test
sessions on one machine never touch each other's hosts. A new fleet removes only the
"eatest-" namespaces whose owner process is gone (a run that was killed), and the
fixture finalizer tears down everything its fleets made even when the test failed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_harness.fleet import Fleet, missing_prerequisites
from edge_harness.sites import SiteFleet
from tests.conftest import require

PREFIX = "eatest-"


def require_fleet(nft: bool = False) -> None:
    missing = missing_prerequisites(need_nft=nft)
    require(not missing, "fleet harness: " + ", ".join(missing))


def require_tool(tool: str, package: str) -> None:
    require(shutil.which(tool) is not None, f"Debian package {package} ({tool})")


def _teardown(made: list[Fleet]) -> None:
    for f in made:
        try:
            for h in [*f.hosts, *f.extra.values()]:
                text = h.log()
                if text:
                    print(f"----- {h.name} ({h.ns}) log tail -----\n{text[-4000:]}")
        finally:
            f.close()


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
        _teardown(made)


@pytest.fixture
def site_fleet(tmp_path: Path) -> Iterator[Callable[..., SiteFleet]]:
    """Routed sites behind a core router (harness/edge_harness/sites.py); needs nft."""
    made: list[Fleet] = []

    def make(**kwargs: Any) -> SiteFleet:
        require_fleet(nft=True)
        f = SiteFleet(tmp_path / f"sites{len(made)}", prefix=PREFIX, **kwargs)
        made.append(f)
        return f

    try:
        yield make
    finally:
        _teardown(made)
