"""The Alertmanager policy (agent/shell/alert_rules.py) and its config: pure, no I/O.

The properties that make Alertmanager's deduplication work across a fleet: the labels
are the same on every node, every owner sends, ``up`` resolves with ``endsAt`` = now,
``disputed``/``unknown`` neither fires nor resolves, firing alerts are re-sent on a
cadence and carry an ``endsAt`` that lets them expire if nobody re-sends them.
"""

from __future__ import annotations

import pytest

from agent.domain import ConfigError
from agent.node import VerdictChange
from agent.shell.alert_rules import (
    ORIGIN_DOWN,
    RESEND_INTERVAL,
    SITE_IMPAIRED,
    VALIDITY,
    Alert,
    AlertQueue,
    AlertRules,
    rfc3339,
)
from agent.shell.config import AlertmanagerConfig, parse_config

T0 = 1_800_000_000.0


def change(
    new: str, old: str = "up", at: float = T0, owners: tuple[str, ...] = ("a", "b")
) -> VerdictChange:
    return VerdictChange("shop", old, new, at, f"reason for {new}", owners)


def test_labels_are_the_same_on_every_node_and_name_no_node() -> None:
    sent = [AlertRules(n).on_verdict(change("down"), T0 + 1) for n in ("a", "b")]
    assert [len(s) for s in sent] == [1, 1]  # every owner sends, not only rank 1
    (a,), (b,) = sent
    assert a.labels == b.labels
    assert dict(a.labels) == {"alertname": ORIGIN_DOWN, "origin": "shop", "severity": "critical"}
    assert dict(a.annotations)["node"] == "a" and dict(b.annotations)["node"] == "b"
    assert a.starts_at == b.starts_at == T0  # from the transition, not the send
    assert a.ends_at == T0 + 1 + VALIDITY
    doc = a.as_json()
    assert doc["startsAt"] == rfc3339(T0) and doc["labels"]["origin"] == "shop"


def test_the_cluster_name_is_a_label_so_two_fleets_alerts_stay_apart() -> None:
    shop = [AlertRules(n, cluster="shop").on_verdict(change("down"), T0) for n in ("a", "b")]
    lab = AlertRules("a", cluster="lab").on_verdict(change("down"), T0)
    assert shop[0][0].labels == shop[1][0].labels  # one fleet: one alert
    assert dict(shop[0][0].labels)["cluster"] == "shop"
    assert lab[0].labels != shop[0][0].labels  # the same origin id in another fleet


def test_a_node_that_does_not_own_the_origin_does_not_send() -> None:
    assert AlertRules("c").on_verdict(change("down"), T0) == []
    rules = AlertRules("c")
    rules.on_verdict(change("down"), T0)
    assert rules.on_verdict(change("up", "down"), T0 + 5) == []  # it sent no firing


def test_up_resolves_at_once_and_only_what_fired() -> None:
    rules = AlertRules("a")
    assert rules.on_verdict(change("up", "unknown"), T0) == []  # nothing fired: no news
    rules.on_verdict(change("down"), T0)
    (resolved,) = rules.on_verdict(change("up", "down", at=T0 + 30), T0 + 31)
    assert resolved.starts_at == T0 and resolved.ends_at == T0 + 31
    assert rules.firing() == 0
    assert rules.on_verdict(change("up", "up"), T0 + 40) == []


def test_disputed_holds_the_alert_without_resending_or_resolving() -> None:
    rules = AlertRules("a")
    owners = {"shop": ("a", "b")}
    verdict = {"shop": "down"}
    rules.on_verdict(change("down"), T0)
    assert rules.due(T0 + 10, verdict.__getitem__, owners.__getitem__) == []  # not yet due
    verdict["shop"] = "disputed"
    assert rules.on_verdict(change("disputed", "down"), T0 + 20) == []
    assert rules.due(T0 + 100, verdict.__getitem__, owners.__getitem__) == []
    verdict["shop"] = "down"
    (again,) = rules.on_verdict(change("down", "disputed", at=T0 + 120), T0 + 120)
    assert again.starts_at == T0  # the same alert, from its first start
    (resolved,) = rules.on_verdict(change("up", "down"), T0 + 200)
    assert resolved.ends_at == T0 + 200


def test_firing_alerts_are_resent_on_the_cadence_and_new_owners_send_at_once() -> None:
    rules = AlertRules("c")
    owners = {"shop": ("a", "b")}
    rules.on_verdict(change("down"), T0)  # c does not own it: silent
    assert rules.due(T0 + 1, lambda _: "down", owners.__getitem__) == []
    owners["shop"] = ("a", "c")  # a partition or a failure moved ownership to c
    (first,) = rules.due(T0 + 2, lambda _: "down", owners.__getitem__)
    assert first.starts_at == T0
    assert rules.due(T0 + 2 + RESEND_INTERVAL - 1, lambda _: "down", owners.__getitem__) == []
    (second,) = rules.due(T0 + 2 + RESEND_INTERVAL, lambda _: "down", owners.__getitem__)
    assert second.labels == first.labels and second.ends_at > first.ends_at


