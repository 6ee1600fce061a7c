"""Discovery pieces that need no network: Serf's names, interface choice, failure and
retry, remembered peers on disk, and the loopback guard of a real agent process.

The multi-host behaviour (mDNS between hosts, Serf, avahi) is in tests/fleet.
"""

from __future__ import annotations

import asyncio
import errno
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import agent.shell.discovery as discovery
from agent.shell.discovery import (
    Discovery,
    DiscoveryError,
    choose_interface,
    serf_txt,
    service_type,
)
from agent.shell.peers import Peer, PeerStore
from tests.conftest import AgentProcess, wait_for

ADDRS = {"lo": ["127.0.0.1"], "eth0": ["10.1.2.3"], "wlan0": ["192.168.4.7", "192.168.4.8"]}


def test_names_match_serf() -> None:
    assert service_type("edge") == "_serf_edge._tcp.local."
    assert serf_txt("edge") == "Serf 'edge' cluster"


def test_interface_defaults_to_the_one_carrying_the_advertise_address() -> None:
    assert choose_interface("192.168.4.8", None, lambda: ADDRS) == ("wlan0", "192.168.4.8")
    assert choose_interface("10.1.2.3", "wlan0", lambda: ADDRS) == ("wlan0", "192.168.4.7")
    with pytest.raises(DiscoveryError, match="interface 'eth1' has no IPv4 address"):
        choose_interface("10.1.2.3", "eth1", lambda: ADDRS)
    with pytest.raises(DiscoveryError, match="on no local interface"):
        choose_interface("172.16.0.1", None, lambda: ADDRS)


async def test_failure_is_a_fault_never_fatal_and_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Port 5353 unusable: the reason is reported, zeroconf is retried, run() never raises."""
    monkeypatch.setattr(discovery, "check_multicast", lambda ip, name="": None)
    faults: list[str | None] = []
    attempts = 0

    def factory(ip: str) -> Any:
        nonlocal attempts
        attempts += 1
        raise OSError(errno.EADDRINUSE, "Address already in use")

    d = Discovery(
        cluster="edge",
        node_name="n1",
        advertise=("10.1.2.3", 7946),
        on_peer=lambda *a: None,
        on_fault=faults.append,
        factory=factory,
        addresses=lambda: ADDRS,
        retry_min=0.01,
        retry=0.02,
    )
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(_until(lambda: attempts >= 3), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert faults and all(f and "Address already in use" in f for f in faults)
    assert d.failures >= 3 and not d.running


async def test_no_usable_interface_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    faults: list[str | None] = []
    d = Discovery(
        cluster="edge",
        node_name="n1",
        advertise=("10.9.9.9", 7946),
        on_peer=lambda *a: None,
        on_fault=faults.append,
        addresses=lambda: ADDRS,
        retry_min=10,
        retry=10,
    )
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(_until(lambda: bool(faults)), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert faults[0] is not None and "10.9.9.9 is on no local interface" in faults[0]


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.005)


# --- remembered peers --------------------------------------------------------------------


def test_peer_store_round_trip_is_atomic_and_throttled(tmp_path: Path) -> None:
    store = PeerStore(tmp_path, min_interval=10)
    a, b = Peer("a", "10.0.0.1", 7946), Peer("b", "10.0.0.2", 7946)
    assert store.update([a], now=100.0)
    assert not store.update([a], now=200.0)  # unchanged: no write
    assert not store.update([a, b], now=105.0)  # changed, but too soon: pending
    assert store.writes == 1
    assert store.flush(now=111.0) and store.writes == 2
    assert not store.update([], now=300.0)  # alone says nothing: keep what we knew
    assert [p.name for p in PeerStore(tmp_path).load()] == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == ["peers.json"]  # no tmp file left behind


def test_the_agent_saves_peers_off_its_loop_and_keeps_a_set_noted_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SD card's fsync can take longer than a probe's timeout: the loop that answers
    probes must not wait for it (a 0.4 s write here, a loop that ticks every 10 ms)."""
    from agent.shell import peers as peers_module

    real = peers_module.write_atomic
    writing = threading.Event()
    release = threading.Event()

    def slow_card(path: Path, text: str) -> None:
        writing.set()
        release.wait(5)  # the card, busy until the test has looked at the loop
        real(path, text)

    monkeypatch.setattr(peers_module, "write_atomic", slow_card)
    store = PeerStore(tmp_path, min_interval=10)
    a, b = Peer("a", "10.0.0.1", 7946), Peer("b", "10.0.0.2", 7946)

    async def main() -> int:
        assert store.note([a])
        flush = asyncio.ensure_future(store.flush_off_loop(now=100.0))
        ticks = 0
        while not writing.is_set() or ticks < 20:  # the loop goes on while the card writes
            await asyncio.sleep(0.01)
            ticks += 1
        assert not flush.done()
        assert store.note([a, b])  # a change while the first set is being written
        release.set()
        assert await asyncio.wait_for(flush, 5)
        return ticks

    assert asyncio.run(main()) >= 20
    assert store.writes == 1 and store.pending  # the newer set waits for its turn
    assert store.flush_at() == 110.0
    assert [p.name for p in PeerStore(tmp_path).load()] == ["a"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"peers": 3}',
        '{"peers": [{"name": "a", "addr": "x", "port": 0}]}',
        '{"peers": [{"name": "a", "addr": "x", "port": true}]}',
        "\x00\xff" * 40,
    ],
)
def test_damaged_peer_file_is_counted_and_ignored(tmp_path: Path, text: str) -> None:
    (tmp_path / "peers.json").write_text(text, errors="surrogateescape")
    store = PeerStore(tmp_path)
    assert store.load() == []
    assert store.corrupt == 1
    assert store.update([Peer("a", "10.0.0.1", 7946)], now=0.0)  # and it heals on the next write
    assert json.loads((tmp_path / "peers.json").read_text())["peers"][0]["name"] == "a"


