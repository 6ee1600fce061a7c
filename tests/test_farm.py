"""The origin farm answers as each origin's behaviour says, over real HTTP."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from edge_harness.farm import Behaviour, Farm, FarmState, start_farm


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def farm(clock: FakeClock) -> AsyncIterator[Farm]:
    behaviours = {
        "d": "down",
        "s": "slow:0.2",
        "hang": "slow:30",
        "f": "flap:10",
        "w": "wrongbody",
    }
    f = await start_farm(behaviours=behaviours, count=5, clock=clock)
    async with f:
        yield f


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def get(http: aiohttp.ClientSession, url: str, method: str = "GET") -> tuple[int, str]:
    async with http.request(method, url) as r:
        return r.status, await r.text()


async def test_up_down_wrongbody_and_unknown(farm: Farm, http: aiohttp.ClientSession) -> None:
    assert farm.host == "127.0.0.1"
    assert await get(http, farm.url(0)) == (200, "ok")
    assert await get(http, farm.url(4)) == (200, "ok")
    assert await get(http, farm.url("d")) == (500, "down")
    status, body = await get(http, farm.url("w"))
    assert status == 200 and "ok" not in body
    assert (await get(http, farm.url(5)))[0] == 404  # count=5: ids 0..4
    assert (await get(http, farm.url("nope")))[0] == 404
    assert (await get(http, farm.url("01")))[0] == 404  # not a canonical number
    assert (await get(http, farm.url("\u00b2")))[0] == 404  # a digit, but not 0-9
    assert (await get(http, farm.url("9" * 5000)))[0] == 404
    assert await get(http, farm.url(1), "HEAD") == (200, "")
    assert await get(http, farm.url("d"), "HEAD") == (500, "")


async def test_slow_answers_late(farm: Farm, http: aiohttp.ClientSession) -> None:
    t0 = time.monotonic()
    assert await get(http, farm.url("s")) == (200, "ok")
    assert time.monotonic() - t0 >= 0.2
    with pytest.raises(TimeoutError):
        async with http.get(farm.url("hang"), timeout=aiohttp.ClientTimeout(total=0.05)):
            pass


async def test_flap_alternates_each_half_period(
    farm: Farm, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    seen = []
    for _ in range(4):
        seen.append((await get(http, farm.url("f")))[0])
        clock.now += 5  # half of flap:10
    assert seen in ([200, 500, 200, 500], [500, 200, 500, 200])
    # The phase depends only on the id and the epoch, so separate farm processes agree.
    a, b = FarmState(default="flap", epoch=7.0), FarmState(default="flap", epoch=7.0)
    for t in (7.0, 13.3, 29.9, 1234.5):
        assert [a.flap_up(i, t) for i in "abcdefgh"] == [b.flap_up(i, t) for i in "abcdefgh"]
    assert len({a.flap_up(str(i), 100.0) for i in range(50)}) == 2  # ids are out of phase


async def test_control_switches_behaviour(farm: Farm, http: aiohttp.ClientSession) -> None:
    async def control(path: str, mode: str) -> tuple[int, str]:
        async with http.post(f"http://127.0.0.1:{farm.port}{path}", params={"mode": mode}) as r:
            return r.status, await r.text()

    assert (await control("/control/1", "down"))[0] == 200
    assert await get(http, farm.url(1)) == (500, "down")
    async with http.get(f"http://127.0.0.1:{farm.port}/control/1") as r:
        assert await r.json() == {"id": "1", "mode": "down"}
    assert (await control("/control/1", "reset"))[0] == 200
    assert await get(http, farm.url(1)) == (200, "ok")
    assert (await control("/control/d", "up"))[0] == 200
    assert await get(http, farm.url("d")) == (200, "ok")
    assert (await control("/control/d", "reset"))[0] == 200
    assert await get(http, farm.url("d")) == (500, "down")
    status, text = await control("/control/1", "sideways")
    assert status == 400 and "unknown mode" in text
    assert (await control("/control", "down"))[0] == 200  # the default, for all the rest
    assert await get(http, farm.url(2)) == (500, "down")
    assert (await get(http, farm.url("w")))[0] == 200
    farm.set("new", "up")  # the in-process API; a named origin exists even beyond count
    assert await get(http, farm.url("new")) == (200, "ok")
    async with http.get(f"http://127.0.0.1:{farm.port}/stats") as r:
        assert (await r.json())["requests"] >= 6


async def test_several_ports_and_no_control(http: aiohttp.ClientSession) -> None:
    async with await start_farm(ports=[0, 0], control=False) as f:
        assert len(set(f.ports)) == 2
        for p in f.ports:
            assert await get(http, f.url("any", port=p)) == (200, "ok")
        async with http.post(f"http://127.0.0.1:{f.port}/control/x", params={"mode": "down"}) as r:
            assert r.status == 409


def test_behaviour_parse() -> None:
    assert Behaviour.parse("slow:0.5") == Behaviour("slow", 0.5)
    assert str(Behaviour.parse("flap:10")) == "flap:10"
    for bad in ("sideways", "up:1", "slow:x", "flap:0", "slow:-1"):
        with pytest.raises(ValueError):
            Behaviour.parse(bad)


async def test_cli_serves_from_several_processes(http: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_harness.farm",
        "--processes",
        "2",
        "--count",
        "10",
        "--mode",
        "3=down",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        m = re.search(r"port=(\d+) processes=2 pids=(\d+),(\d+)", line)
        assert m, line
        base = f"http://127.0.0.1:{m.group(1)}"
        pids = set()
        for _ in range(40):  # new connections are spread over the processes
            async with http.get(f"{base}/stats", headers={"Connection": "close"}) as r:
                pids.add((await r.json())["pid"])
            assert await get(http, f"{base}/o/3") == (500, "down")
            assert await get(http, f"{base}/o/9") == (200, "ok")
        assert pids <= {int(m.group(2)), int(m.group(3))}
        async with http.post(f"{base}/control/1", params={"mode": "down"}) as r:
            assert r.status == 409  # state is per process, so runtime control is refused
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