def test_forget_resolves_what_was_sent() -> None:
    rules = AlertRules("a")
    rules.on_verdict(change("down"), T0)
    (resolved,) = rules.forget(["shop", "other"], T0 + 5)
    assert resolved.ends_at == T0 + 5 and rules.firing() == 0


def test_site_alerts_fire_and_resolve_with_a_site_label() -> None:
    rules = AlertRules("x")
    (fired,) = rules.on_sites({"kitchen": ["k1", "k2"]}, T0)
    assert dict(fired.labels) == {
        "alertname": SITE_IMPAIRED,
        "site": "kitchen",
        "severity": "warning",
    }
    assert "k1, k2" in dict(fired.annotations)["description"]
    assert rules.on_sites({"kitchen": ["k1", "k2"]}, T0 + 1) == []
    (resent,) = rules.due(T0 + RESEND_INTERVAL, lambda _: "up", lambda _: ())
    assert resent.labels == fired.labels
    (resolved,) = rules.on_sites({}, T0 + 70)
    assert resolved.labels == fired.labels and resolved.ends_at == T0 + 70


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1.9996) == "1970-01-01T00:00:02.000Z"
    assert rfc3339(T0 + 0.25) == "2027-01-15T08:00:00.250Z"


def _alert(origin: str, ends: float = 1.0) -> Alert:
    return Alert((("origin", origin),), (), 0.0, ends)


def test_queue_keeps_the_latest_copy_and_drops_the_oldest_past_its_limit() -> None:
    q = AlertQueue(limit=2)
    assert q.put(_alert("a")) == 0 and q.put(_alert("b")) == 0
    assert q.put(_alert("a", ends=2.0)) == 0  # replaces a's copy, moves it last
    assert q.put(_alert("c")) == 1  # b, the oldest, goes
    batch = q.take(10)
    assert [dict(a.labels)["origin"] for a in batch] == ["a", "c"] and len(q) == 0
    q.put(_alert("a", ends=3.0))  # newer than the batch's copy of a
    assert q.put_back(batch) == 0
    assert [(dict(a.labels)["origin"], a.ends_at) for a in q.take(10)] == [("c", 1.0), ("a", 3.0)]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"url": "host:9093"}, 'alertmanager[0].url: "host:9093" is not an http(s) URL'),
        ({}, "alertmanager[0].url: missing"),
        ({"url": "http://h:9093/api/v2/alerts"}, "give the Alertmanager's base address"),
        ({"url": "http://h:9093", "timeout": "0s"}, "alertmanager[0].timeout: 0s is out of range"),
        ({"url": "http://h:9093", "hook": 1}, "alertmanager[0].hook: unknown key"),
    ],
)
def test_config_errors_are_clear(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"alertmanager": [raw]})
    assert message in str(e.value)


def test_config_takes_several_alertmanagers_and_refuses_one_twice() -> None:
    cfg = parse_config(
        {"alertmanager": [{"url": "http://a:9093/"}, {"url": "https://b/am", "timeout": "2s"}]}
    )
    assert cfg.alertmanagers == (
        AlertmanagerConfig("http://a:9093"),
        AlertmanagerConfig("https://b/am", 2.0),
    )
    with pytest.raises(ConfigError, match="given twice"):
        parse_config({"alertmanager": [{"url": "http://a:9093"}, {"url": "http://a:9093/"}]})
    with pytest.raises(ConfigError, match=r"array of tables \(\[\[alertmanager\]\]\)"):
        parse_config({"alertmanager": {"url": "http://a:9093"}})
    assert parse_config({}).alertmanagers == ()


def test_every_node_sends_the_same_site_alert_through_the_vantage_watch() -> None:
    """Over real node cores (tests/test_vantage.py's): site a's members cannot reach the
    origins; every node's watch tells its rules, and every node posts one
    EdgeAgentSiteImpaired with the same labels, then resolves it when a sees again."""
    from agent.shell.metrics import Metrics
    from agent.shell.vantage_watch import VantageWatch
    from tests.test_vantage import SITES
    from tests.test_vantage import Fleet as Cores

    f = Cores()
    f.check(SITES, {})
    rules = {n: AlertRules(n) for n in SITES}
    posted: dict[str, list[Alert]] = {n: [] for n in SITES}
    watches = [
        VantageWatch(
            lambda n=n: f.cores[n],  # type: ignore[misc]
            Metrics(),
            send=lambda key, payload: None,
            alerts=False,
            wall=lambda: T0,
            on_sites=lambda sites, n=n: posted[n].extend(rules[n].on_sites(sites, T0)),  # type: ignore[misc]
        )
        for n in SITES
    ]
    for w in watches:
        w.poll()
    f.check(["a1", "a2"], dict.fromkeys(f.ids, "down"))
    for w in watches:
        w.poll()
        w.poll()  # a change acts once
    labels = {n: [a.labels for a in p] for n, p in posted.items()}
    assert set(map(tuple, labels.values())) == {(site_labels_of("a"),)}
    f.check(["a1", "a2"], {})
    for w in watches:
        w.poll()
    assert all(len(p) == 2 and p[1].ends_at == T0 for p in posted.values())


def site_labels_of(site: str) -> tuple[tuple[str, str], ...]:
    return (("alertname", SITE_IMPAIRED), ("severity", "warning"), ("site", site))
