"""Files on disk the agent reads back, damaged while it was stopped: it starts, says what
it found where an operator looks (/v1/health reasons, edge_agent_fault, the quarantine),
and keeps what is intact. The whole-store-is-junk case is tests/store/test_agent_recovery.py;
these are the smaller ones: one damaged file among good ones, and the peers file.

One agent declares three origins and stops; each case restores that data_dir, damages it,
and starts the same agent over it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import AgentProcess, wait_for

KEEP = ("keep-1", "keep-2", "keep-3")


@dataclass(frozen=True)
class Damage:
    id: str
    do: Callable[[Path], object]  # given data_dir
    status: str  # /v1/health status after the start
    reason: str  # a fragment of one reason ("" when none is expected)
    quarantined: str = ""  # a quarantined file's name starts with this


def newest_segment(data: Path) -> Path:
    return max((data / "store").glob("seg-*.log"))


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def leftovers(data: Path) -> None:
    """Files a store directory may hold that are nobody's damage: ignored, quietly."""
    for name in ("notes.txt", "seg-1.log.tmp"):
        (data / "store" / name).write_text("x")
    (data / "store" / "seg-0000009999.log").write_bytes(b"")  # an empty newer segment


CASES = [
    Damage("peers-garbage", lambda d: (d / "peers.json").write_bytes(b"\x00not json{"),
           "degraded", "peers-file: ", ""),
    Damage("peers-not-utf8", lambda d: (d / "peers.json").write_bytes(b'{"peers": "\xff"}'),
           "degraded", "peers.json was damaged; ignored"),
    Damage("peers-a-directory", lambda d: (d / "peers.json").mkdir(),
           "degraded", "peers.json: Is a directory; ignored"),
    Damage("segment-garbage-tail", lambda d: append(newest_segment(d), b"\xa5" * 100),
           "degraded", "store-recovery: store: damaged at start", "seg-"),
    Damage("snapshot-junk", lambda d: (d / "store" / "snap-0000009999.snap").write_bytes(b"junk"),
           "degraded", "store-recovery: ", "snap-0000009999.snap"),
    Damage("harmless-leftovers", leftovers, "ok", ""),
]  # fmt: skip


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Path]]:
    """An agent that declared KEEP and stopped cleanly; and a copy of its data_dir."""
    a = AgentProcess(tmp_path_factory.mktemp("disk"), "")
    try:
        a.start()
        a.wait_notify("READY=1", 20)
        for oid in KEEP:
            assert a.call("PUT", f"/v1/origins/{oid}", {"url": "tcp://127.0.0.1:9"})[0] == 201
        assert a.stop() == 0
        saved = a.tmp / "data-saved"
        shutil.copytree(a.tmp / "data", saved)
        yield a, saved
    finally:
        a.close()


def fault_gauge(metrics: str, what: str) -> float:
    m = re.search(r'^edge_agent_fault\{level="\w+",what="' + what + r'"\} (\S+)$', metrics, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_damaged_file(case: Damage, stopped: tuple[AgentProcess, Path]) -> None:
    a, saved = stopped
    data = a.tmp / "data"
    shutil.rmtree(data)
    shutil.copytree(saved, data)
    case.do(data)
    a.messages.clear()
    a.start()
    try:
        a.wait_notify("READY=1", 20)
        _, health = wait_for(lambda: a.get("/v1/health"), 10, "the API")
        assert health["status"] == case.status, health
        reasons = health.get("reasons") or []
        if case.reason:
            assert any(case.reason in r for r in reasons), reasons
            what = next(r for r in reasons if case.reason in r).split(":")[0]
            assert fault_gauge(a.get("/metrics")[1], what) == 1, f"edge_agent_fault {what}"
        else:
            assert not reasons, reasons
        ids = {o["id"] for o in a.get("/v1/origins")[1]}
        assert set(KEEP) <= ids, f"intact origins lost: {ids}"
        if case.quarantined:
            kept = os.listdir(data / "store" / "quarantine")
            assert any(k.startswith(case.quarantined) for k in kept), kept
        assert "Traceback" not in a.stderr()
    finally:
        assert a.stop() == 0
