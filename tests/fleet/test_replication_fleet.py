"""Replicated state and placement across real hosts (network namespaces): an origin
declared on one host is checked by its k owners and judged the same everywhere; a
killed owner is replaced within detection time + one interval; a partition keeps
every origin checked on both sides and heals to one assignment; a host cut off for
minutes catches up after the heal (issues 5 and 6).

The cut lasts EDGE_AGENT_CUT_S seconds (default 60; the issue's figure is 600:
``EDGE_AGENT_CUT_S=600 .venv/bin/pytest tests/fleet/test_replication_fleet.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from edge_harness.fleet import Fleet, Host, ns_http, wait
from tests.fleet.conftest import require_fleet

MakeFleet = Callable[..., Fleet]
INTERVAL = 2.0
K = 2
CUT = float(os.environ.get("EDGE_AGENT_CUT_S", "60"))
GOSSIP_TO_THE_DEAD = 30.0  # memberlist forgets a dead member after this (Settings)


def origins_toml(base: str, ids: Iterable[int]) -> str:
    return "".join(
        f'[[origin]]\nid = "o{i}"\nurl = "{base}/o/{i}"\ninterval = "{INTERVAL:g}s"\n'
        "rise = 1\nfall = 1\n"
        for i in ids
    )


def farm_set(f: Fleet, oid: int, mode: str) -> None:
    farm = f.extra["farm"]
    status, _ = ns_http(farm.ns, "POST", f"/control/{oid}?mode={mode}", port=8000, host=farm.ip)
    assert status == 200


def hooks(f: Fleet) -> list[dict[str, Any]]:
    """The webhook deliveries the farm received."""
    farm = f.extra["farm"]
    status, body = ns_http(farm.ns, "GET", "/hooks", port=8000, host=farm.ip)
    assert status == 200
    return list(body)


def views(hosts: Iterable[Host]) -> dict[str, dict[str, dict[str, Any]]]:
    return {h.name: h.origins() for h in hosts}


def checkers(v: dict[str, dict[str, dict[str, Any]]]) -> dict[str, set[str]]:
    """origin -> the hosts that check it (their engine's set: ``mine``)."""
    out: dict[str, set[str]] = {}
    for host, origins in v.items():
        for oid, o in origins.items():
            out.setdefault(oid, set())
            if o["mine"]:
                out[oid].add(host)
    return out


def agreed(hosts: list[Host], want: set[str] | None = None) -> bool:
    """Every host knows the same origins, with the same owners and verdicts, and each
    origin is checked by exactly its owners (the handoff has settled)."""
    v = views(hosts)
    first = next(iter(v.values()))
    ids = set(first) if want is None else want
    for origins in v.values():
        if set(origins) != ids:
            return False
        for oid in ids:
            a, b = origins[oid], first[oid]
            if a["owners"] != b["owners"] or a["verdict"] != b["verdict"]:
                return False
            if len(a["owners"]) != min(K, len(hosts)):
                return False
    return all(c == set(first[oid]["owners"]) for oid, c in checkers(v).items())


def explain(hosts: list[Host]) -> Callable[[], str]:
    def text() -> str:
        lines = []
        for h in hosts:
            try:
                o = h.origins()
                lines.append(
                    f"{h.name}: "
                    + ", ".join(
                        f"{k}={v['verdict']}/{','.join(v['owners'])}{'*' if v['mine'] else ''}"
                        for k, v in sorted(o.items())
                    )
                )
            except Exception as e:  # a view for an error message
                lines.append(f"{h.name}: ({e})")
        return "\n".join(lines)

    return text


def test_declare_check_kill_partition_heal(fleet: MakeFleet) -> None:
    require_fleet(nft=True)
    f = fleet()
    hosts = f.add_many(5)
    base = f.start_farm(count=16)
    f.origins_toml = origins_toml(base, range(10)) + f'[[webhook]]\nurl = "{base}/hook"\n'
    f.start()
    f.wait_converged(30)
    all_ids = {f"o{i}" for i in range(10)}
    wait(lambda: agreed(hosts, all_ids), 30, "placement settled", explain(hosts))

    # one webhook per transition, from the origin's rank-1 owner, though 5 hosts judge it
    def o3_everywhere(verdict: str) -> bool:
        return all(h.origins()["o3"]["verdict"] == verdict for h in hosts)

    wait(lambda: o3_everywhere("up"), 15, "o3 up everywhere first", explain(hosts))
    farm_set(f, 3, "down")
    wait(lambda: o3_everywhere("down"), 15, "o3 down everywhere", explain(hosts))
    farm_set(f, 3, "up")
    wait(lambda: o3_everywhere("up"), 15, "o3 up everywhere", explain(hosts))
    wait(lambda: len(hooks(f)) >= 2, 10, "two webhooks")
    got = hooks(f)
    rank1 = hosts[0].origins()["o3"]["owners"][0]
    assert [(h["body"]["from"], h["body"]["to"]) for h in got] == [("up", "down"), ("down", "up")]
    assert {h["body"]["node"] for h in got} == {rank1}
    assert all(h["event"].startswith("o3/") for h in got)
    print(f"webhooks: {len(got)} for 2 transitions of o3, all from its rank-1 owner {rank1}")

    # an origin declared through one host's API: checked, and judged alike everywhere
    spec = {"url": f"{base}/o/12", "interval": f"{INTERVAL:g}s", "rise": 1, "fall": 1}
    t0 = time.monotonic()
    status, body = hosts[0].call("PUT", "/v1/origins/api1", spec)
    assert status == 201, body
    all_ids.add("api1")

    def api1_up_everywhere() -> bool:
        return all(h.origins().get("api1", {}).get("verdict") == "up" for h in hosts)

    wait(api1_up_everywhere, 15, "api1 up on every host", explain(hosts))
    print(f"api1: declared on n1, up on all 5 hosts after {time.monotonic() - t0:.2f}s")
    wait(lambda: agreed(hosts, all_ids), 20, "api1 placed", explain(hosts))

    # kill -9 a host: its origins are checked by their new owners within
    # (failure detection) + one interval
    victim = hosts[4]
    survivors = hosts[:4]
    lost = {oid for oid, o in hosts[0].origins().items() if victim.name in o["owners"]}
    assert lost
    victim.kill()
    t_kill = time.monotonic()
    wait(
        lambda: all(s.members()[victim.name][0] == "dead" for s in survivors),
        30,
        "the survivors see the victim dead",
        f.describe,
    )
    t_dead = time.monotonic()
    pending = set(lost)

    def taken_over() -> bool:
        v = views(survivors)
        for oid in list(pending):
            owners = v[survivors[0].name][oid]["owners"]
            if victim.name in owners:
                continue
            # every new owner checks it, and has reported on it
            if all(v[o][oid]["mine"] for o in owners) and all(
                any(ob["observer"] == o for ob in v[o][oid]["observations"]) for o in owners
            ):
                pending.discard(oid)
        return not pending

    wait(taken_over, INTERVAL + 2.0, "the new owners to check the lost origins", explain(survivors))
    t_over = time.monotonic()
    print(
        f"kill -9: detected after {t_dead - t_kill:.2f}s, {len(lost)} origins taken over "
        f"{t_over - t_dead:.2f}s later (bound: one interval, {INTERVAL:g}s, + 2s slack)"
    )
    # never more than k+1 checkers per origin once the handoff settles (2 intervals)
    wait(
        lambda: agreed(survivors, all_ids), 2 * INTERVAL + 5, "handoff settled", explain(survivors)
    )
    end = time.monotonic() + 5
    while time.monotonic() < end:
        assert all(len(c) <= K + 1 for c in checkers(views(survivors)).values())

    # a partition: every origin stays checked; each side ends up checking all of them
    left, right = survivors[:2], survivors[2:]
    f.partition(left, right)
    t_split = time.monotonic()
    farm_set(f, 0, "down")

    def side_complete(side: list[Host]) -> bool:
        c = checkers(views(side))
        return all(c[oid] for oid in all_ids)

    def both_sides_alone() -> bool:
        return all(
            all(h.members()[o.name][0] == "dead" for o in other)
            for side, other in ((left, right), (right, left))
            for h in side
        )

    while not both_sides_alone():
        c = checkers(views(survivors))
        assert all(c[oid] for oid in all_ids), f"an origin went unchecked: {c}"
        assert time.monotonic() - t_split < 40, f.describe()
        time.sleep(0.2)  # pacing of the poll
    wait(lambda: side_complete(left) and side_complete(right), 2 * INTERVAL + 3, "both sides")
    # The killed host's last observation of o0 (up) still counts while membership lists it
    # dead, for gossip_to_the_dead_time (30 s) after its death: when o0 goes down within
    # that time, a side holds o0 disputed until then (seen in CI: both right-side hosts
    # turned it down 30.6 s after the kill), so the bound is whichever comes later.
    forgotten = t_dead + GOSSIP_TO_THE_DEAD + INTERVAL + 3 - time.monotonic()
    for side in (left, right):
        wait(
            lambda side=side: all(h.origins()["o0"]["verdict"] == "down" for h in side),
            max(2 * INTERVAL + 5, forgotten),
            "o0 down on each side",
            explain(side),
        )
    print(f"partition: both sides check all {len(all_ids)} origins")

    f.heal()
    t_heal = time.monotonic()
    f.wait_converged(90, survivors)
    wait(
        lambda: agreed(survivors, all_ids), 30, "one assignment after the heal", explain(survivors)
    )
    t_one = time.monotonic()
    text = explain(survivors)()
    wait(
        lambda: all(h.origins()["o0"]["verdict"] == "down" for h in survivors),
        30,
        "o0 down everywhere after the heal",
        explain(survivors),
    )
    print(
        f"heal: one assignment {t_one - t_heal:.2f}s after the heal; o0 down everywhere "
        f"{time.monotonic() - t_one:.2f}s later. At one assignment:\n{text}"
    )


@pytest.mark.timeout(CUT + 300)
def test_a_host_cut_off_catches_up_after_the_heal(fleet: MakeFleet) -> None:
    f = fleet()
    hosts = f.add_many(4)
    base = f.start_farm(count=12)
    f.origins_toml = origins_toml(base, range(6))
    f.start()
    f.wait_converged(30)
    ids = {f"o{i}" for i in range(6)}
    assert hosts[0].call("PUT", "/v1/origins/gone", {"url": f"{base}/o/10"})[0] == 201
    ids.add("gone")
    wait(lambda: agreed(hosts, ids), 30, "placement settled", explain(hosts))

    cut, rest = hosts[3], hosts[:3]
    cut.unplug()
    t_cut = time.monotonic()
    wait(lambda: all(h.members()[cut.name][0] == "dead" for h in rest), 30, "the cut seen")
    # while it is away: a new origin, a removed one, and a verdict change
    assert rest[1].call("PUT", "/v1/origins/new", {"url": f"{base}/o/11"})[0] == 201
    assert rest[2].call("DELETE", "/v1/origins/gone")[0] == 200
    farm_set(f, 1, "down")
    ids = (ids - {"gone"}) | {"new"}
    wait(lambda: agreed(rest, ids), 30, "the rest settled", explain(rest))
    wait(lambda: rest[0].origins()["o1"]["verdict"] == "down", 15, "o1 down")
    remaining = CUT - (time.monotonic() - t_cut)
    if remaining > 0:
        time.sleep(remaining)  # the scenario: the cable stays out for CUT seconds
    cut.plug()
    t_plug = time.monotonic()
    f.wait_converged(120, hosts)
    t_member = time.monotonic()
    wait(lambda: agreed(hosts, ids), 30, "the cut host caught up", explain(hosts))
    print(
        f"cut for {t_plug - t_cut:.0f}s: a member again {t_member - t_plug:.2f}s after the "
        f"cable went back in; caught up (catalogue, owners, verdicts) "
        f"{time.monotonic() - t_member:.2f}s after that"
    )
