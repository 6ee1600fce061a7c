"""A crashing background task is logged, counted and restarted; the agent lives on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.shell.metrics import Metrics
from agent.shell.supervisor import Supervisor
from tests.conftest import async_wait_for


async def test_crashed_task_is_restarted_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    sup = Supervisor(metrics)
    runs = 0
    steady = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"boom {runs}")
        steady.set()
        await asyncio.Event().wait()  # the third run keeps going

    with caplog.at_level(logging.ERROR):
        sup.spawn("flaky", flaky)
        await asyncio.wait_for(steady.wait(), 10)
    assert runs == 3
    assert metrics.task_restarts.labels("flaky")._value.get() == 2
    assert sum("task flaky crashed" in r.getMessage() for r in caplog.records) == 2
    assert not sup.tasks["flaky"].done()
    await sup.stop()
    assert sup.tasks == {}


async def test_a_task_that_finishes_is_not_restarted() -> None:
    sup = Supervisor(Metrics())
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    sup.spawn("once", once)
    await async_wait_for(lambda: sup.tasks["once"].done(), 5, "task done")
    assert runs == 1
    await sup.stop()
