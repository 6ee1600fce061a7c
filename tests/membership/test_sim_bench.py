"""bench/simulate.py's phases at a small N: the false-positive run, alone (--only-fp) and
after detection and broadcast, is deterministic for a seed and its table prints."""

from __future__ import annotations

import gc
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def unfreeze() -> Iterator[None]:
    """run_one freezes what the collector has seen (gc.freeze): not for the rest of the
    test session."""
    yield
    gc.unfreeze()


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_simulate", ROOT / "bench" / "simulate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_simulate"] = mod
    spec.loader.exec_module(mod)
    return mod


def run(mod: ModuleType, **kw: Any) -> dict[str, Any]:
    args = {"n": 40, "seed": 3, "fp_window": 12.0, "push_pull": False, "encrypt": True}
    args.update(kw)
    return mod.run_one(**args)


def test_only_fp_is_deterministic_and_prints(capsys: pytest.CaptureFixture[str]) -> None:
    mod = bench()
    a, b = run(mod, only_fp=True), run(mod, only_fp=True)
    assert "detect" not in a and "broadcast" not in a
    assert a["fp"] == b["fp"]
    assert a["fp"]["stalled"] == 1 and a["fp"]["dead_events"] == 0
    assert a["codec_memo"]["hits"] > 0
    capsys.readouterr()
    mod.report(a)
    text = capsys.readouterr().out
    assert "false positives: dead, live members" in text
    assert "detection" not in text and "NOTE" not in text


def test_all_phases_report_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    mod = bench()
    r = run(mod, broadcasts=1)
    assert r["detect"]["reached"] == r["detect"]["observers"] == 39
    assert r["broadcast"]["unreached"] == [0]
    assert r["fp"]["dead_events"] == 0
    capsys.readouterr()
    mod.report(r)
    mod.scaling([r])
    text = capsys.readouterr().out
    for row in ("detection, all survivors: median", "broadcast: rounds", "false positives"):
        assert row in text
    assert "NOTE" not in text


def test_a_run_stopped_in_the_window_reports_what_it_saw(
    capsys: pytest.CaptureFixture[str],
) -> None:
    mod = bench()
    r = run(mod, only_fp=True)
    progress = r["fp_progress"]  # the last note in the window, every 2 simulated s
    assert progress["simulated"] == pytest.approx(12.0)
    assert progress["dead_events"] == 0
    assert progress["suspect_events"] <= r["fp"]["suspect_events"]
    del r["fp"]
    capsys.readouterr()
    mod.report(r)
    text = capsys.readouterr().out
    assert "false positives so far (12 s of the window)" in text
    assert "NOTE: the run stopped" in text
