"""monitoring/: the Prometheus rules pass `promtool check rules` and their unit tests
(`promtool test rules`), every alert's tests see it both fire and stay quiet, the
Alertmanager example passes `amtool check-config` and routes as its comments say, the
Grafana dashboard is JSON, and every metric the rules and the dashboard name is one a
real agent serves, with the labels they match on (so they stay true when metrics change).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.monitoring.metrics_support import Cluster, amtool, cluster, promtool

MON = ROOT / "monitoring"
RULES = MON / "edge-agent.rules.yml"
RULE_TESTS = MON / "tests" / "edge-agent.test.yml"
ALERTMANAGER = MON / "alertmanager.yml"
DASHBOARD = MON / "grafana-dashboard.json"

#: series Prometheus makes itself, not the agent
PROMETHEUS_MADE = {"up"}
#: labels Prometheus adds to every scraped series
TARGET_LABELS = {"job", "instance"}


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)


def rule_exprs(text: str) -> list[tuple[str, str]]:
    """(alert or record name, expr) for each rule, from the YAML text (a folded ``>-``
    expr spans the more-indented lines after it)."""
    out: list[tuple[str, str]] = []
    lines = text.splitlines()
    name = ""
    for i, line in enumerate(lines):
        head = re.match(r"\s*- (?:alert|record): (\S+)", line)
        if head:
            name = head.group(1)
        m = re.match(r"(\s*)expr: ?(.*)$", line)
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest in (">-", ">", "|", "|-"):
            parts = []
            for more in lines[i + 1 :]:
                if more.strip() and len(more) - len(more.lstrip()) <= indent:
                    break
                parts.append(more.strip())
            rest = " ".join(parts)
        out.append((name, rest))
    return out


def alert_names(text: str) -> list[str]:
    return re.findall(r"^\s*- alert: (\S+)$", text, re.M)


def with_expr(text: str, alert: str, expr: str) -> str:
    """The rules with one alert's expr replaced."""
    lines = text.splitlines()
    out: list[str] = []
    inside = skipping = False
    indent = 0
    for line in lines:
        if re.match(r"\s*- (alert|record): ", line):
            inside = line.strip() == f"- alert: {alert}"
        if skipping:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                skipping = False
            else:
                continue
        m = re.match(r"(\s*)expr:", line)
        if inside and m:
            indent = len(m.group(1))
            out.append(f"{m.group(1)}expr: {expr}")
            skipping = True
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def test_promtool_check_rules() -> None:
    done = run(promtool(), "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_test_rules() -> None:
    done = run(promtool(), "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("alert", alert_names(RULES.read_text()))
def test_each_alert_is_tested_firing_and_quiet(alert: str, tmp_path: Path) -> None:
    """An alert that never fires, or always fires, fails the unit tests: so they hold a
    case where it fires and one where it does not."""
    (tmp_path / "tests").mkdir()
    tests = RULE_TESTS.read_text()
    (tmp_path / "tests" / RULE_TESTS.name).write_text(tests)
    for broken in ("vector(1) == 0", "vector(1)"):
        (tmp_path / RULES.name).write_text(with_expr(RULES.read_text(), alert, broken))
        check = run(promtool(), "check", "rules", str(tmp_path / RULES.name))
        assert check.returncode == 0, check.stdout + check.stderr  # a valid file, only wrong
        done = run(promtool(), "test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
        assert done.returncode != 0, f"{alert} with expr {broken!r} still passes its tests"
        said = done.stdout + done.stderr
        assert f"alertname: {alert}" in said, said


def test_amtool_check_config_and_routes() -> None:
    done = run(amtool(), "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    for labels, receivers in (
        (
            ["severity=critical", "alertname=EdgeAgentOriginChecksDown", "origin=web"],
            "on-call,team-chat",
        ),
        (["severity=critical", "alertname=EdgeAgentOriginDown", "origin=web"], "on-call,team-chat"),
        (["severity=warning", "alertname=EdgeAgentSDCardWear"], "team-chat"),
        (["severity=warning", "alertname=EdgeAgentStorageFault"], "team-chat"),
    ):
        argv = [amtool(), "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels]
        routed = run(*argv)
        assert (routed.returncode, routed.stdout.strip()) == (0, receivers), routed.stderr


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_the_dashboard_is_grafana_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    graphs = [p for p in board["panels"] if p["type"] != "row"]
    assert graphs and all(p["targets"] and p["gridPos"]["w"] > 0 for p in graphs)
    assert all(t["expr"].strip() for p in graphs for t in p["targets"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """Each sample name a real agent serves, with the label names its series have (none
    known for a family with no series yet, such as edge_agent_fault on a healthy node:
    its ``# TYPE`` line names it)."""
    promtool()
    for c in cluster(Path(tmp_path_factory.mktemp("rules")), nodes=1):
        text = Cluster.metrics(c.nodes[0])
        names: dict[str, set[str]] = {n: set() for n in re.findall(r"^# TYPE (\S+) ", text, re.M)}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                names.setdefault(s.name, set()).update(s.labels)
        yield names


IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SELECTOR = re.compile(r"\b(edge_agent_[a-z0-9_]+)\{([^}]*)\}")


def metric_names(expr: str) -> set[str]:
    """The series names an expression reads: edge_agent_*, recording rules (with a
    colon) and Prometheus' own; strings (label values) left out."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    return {
        w
        for w in IDENT.findall(bare)
        if w.startswith("edge_agent_") or ":" in w or w in PROMETHEUS_MADE
    }


def test_rules_and_dashboard_name_what_an_agent_serves(served: dict[str, set[str]]) -> None:
    rules = rule_exprs(RULES.read_text())
    assert len(rules) == len(re.findall(r"^\s*- (?:alert|record): ", RULES.read_text(), re.M))
    recorded = {name for name, _ in rules if ":" in name}
    exprs = [e for _, e in rules] + dashboard_exprs()
    used: set[str] = set()
    for expr in exprs:
        for name in metric_names(expr):
            used.add(name)
            if ":" in name:
                assert name in recorded, f"{name} in {expr!r} is no recording rule"
            elif name not in PROMETHEUS_MADE:
                assert name in served, f"{name} in {expr!r} is not in a real agent's /metrics"
        for name, matchers in SELECTOR.findall(expr):
            for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers):
                if label not in TARGET_LABELS and served[name]:
                    assert label in served[name], f"{name} has no label {label!r} ({expr!r})"
    # the families the issue asks the rules about are among them
    for needed in (
        "edge_agent_origin_up",
        "edge_agent_origins",
        "edge_agent_members",
        "edge_agent_store_fault",
        "edge_agent_store_bytes_written_total",
        "edge_agent_gossip_bad_input_total",
        "edge_agent_origin_tls_expiry_timestamp_seconds",
        "edge_agent_origin_check_duration_seconds",
        "up",
    ):
        assert needed in used, needed
