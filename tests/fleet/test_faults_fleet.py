"""The fault operations of the harness, and what the cluster must survive: kill -9,
SIGSTOP/SIGCONT, a pulled cable for two minutes, UDP blocked, a healed partition, two
nodes with one name."""

from __future__ import annotations

import time
from collections.abc import Callable

from edge_harness.fleet import Fleet, Host, wait
from tests.fleet.conftest import require_fleet

MakeFleet = Callable[..., Fleet]
LINK_DOWN = 120.0  # the "a host whose link is down for 2 minutes"


def _state_of(observer: Host, name: str) -> str | None:
    return observer.members().get(name, (None, ""))[0]


def hold(seconds: float, invariant: Callable[[], bool], what: str) -> None:
    """Keep checking an invariant for a fixed time (a scenario duration, not a wait)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert invariant(), what
        time.sleep(0.25)


def test_kill_and_restart_and_pause(fleet: MakeFleet) -> None:
    f = fleet()
    n1, n2, n3 = f.add_many(3)
    f.start()
    f.wait_converged(30)
    n3.kill()  # -9: no leave
    wait(
        lambda: _state_of(n1, "n3") == "dead" and _state_of(n2, "n3") == "dead",
        30,
        "n3 declared dead",
        f.describe,
    )
    n3.start()  # same name, same address, higher incarnation
    f.wait_converged(30)
    n2.pause()
    wait(lambda: _state_of(n1, "n2") in ("suspect", "dead"), 20, "n2 suspected", f.describe)
    n2.resume()
    f.wait_converged(45)


def test_udp_blocked_node_stays_alive_over_tcp(fleet: MakeFleet) -> None:
    require_fleet(nft=True)
    f = fleet()
    *_, n3 = f.add_many(3)
    f.start()
    f.wait_converged(30)
    n3.block_udp()
    # probes to n3 time out over UDP, the TCP fallback ping answers: nobody accuses it
    hold(10, lambda: f.converged(), "a UDP-blocked node must stay alive (TCP fallback)")
    n3.unblock()
    f.wait_converged(10)


def test_link_down_two_minutes_heals_without_restart(fleet: MakeFleet) -> None:
    f = fleet()
    n1, n2, n3 = f.add_many(3)  # mDNS only, no seeds
    f.start()
    f.wait_converged(30)
    pid = n3.proc.pid if n3.proc else None
    cut = time.monotonic()
    n3.unplug()

    def split() -> bool:
        return (
            _state_of(n1, "n3") == "dead"
            and _state_of(n2, "n3") == "dead"
            and n3.alive_names() == {"n3"}
        )

    wait(split, 60, "both sides to see the split", f.describe)
    time.sleep(max(0.0, cut + LINK_DOWN - time.monotonic()))  # the outage itself
    n3.plug()
    took = f.wait_converged(90)
    assert n3.alive() and n3.proc is not None and n3.proc.pid == pid  # no restart
    print(f"healed {took:.1f}s after the cable came back")


HEAL_DEADLINE = 10.0  # the old reconnect (one member every 30 s) took 4.5-43 s


def test_a_partition_heals_within_seconds_each_time_the_link_returns(fleet: MakeFleet) -> None:
    """A 2|2 split held until each side has declared the other dead and then forgotten
    it (gossip_to_the_dead_time, 30 s: before that, gossip to the dead would heal it
    alone): only a reconnect can join the halves. Twice, as a flapping uplink does. The
    partition drops packets, so a SYN across it is never answered: each attempt waits
    for its timeout, as across a real cut link (connect() does not fail at once)."""
    require_fleet(nft=True)
    f = fleet()
    hosts = f.add_many(4)  # mDNS only, no seeds
    left, right = hosts[:2], hosts[2:]
    f.start()
    f.wait_converged(30)
    for round_ in (1, 2):
        f.partition(left, right)

        def forgotten() -> bool:
            for side, other in ((left, right), (right, left)):
                for h in side:
                    seen = h.members()
                    if any(o.name in seen for o in other):
                        return False
                    if any(seen.get(s.name, ("",))[0] != "alive" for s in side):
                        return False
            return True

        wait(forgotten, 120, "each side to declare the other dead, then forget it", f.describe)
        f.heal()
        took = f.wait_converged(HEAL_DEADLINE)
        attempts: dict[str, float] = {}  # by kind and result, all 4 nodes, so far
        for h in hosts:
            for line in h.get("/metrics")[1].splitlines():
                if line.startswith("edge_agent_reconnect_attempts_total{"):
                    labels, value = line.split("{")[1].split("} ")
                    attempts[labels] = attempts.get(labels, 0.0) + float(value)
        print(f"round {round_}: all 4 saw all alive {took:.1f}s after the heal; {attempts}")


def test_duplicate_name_newcomer_fails_and_cluster_keeps_original(fleet: MakeFleet) -> None:
    f = fleet()
    n1, n2 = f.add_many(2)
    orig = f.add("dup", label="dup1")
    f.start()
    f.wait_converged(30)
    newcomer = f.add("dup", label="dup2")
    newcomer.start()

    def original_everywhere() -> bool:
        return all(h.members().get("dup") == ("alive", orig.ip) for h in (n1, n2, orig))

    def newcomer_failing() -> bool:
        assert original_everywhere(), f.describe()
        health = newcomer.health()
        return health.get("status") == "failing" and any(
            "already belongs" in r and orig.ip in r for r in health["reasons"]
        )

    wait(
        newcomer_failing,
        30,
        "the newcomer to fail with the reason",
        lambda: f"{newcomer.health()}\n{f.describe()}",
    )
    wait(lambda: "NAME CONFLICT" in orig.log(), 20, "the original to log the conflict", orig.log)
    assert "NAME CONFLICT" in newcomer.log()
    assert orig.health()["status"] != "failing", orig.health()
    hold(3, original_everywhere, "the original keeps its entry everywhere")
    assert {"n1", "n2", "dup"} <= n1.alive_names()
