"""What the node does per check result, per refresh and per scrape must not grow with
the catalogue (issue 17 item 4: 100,000 origins on one node). These pin the cheap paths
down without timing anything: the fleet's counts are kept, not recounted, and agree
with a recount; a check's transition never copies the set of origins this node checks;
and the per-origin gauges write what prometheus_client would have written.
"""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.checks.state import Status, Transition
from agent.domain.origin import OriginSpec, parse_origin
from agent.node.core import NodeCore
from agent.node.handoff import Handoff
from agent.node.state import State
from agent.shell.metrics import Metrics
from agent.shell.origin_gauge import OriginGauge
from tests.test_node_core import answer_from, member


def spec(origin_id: str) -> OriginSpec:
    return parse_origin({"id": origin_id, "url": f"http://127.0.0.1:9/{origin_id}"})


def recount(c: NodeCore) -> dict[str, int]:
    return c.verdicts.counts(c.placement.origins)


def recount_mine(c: NodeCore) -> dict[str, int]:
    owned = c.handoff.owned() if c.settled else set()
    return {"owned": len(owned), **c.verdicts.counts(owned)}


def test_counts_are_kept_and_agree_with_a_recount() -> None:
    """Origins come and go, checks go up and down, a peer joins (ownership moves to it),
    answers, dies: after every step the kept counts equal a recount."""
    rng = random.Random(7)
    c = NodeCore("a", State("a"), replicas=1, reap_after=60.0)
    c.start([spec(f"cfg-{i}") for i in range(20)], now=0.0, wall=1000.0, alone=True)
    statuses = [Status.UP, Status.DOWN, Status.UNKNOWN]
    members = [member("a")]
    split = False  # b owned some origins at some step
    for step in range(800):
        now, wall = float(step), 1000.0 + step
        oid = f"o{rng.randrange(40)}"
        roll = rng.random()
        if roll < 0.25:
            c.put(spec(oid), now=now, wall=wall)
        elif roll < 0.37:
            c.delete(oid, now=now, wall=wall)
        elif roll < 0.40:
            members = [member("a")] if len(members) == 2 else [member("a"), member("b")]
            c.members_changed(members, now=now, wall=wall)
            if len(members) == 2:
                answer_from(c, "b", now, members)
        else:
            target = rng.choice([oid, f"cfg-{rng.randrange(20)}"])
            new = rng.choice(statuses)
            c.on_transition(Transition(target, Status.UNKNOWN, new, "r", 0.01, now), wall)
        if step % 50 == 49:
            c.tick(now=now, wall=wall, alive={m.name for m in members})
        c.drain()
        assert c.counts() == recount(c), step
        assert c.mine_counts() == recount_mine(c), step
        assert sum(c.counts().values()) == len(c.placement.origins)
        split |= 0 < c.mine_counts()["owned"] < len(c.placement.origins)
    assert c.counts()["up"] + c.counts()["down"] > 0, "the walk judged some origins"
    assert split, "ownership moved to the peer during the walk"


def test_a_transition_does_not_copy_the_checked_set(monkeypatch: pytest.MonkeyPatch) -> None:
    c = NodeCore("a", State("a"), replicas=1, reap_after=60.0)
    c.start([spec(f"o{i}") for i in range(50)], now=0.0, wall=1000.0, alone=True)
    c.drain()

    def copied(self: Handoff) -> set[str]:
        raise AssertionError("Handoff.checking() copies every checked origin: O(n) a check")

    monkeypatch.setattr(Handoff, "checking", copied)
    c.on_transition(Transition("o7", Status.UNKNOWN, Status.UP, "200", 0.01, 1.0), 1001.0)
    c.on_transition(Transition("nope", Status.UNKNOWN, Status.UP, "200", 0.01, 1.0), 1001.0)
    assert [v.origin for v in c.drain().verdicts] == ["o7"]
    assert c.checks("o7") and not c.checks("nope")


def test_origin_gauge_writes_what_prometheus_client_writes() -> None:
    ours = OriginGauge("edge_agent_origin_up", 'Help with "quotes", a \\ and\na newline.')
    registry = CollectorRegistry()
    theirs = Gauge("edge_agent_origin_up", 'Help with "quotes", a \\ and\na newline.', ["origin"])
    registry.register(theirs)
    values = {"a": 1.0, "b-2": 0.0, "c.3": -1.0, "d_4": 29.25, "e": 1e21, 'odd"\\\n': 3.0}
    for oid, v in values.items():
        ours.labels(oid).set(v)
        theirs.labels(oid).set(v)
    ours.labels("gone").set(1)
    ours.remove("gone")
    ours.remove("never")  # harmless
    ours.labels("a").set(1.0)  # unchanged: the same line
    assert ours.render() == generate_latest(registry).decode()
    assert ours.get("d_4") == 29.25 and ours.get("gone") is None and len(ours) == len(values)
    # the encoded family is kept between scrapes, and follows every change
    kept = ours.render_bytes()
    assert kept == ours.render().encode() and ours.render_bytes() is kept
    ours.labels("a").set(0.0)
    assert b'edge_agent_origin_up{origin="a"} 0.0' in ours.render_bytes()
    ours.remove("a")
    assert b'origin="a"' not in ours.render_bytes()
    assert ours.render_bytes() == ours.render().encode()


def test_metrics_exposition_serves_the_per_origin_gauges() -> None:
    m = Metrics()
    m.origin_up.labels("web").set(1)
    m.check_duration.labels("web").set(0.012)
    m.tls_expiry.labels("web").set(1.8e9)
    m.bad_input.labels("api", "400").inc()
    families = {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}
    assert families["edge_agent_origin_up"].samples[0].value == 1.0
    assert families["edge_agent_origin_check_duration_seconds"].samples[0].value == 0.012
    tls = families["edge_agent_origin_tls_expiry_timestamp_seconds"].samples[0]
    assert tls.labels == {"origin": "web"} and tls.value == 1.8e9
    assert families["edge_agent_bad_input"].samples[0].value == 1.0
