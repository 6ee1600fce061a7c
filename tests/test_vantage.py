"""Issue 19: impaired vantage points and verdicts across sites, as pure rules and in the
node core (no sockets: six cores whose deltas are carried by hand).

The fleet test with real namespaces, routers and nftables is tests/fleet/test_sites_fleet.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from agent.checks.state import Status, Transition
from agent.domain.origin import OriginSpec, parse_origin
from agent.membership.member import Member as GossipMember
from agent.membership.messages import NodeState
from agent.membership.meta import encode_tags
from agent.membership.protocol import MemberEvent, UserMessage
from agent.node.core import NodeCore
from agent.node.placement import ROLE
from agent.node.replication import HELLO, KIND_REPAIR, Gossip, Send, encode_message
from agent.node.state import State
from agent.node.vantage import Vantages, VantageTally, contribution, impaired
from agent.node.verdicts import judge
from agent.shell.metrics import Metrics
from agent.shell.vantage_watch import VantageWatch

SITES = {"a1": "a", "a2": "a", "b1": "b", "b2": "b", "c1": "c", "c2": "c"}


def site(name: str) -> str:
    return SITES.get(name, "\x00" + name)


# --- the vantage rule --------------------------------------------------------------------


def test_the_rule_needs_most_checks_failing_and_another_site_seeing_them_up() -> None:
    assert impaired(VantageTally(observed=7, down=7, contradicted=7))
    assert impaired(VantageTally(observed=10, down=8, contradicted=4))  # 80 %, half seen up
    assert not impaired(VantageTally(observed=10, down=7, contradicted=7))  # 70 %: origins
    assert not impaired(VantageTally(observed=10, down=10, contradicted=4))  # an outage
    assert not impaired(VantageTally(observed=10, down=10, contradicted=0))  # seen everywhere
    assert not impaired(VantageTally(observed=1, down=1, contradicted=1))  # one origin's fault
    assert impaired(VantageTally(observed=2, down=2, contradicted=1))
    assert not impaired(VantageTally())


def test_a_down_is_contradicted_only_by_another_sites_up() -> None:
    c = contribution({"a1": "down", "a2": "up", "b1": "down"}, site)
    assert c == ("a1", True, False, "a2", False, False, "b1", True, True)
    # a node without a site is a domain of its own
    assert contribution({"x": "down", "y": "up"}, site) == ("x", True, True, "y", False, False)


statuses = st.dictionaries(
    st.sampled_from(["a1", "a2", "b1", "c1", "x"]), st.sampled_from(["up", "down"]), max_size=4
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([f"o{i}" for i in range(6)]), statuses), max_size=40))
def test_incremental_tallies_equal_a_rebuild(updates: list[tuple[str, dict[str, str]]]) -> None:
    """However observations change, the kept tallies and impaired set are those counted
    from scratch, and take_flipped reports exactly the net changes."""
    v = Vantages(site)
    latest: dict[str, dict[str, str]] = {}
    for origin, obs in updates:
        before = v.impaired
        v.update(origin, obs)
        latest[origin] = obs
        assert v.take_flipped() == set(before ^ v.impaired)
    fresh = Vantages(site)
    for origin, obs in latest.items():
        fresh.update(origin, obs)
    assert fresh.impaired == v.impaired
    for name in ("a1", "a2", "b1", "c1", "x"):
        assert v.tally(name) == fresh.tally(name)
        want = [0, 0, 0]
        for obs in latest.values():
            if name in obs:
                want[0] += 1
                if obs[name] == "down":
                    want[1] += 1
                    want[2] += any(site(o) != site(name) and s == "up" for o, s in obs.items())
        assert v.tally(name) == VantageTally(*want)
    v.rebuild(lambda o: latest.get(o, {}))
    assert v.impaired == fresh.impaired


# --- the verdict rule --------------------------------------------------------------------


def test_down_needs_owners_in_confirm_sites() -> None:
    assert judge([("a1", "down"), ("b1", "down")], site, set(), 2) == "down"
    assert judge([("a1", "down"), ("a2", "down")], site, set(), 2) == "disputed"  # one site
    assert judge([("a1", "down"), ("a2", "down")], site, set(), 1) == "down"
    assert judge([("a1", "down"), ("b1", "up")], site, set(), 2) == "disputed"
    assert judge([("a1", "up"), ("b1", "up")], site, set(), 2) == "up"
    assert judge([("a1", "up")], site, set(), 2) == "up"
    assert judge([], site, set(), 2) == "unknown"
    assert judge([("a1", "down")], site, set(), 2) == "disputed"  # the other not heard yet


def test_an_impaired_owner_does_not_count_and_does_not_hold_a_down_back() -> None:
    blind = {"a1"}
    assert judge([("a1", "down"), ("b1", "up")], site, blind, 2) == "up"
    assert judge([("a1", "down"), ("b1", "down")], site, blind, 2) == "down"
    assert judge([("a1", "down")], site, blind, 2) == "unknown"
    # both owners' sites impaired: nothing to go on
    assert judge([("a1", "down"), ("b1", "down")], site, {"a1", "b1"}, 2) == "unknown"
    # an impaired owner of a site that also reports down healthily is no excuse
    assert judge([("a1", "down"), ("a2", "down")], site, {"a1"}, 2) == "disputed"


@given(st.lists(st.tuples(st.sampled_from(sorted(SITES)), st.sampled_from(["up", "down"]))))
def test_down_never_without_a_healthy_down_and_never_with_a_healthy_up(
    reports: list[tuple[str, str]],
) -> None:
    for blind in (set(), {"a1", "a2"}, {"b1"}):
        for confirm in (1, 2, 3):
            v = judge(reports, site, blind, confirm)
            healthy = [s for o, s in reports if o not in blind]
            if v == "down":
                assert "down" in healthy and "up" not in healthy
            if v == "up":
                assert healthy and set(healthy) == {"up"}


# --- six cores, three sites ----------------------------------------------------------------


def spec(origin_id: str) -> OriginSpec:
    return parse_origin(
        {"id": origin_id, "url": f"http://127.0.0.1:9/{origin_id}", "interval": "10s"}
    )


def gossip_member(name: str, state: NodeState = NodeState.ALIVE) -> GossipMember:
    tags = encode_tags({"role": ROLE, "version": "test", "site": SITES[name]})
    return GossipMember(name, b"\x7f\x00\x00\x01", 7946, meta=tags, state=state)


class Fleet:
    """Six cores in three sites; deltas carried by hand, in full, to every live peer."""

    def __init__(self, origins: int = 20) -> None:
        self.ids = [f"o{i:02d}" for i in range(origins)]
        self.cores = {
            n: NodeCore(n, State(n), site=SITES[n], replicas=2, reap_after=3600.0) for n in SITES
        }
        self.now = 0.0
        self.cut: set[str] = set()  # nodes that hear nothing from the others (a partition)
        for c in self.cores.values():
            c.start([spec(o) for o in self.ids], now=0.0, wall=1000.0, alone=True)
            c.drain()
        for name, c in self.cores.items():
            for other in self.cores:
                if other != name:
                    join = MemberEvent("join", gossip_member(other))
                    c.on_event(join, 1.0, 1001.0, self._list(name))
        for name, c in self.cores.items():
            for other in self.cores:
                if other != name:
                    hello = encode_message(KIND_REPAIR, other, HELLO)
                    c.on_event(UserMessage(hello, None), 1.0, 1001.0, self._list(name))
        self.carry()

    def _list(self, name: str):  # type: ignore[no-untyped-def]
        def members() -> list[GossipMember]:
            return [
                gossip_member(n, NodeState.DEAD if self.apart(name, n) else NodeState.ALIVE)
                for n in SITES
            ]

        return members

    def apart(self, a: str, b: str) -> bool:
        return a != b and ((a in self.cut) != (b in self.cut))

    def members(self, cut: Iterable[str]) -> None:
        self.cut = set(cut)
        for name, c in self.cores.items():
            c.members_changed(self._list(name)(), self.now, 1000.0 + self.now)

    def carry(self) -> None:
        for _ in range(20):
            moved = False
            for name, c in self.cores.items():
                out = c.drain()
                c.publish(out.local)
                for o in [*out.sends, *c.drain().sends]:
                    targets = [o.node] if isinstance(o, Send) else list(self.cores)
                    if not isinstance(o, Send | Gossip):
                        continue
                    for t in targets:
                        if t != name and not self.apart(name, t):
                            moved = True
                            self.cores[t].on_event(
                                UserMessage(o.payload, None),
                                self.now,
                                1000.0 + self.now,
                                self._list(t),
                            )
            if not moved:
                return
        raise AssertionError("the cores never stop sending")

    def check(self, names: Iterable[str], result: dict[str, str]) -> None:
        """Each of ``names`` reports every origin it checks as ``result`` says (default up)."""
        self.now += 1.0
        for name in names:
            c = self.cores[name]
            for o in sorted(c.mine()):
                status = Status.DOWN if result.get(o, "up") == "down" else Status.UP
                t = Transition(o, Status.UNKNOWN, status, "x", 0.01, self.now)
                c.on_transition(t, 1000.0 + self.now)
        self.carry()

    def verdicts(self, name: str) -> dict[str, str]:
        return {o: self.cores[name].verdict(o) for o in self.ids}


def test_a_site_cut_from_the_origins_fakes_no_down_and_shows_impaired() -> None:
    f = Fleet()
    f.check(SITES, {})
    assert all(set(f.verdicts(n).values()) == {"up"} for n in SITES)
    assert all(len(f.cores["c1"].owners(o)) == 2 for o in f.ids)
    # site a's uplink breaks: everything it checks fails, one node after the other
    everything_down = dict.fromkeys(f.ids, "down")
    for n in ("a1", "a2"):
        f.check([n], everything_down)
        for name in SITES:
            assert "down" not in f.verdicts(name).values(), name
    for name, c in f.cores.items():
        assert c.verdicts.vantages.impaired == {"a1", "a2"}, name
        assert c.impaired_sites() == {"a": ["a1", "a2"]}
        assert set(f.verdicts(name).values()) == {"up"}
        assert c.vantage("a1")[0]
    assert f.cores["a1"].vantage_reason().startswith(f"{len(f.cores['a1'].mine())} of the")
    assert f.cores["a1"].alert_sender("a") == "b1"  # the first member that can see
    # an origin really dies during the cut: the healthy owner's word is enough
    f.check([n for n in SITES if n not in ("a1", "a2")], {"o03": "down"})
    for name in SITES:
        assert f.verdicts(name)["o03"] == "down", (name, f.cores[name].owners("o03"))
        assert list(f.verdicts(name).values()).count("down") == 1
    # the route comes back
    f.check(["a1", "a2"], {"o03": "down"})
    for name, c in f.cores.items():
        assert not c.verdicts.vantages.impaired and not c.impaired_sites()
        assert f.verdicts(name)["o03"] == "down"
        assert list(f.verdicts(name).values()).count("up") == len(f.ids) - 1


def test_a_site_partitioned_from_everything_confirms_no_down_on_its_own() -> None:
    f = Fleet()
    f.check(SITES, {})
    f.now = 10.0
    f.members(["a1", "a2"])  # each side now sees the other dead
    a1 = f.cores["a1"]
    assert a1.confirm(f.now) == 2  # the other sites still count for site_grace
    assert all(a1.owners(o) and set(a1.owners(o)) <= {"a1", "a2"} for o in f.ids)
    f.check(["a1", "a2"], dict.fromkeys(f.ids, "down"))
    for name in ("a1", "a2"):
        v = f.verdicts(name)
        assert "down" not in v.values(), v
        # the other sites' last word was "up": site a knows its own "down" is not news
        assert f.cores[name].verdicts.vantages.impaired == {"a1", "a2"}
        assert set(v.values()) == {"unknown"}
    # after site_grace, site a alone may confirm... but it is still impaired
    f.now += 301.0
    a1.tick(f.now, 1000.0 + f.now, {"a1", "a2"})
    assert a1.confirm(f.now) == 1
    assert "down" not in f.verdicts("a1").values()
    # the other side judges by its own two sites, as before
    f.check(["b1", "b2", "c1", "c2"], {"o05": "down"})
    for name in ("b1", "b2", "c1", "c2"):
        v = f.verdicts(name)
        assert v["o05"] == "down" and list(v.values()).count("up") == len(f.ids) - 1
        assert f.cores[name].confirm(f.now) == 2


def test_an_outage_seen_from_every_site_is_down_not_an_impaired_vantage() -> None:
    f = Fleet()
    f.check(SITES, {})
    f.check(SITES, dict.fromkeys(f.ids, "down"))
    for name, c in f.cores.items():
        assert not c.verdicts.vantages.impaired
        assert set(f.verdicts(name).values()) == {"down"}


def test_one_site_alert_from_one_node_and_a_fault_on_the_impaired_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The shell's watch (agent/shell/vantage_watch.py) over the cores: only the agreed
    sender posts "site a cannot reach origins", once, then "site-recovered"; the impaired
    nodes carry a degraded ``vantage`` fault and count it in /metrics."""
    f = Fleet()
    f.check(SITES, {})
    sent: dict[str, list[tuple[str, dict[str, Any]]]] = {n: [] for n in SITES}
    metrics = {n: Metrics() for n in SITES}
    watches = {
        n: VantageWatch(
            lambda n=n: f.cores[n],  # type: ignore[misc]
            metrics[n],
            send=lambda key, payload, n=n: sent[n].append((key, payload)),  # type: ignore[misc]
            alerts=True,
            wall=lambda: 2000.0,
        )
        for n in SITES
    }
    assert all(w.poll() == {} for w in watches.values())
    with caplog.at_level(logging.INFO, logger="agent.shell.vantage_watch"):
        f.check(["a1", "a2"], dict.fromkeys(f.ids, "down"))
        faults = {n: w.poll() for n, w in watches.items()}
        for _ in range(3):
            assert {n: w.poll() for n, w in watches.items()} == faults  # changes act once
    assert {n for n, fl in faults.items() if fl} == {"a1", "a2"}
    level, reason = faults["a1"]["vantage"]
    assert level == "degraded" and "origins checked from here fail" in reason
    assert {n: [p["event"] for _, p in s] for n, s in sent.items() if s} == {
        "b1": ["site-impaired"]
    }
    key, payload = sent["b1"][0]
    assert key.startswith("site/a/site-impaired/")
    assert payload["summary"] == "site a cannot reach origins"
    assert payload["nodes"] == ["a1", "a2"] and payload["node"] == "b1"
    assert "origin" not in payload
    lines = [r.getMessage() for r in caplog.records]
    assert sum("this node cannot reach the origins" in m for m in lines) == 2  # a1, a2
    assert sum("site a cannot reach the origins" in m for m in lines) == len(SITES)
    text = generate_latest(metrics["a1"].registry).decode()
    assert "edge_agent_vantage_impaired 1.0" in text
    assert "edge_agent_vantage_impairments_total 1.0" in text
    assert "edge_agent_impaired_sites 1.0" in text
    assert "edge_agent_vantage_impaired 0.0" in generate_latest(metrics["b1"].registry).decode()
    f.check(["a1", "a2"], {})
    assert all(w.poll() == {} for w in watches.values())
    assert [p["event"] for _, p in sent["b1"]] == ["site-impaired", "site-recovered"]
    assert all(not s for n, s in sent.items() if n != "b1")
