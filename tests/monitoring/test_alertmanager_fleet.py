"""Debian's real Alertmanager receives a 3-node fleet's alerts: one notification per
transition, also across a partition and its heal.

Every owner of an origin posts its alert with the same labels (agent/shell/alert_rules.py),
and Alertmanager, routed by (alertname, origin) with a 1 s group_wait/group_interval and
an hour's repeat_interval (edge_harness/alertmanager.py), must turn them into exactly
one "firing" notification when the origin goes down and exactly one "resolved" when it
comes back. Alertmanager and its webhook receiver (the origin farm's ``POST /hook``) run
in the farm's namespace, which both sides of a partition still reach.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from edge_harness import alertmanager
from edge_harness.alertmanager import Alertmanager
from edge_harness.fleet import Fleet, Host, ns_http, wait
from tests.conftest import require
from tests.fleet.conftest import fleet, require_fleet  # noqa: F401  (the fixture)

MakeFleet = Callable[..., Fleet]
AM_PORT = 9093
FARM_PORT = 8000
ORIGIN = "o0"
QUIET = 6.0  # s held after each notification: a duplicate would come within group_interval


def _setup(f: Fleet) -> tuple[list[Host], Alertmanager]:
    require(alertmanager.available(), "Debian package prometheus-alertmanager")
    hosts = f.add_many(3)
    base = f.start_farm(count=1)
    farm = f.extra["farm"]
    am = Alertmanager(
        farm.dir / "alertmanager",
        f"{base}/hook",
        listen=(farm.ip, AM_PORT),
        wrap=["ip", "netns", "exec", farm.ns],
        get=lambda path: ns_http(farm.ns, "GET", path, port=AM_PORT, host=farm.ip),
    )
    am.start()
    f.origins_toml = (
        f'[[origin]]\nid = "{ORIGIN}"\nurl = "{base}/o/0"\ninterval = "1s"\nrise = 1\nfall = 1\n'
        f'[[alertmanager]]\nurl = "http://{farm.ip}:{AM_PORT}"\n'
    )
    f.start()
    f.wait_converged(30)
    wait(lambda: verdicts(hosts) == {"up"}, 30, f"{ORIGIN} up on every node", f.describe)
    return hosts, am


def verdicts(hosts: Iterable[Host]) -> set[str]:
    return {h.origins()[ORIGIN]["verdict"] for h in hosts}


def farm_set(f: Fleet, mode: str) -> None:
    farm = f.extra["farm"]
    status, _ = ns_http(farm.ns, "POST", f"/control/0?mode={mode}", port=FARM_PORT, host=farm.ip)
    assert status == 200


def notifications(f: Fleet) -> list[tuple[str, list[dict[str, str]]]]:
    """(status, [labels of each alert]) of every notification Alertmanager sent."""
    farm = f.extra["farm"]
    status, body = ns_http(farm.ns, "GET", "/hooks", port=FARM_PORT, host=farm.ip)
    assert status == 200
    return [(h["body"]["status"], [a["labels"] for a in h["body"]["alerts"]]) for h in body]


def hold(seconds: float, invariant: Callable[[], bool], what: str) -> None:
    """Keep checking an invariant for a fixed time (a window that proves a negative: no
    duplicate notification), not a wait for something to happen."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert invariant(), what
        time.sleep(0.25)


LABELS = {
    "alertname": "EdgeAgentOriginDown",
    "cluster": "edge",
    "origin": ORIGIN,
    "severity": "critical",
}
FIRING = [("firing", [LABELS])]
BOTH = [("firing", [LABELS]), ("resolved", [LABELS])]


def delivered(h: Host) -> float:
    """Alert POSTs this node delivered to Alertmanager (its /metrics)."""
    status, text = h.get("/metrics")
    assert status == 200
    for line in str(text).splitlines():
        if line.startswith('edge_agent_alertmanager_posts_total{result="delivered"}'):
            return float(line.split()[-1])
    return 0.0


def _explain(f: Fleet, am: Alertmanager) -> Callable[[], str]:
    def explain() -> str:
        try:
            alerts = am.alerts()
        except Exception as e:  # a diagnostic only
            alerts = [{"error": str(e)}]
        return f"notifications: {notifications(f)}\nalerts: {alerts}\n{f.describe()}\n{am.tail()}"

    return explain


def test_one_notification_per_transition(fleet: MakeFleet) -> None:  # noqa: F811
    f = fleet()
    hosts, am = _setup(f)
    explain = _explain(f, am)
    try:
        farm_set(f, "down")
        wait(lambda: notifications(f) == FIRING, 30, "one firing notification", explain)
        hold(QUIET, lambda: notifications(f) == FIRING, "a duplicate firing notification")
        # every owner sent it, not only the rank-1 owner
        owners = hosts[0].origins()[ORIGIN]["owners"]
        senders = [h.name for h in hosts if delivered(h) > 0]
        assert len(owners) >= 2 and set(owners) <= set(senders), (owners, senders)
        farm_set(f, "up")
        wait(lambda: notifications(f) == BOTH, 30, "one resolved notification", explain)
        hold(QUIET, lambda: notifications(f) == BOTH, "a duplicate notification")
        assert am.alerts() == []  # nothing left active (the API lists active alerts only)
    finally:
        am.stop()


def test_one_notification_per_transition_across_a_partition(fleet: MakeFleet) -> None:  # noqa: F811
    require_fleet(nft=True)
    f = fleet()
    hosts, am = _setup(f)
    n1, n2, n3 = hosts
    explain = _explain(f, am)
    try:
        f.partition([n1], [n2, n3])
        wait(
            lambda: n1.alive_names() == {"n1"} and n2.alive_names() == {"n2", "n3"},
            40,
            "the partition to be seen on both sides",
            f.describe,
        )
        before = {h.name: delivered(h) for h in hosts}
        farm_set(f, "down")
        # each side judges on its own: both come to "down" and both send the alert
        wait(lambda: verdicts(hosts) == {"down"}, 30, "down on both sides", f.describe)
        wait(lambda: notifications(f) == FIRING, 30, "one firing notification", explain)
        wait(
            lambda: (
                delivered(n1) > before["n1"]
                and max(delivered(n2) - before["n2"], delivered(n3) - before["n3"]) > 0
            ),
            30,
            "both sides to post the alert",
            explain,
        )
        hold(QUIET, lambda: notifications(f) == FIRING, "a duplicate firing notification")
        f.heal()
        f.wait_converged(60)
        hold(QUIET, lambda: notifications(f) == FIRING, "a notification at the heal")
        farm_set(f, "up")
        wait(lambda: notifications(f) == BOTH, 30, "one resolved notification", explain)
        hold(QUIET, lambda: notifications(f) == BOTH, "a duplicate notification")
        assert am.alerts() == []
    finally:
        am.stop()
