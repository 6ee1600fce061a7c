"""Debian's real Prometheus finds and scrapes a 3-node fleet from ONE node's SD URL.

The fleet is the network-namespace harness (edge_harness/fleet.py); Prometheus runs in
the farm's namespace, which every node reaches, with ``http_sd_configs`` pointed at n1's
``/v1/sd/prometheus`` only, and scrapes every second. ``up == 1`` for all three targets
is read from Prometheus' own API (/api/v1/query).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from edge_harness import prometheus
from edge_harness.fleet import API_PORT, Fleet, ns_http, wait
from edge_harness.prometheus import Prometheus
from tests.conftest import require
from tests.fleet.conftest import fleet  # noqa: F401  (the fixture)

MakeFleet = Callable[..., Fleet]
PROM_PORT = 9090


def test_prometheus_scrapes_every_node_from_one_sd_url(fleet: MakeFleet) -> None:  # noqa: F811
    require(prometheus.available(), "Debian package prometheus (/usr/bin/prometheus)")
    f = fleet()
    hosts = f.add_many(3)
    for h in hosts:
        h.api_listen = f"0.0.0.0:{API_PORT}"
    f.start_farm(count=1)
    f.start()
    f.wait_converged(30)
    n1 = hosts[0]
    want = {f"{h.ip}:{API_PORT}" for h in hosts}

    # the SD answer itself, as Prometheus will read it
    def sd() -> list[dict[str, object]]:
        status, body = n1.get("/v1/sd/prometheus")
        return body if status == 200 and isinstance(body, list) else []

    groups = wait(lambda: (g := sd()) and len(g) == 3 and g, 15, "3 SD groups on n1")
    assert {t for g in groups for t in g["targets"]} == want  # type: ignore[attr-defined]
    assert {g["labels"]["__meta_edge_agent_node"] for g in groups} == {"n1", "n2", "n3"}  # type: ignore[index]

    farm = f.extra["farm"]
    prom = Prometheus(
        farm.dir / "prometheus",
        [
            {
                "job_name": "edge-agent",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "http_sd_configs": [
                    {"url": f"http://{n1.ip}:{API_PORT}/v1/sd/prometheus", "refresh_interval": "1s"}
                ],
                "relabel_configs": [
                    {"source_labels": ["__meta_edge_agent_node"], "target_label": "node"}
                ],
            },
            {  # docs/api.md: two nodes' URLs list the same targets, each scraped once
                "job_name": "two-urls",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "http_sd_configs": [
                    {"url": f"http://{h.ip}:{API_PORT}/v1/sd/prometheus", "refresh_interval": "1s"}
                    for h in hosts[:2]
                ],
            },
        ],
        listen=("127.0.0.1", PROM_PORT),
        wrap=["ip", "netns", "exec", farm.ns],
        get=lambda path: ns_http(farm.ns, "GET", path, port=PROM_PORT),
    )
    try:
        prom.start()

        def all_up() -> dict[str, str]:
            got = {
                r["metric"]["instance"]: r["value"][1] for r in prom.query('up{job="edge-agent"}')
            }
            return got if got == dict.fromkeys(want, "1") else {}

        up = wait(all_up, 60, "up == 1 for the 3 nodes in Prometheus", partial(_explain, prom))
        assert set(up) == want
        nodes = {r["metric"]["node"] for r in prom.query('up{job="edge-agent"} == 1')}
        assert nodes == {"n1", "n2", "n3"}
        # and it scraped the agents' own metrics, not only reached them
        scraped = prom.query("count by (instance) (edge_agent_alertmanager_queued_alerts)")
        assert {r["metric"]["instance"] for r in scraped} == want
        two = wait(
            lambda: len(r := prom.query('up{job="two-urls"} == 1')) >= 3 and r,
            30,
            "the two-URL job's targets up",
            partial(_explain, prom),
        )
        assert sorted(r["metric"]["instance"] for r in two) == sorted(want)
        assert len([t for t in prom.targets() if t["labels"]["job"] == "two-urls"]) == 3
    finally:
        prom.stop()


def _explain(prom: Prometheus) -> str:
    try:
        targets = prom.targets()
    except Exception as e:  # a diagnostic only
        return f"(targets: {e})\n{prom.tail()}"
    lines = [f"  {t['scrapeUrl']}: {t['health']} {t.get('lastError', '')}" for t in targets]
    return "targets:\n" + "\n".join(lines) + "\n" + prom.tail()
