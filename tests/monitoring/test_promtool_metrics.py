"""Every node's /metrics passes Prometheus' own linter (issue 20: "`promtool check
metrics` on every node's /metrics reports nothing").

A real 3-node cluster on loopback (tests/monitoring/metrics_support.py) with origins up,
down, unknown, tcp and https, webhooks configured and an unknown id looked up, so the
families show series and not only headers. promtool prints one line per problem (a
counter without ``_total``, a non-base unit, a missing HELP, ...) and nothing when
there is none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.monitoring.metrics_support import Cluster, check_metrics, cluster, promtool


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    promtool()  # fail (CI) or skip before starting anything
    yield from cluster(Path(tmp_path_factory.mktemp("promtool")))


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_promtool_check_metrics_reports_nothing_on_every_node(fleet: Cluster) -> None:
    for node in fleet.nodes:
        text = fleet.metrics(node)
        done = check_metrics(text)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), node.name


def test_the_conventions_promtool_does_not_check(fleet: Cluster) -> None:
    """No ``_created`` series; origin_up is only ever 1 or 0 (unknown has no series);
    the per-origin gauges are in base units; the fleet's counts are on every node."""
    seen: dict[str, list[tuple[dict[str, str], float]]] = {}
    for node in fleet.nodes:
        text = fleet.metrics(node)
        assert "_created" not in text, node.name
        got = samples(text)
        for name, rows in got.items():
            seen.setdefault(name, []).extend(rows)
        verdicts = {labels["verdict"]: v for labels, v in got["edge_agent_origins"]}
        assert verdicts == {"up": 3.0, "down": 1.0, "disputed": 0.0, "unknown": 1.0}, node.name
    up = seen["edge_agent_origin_up"]
    assert {v for _, v in up} == {0.0, 1.0}
    assert {labels["origin"] for labels, _ in up} == {"up", "down", "tcp", "https"}
    took = seen["edge_agent_origin_check_duration_seconds"]
    assert {labels["origin"] for labels, _ in took} == {"up", "down", "tcp", "https"}
    assert all(0 < v < 5 for _, v in took), took
    expiry = seen["edge_agent_origin_tls_expiry_timestamp_seconds"]
    assert {labels["origin"] for labels, _ in expiry} == {"https"}
    assert all(v == fleet.tls.not_after.timestamp() for _, v in expiry), expiry
    assert all(v > time.time() for _, v in expiry)
    lookups = seen["edge_agent_unknown_origin_lookups_total"]
    assert sum(v for labels, v in lookups if labels["surface"] == "api") >= 3
    assert not any(
        labels == {"source": "api", "kind": "404"}
        for labels, _ in seen["edge_agent_bad_input_total"]
    ), "an unknown id is not bad input"
    directions = {labels["direction"] for labels, _ in seen["edge_agent_replication_bytes_total"]}
    assert directions == {"in", "out"}
    assert sum(v for _, v in seen["edge_agent_replication_bytes_total"]) > 0
    kinds = {labels["kind"] for labels, _ in seen["edge_agent_replication_events_total"]}
    assert not kinds & {"bytes_in", "bytes_out"}


def test_promtool_does_report_a_bad_exposition() -> None:
    """The check above can fail: promtool does flag what the old names did wrong."""
    bad = (
        "# HELP edge_agent_checks Probes run.\n# TYPE edge_agent_checks counter\n"
        "edge_agent_checks 3\n"
        "# HELP edge_agent_origin_tls_expiry_milliseconds Expiry.\n"
        "# TYPE edge_agent_origin_tls_expiry_milliseconds gauge\n"
        "edge_agent_origin_tls_expiry_milliseconds 1\n"
    )
    done = check_metrics(bad)
    assert done.returncode != 0 or done.stdout or done.stderr
    assert "edge_agent_origin_tls_expiry_milliseconds" in done.stdout + done.stderr