# --- real processes on loopback ----------------------------------------------------------


def test_loopback_advertise_with_remote_seed_is_a_failing_fault(
    agent_process: Callable[..., AgentProcess],
) -> None:
    a = agent_process(cluster='join = ["10.200.0.1:7946"]').start()
    a.wait_notify("READY=1")

    def failing() -> dict[str, Any] | None:
        _, body = a.get("/v1/health")
        return body if body["status"] == "failing" else None

    body = wait_for(failing, 10, "health failing")
    assert any("loopback" in r and "10.200.0.1" in r for r in body["reasons"]), body
    _, members = a.get("/v1/members")
    assert [m["name"] for m in members] == ["test-node"]
    assert a.stop() == 0


def test_remembered_peers_rejoin_without_seeds(agent_process: Callable[..., AgentProcess]) -> None:
    """Both restart with no seeds at all; b finds a again from data_dir/peers.json."""
    a = agent_process(name="a").start()
    a.wait_notify("READY=1")
    b = agent_process(name="b", cluster=f'join = ["127.0.0.1:{a.gossip_port}"]').start()

    def names(p: AgentProcess) -> set[str]:
        _, body = p.get("/v1/members")
        return {m["name"] for m in body if m["state"] == "alive"}

    wait_for(lambda: names(a) == {"a", "b"} and names(b) == {"a", "b"}, 15, "a and b joined")
    peers = b.tmp / "data" / "peers.json"
    wait_for(peers.exists, 5, "b's remembered peers")
    assert b.stop() == 0 and a.stop() == 0
    b.cluster = ""  # no seeds any more
    b.write_config("")
    a.start()
    a.wait_notify("READY=1")
    b.start()
    wait_for(lambda: names(a) == {"a", "b"} and names(b) == {"a", "b"}, 15, "rejoined")
