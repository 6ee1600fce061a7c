"""Prometheus HTTP SD (agent/shell/prometheus_sd.py): the pure parts and the member tag.

The real Prometheus reading it from a fleet is tests/monitoring/test_prometheus_sd_fleet.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.domain import HostPort
from agent.membership import encode_tags
from agent.shell.cluster import Cluster
from agent.shell.config import parse_config
from agent.shell.prometheus_sd import api_tag, sd_groups, target_of


def member(name: str, addr: str, api: str | None, **extra: Any) -> dict[str, Any]:
    tags = {"role": "edge-agent", "version": "1.2.3", **extra.pop("tags", {})}
    if api is not None:
        tags["api"] = api
    return {"name": name, "addr": addr, "port": 7946, "state": "alive", "tags": tags, **extra}


def test_the_api_tag_is_the_port_on_a_wildcard_and_the_address_otherwise() -> None:
    assert api_tag(HostPort("0.0.0.0", 8080), 8080) == "8080"
    assert api_tag(HostPort("::", 0), 9100) == "9100"  # the port the API bound
    assert api_tag(HostPort("10.0.0.7", 8080), 8080) == "10.0.0.7:8080"
    assert api_tag(HostPort("fd00::7", 8080), 8080) == "[fd00::7]:8080"
    assert api_tag(HostPort("127.0.0.1", 8080), 8080) == "127.0.0.1:8080"


def test_target_of_each_kind_of_tag() -> None:
    assert target_of("10.0.0.2", "8080") == "10.0.0.2:8080"  # wildcard: its gossip address
    assert target_of("10.0.0.2", "10.0.0.9:9000") == "10.0.0.9:9000"
    assert target_of("10.0.0.2", "[fd00::9]:9000") == "[fd00::9]:9000"
    assert target_of("10.0.0.2", "127.0.0.1:8080") is None  # loopback: not scrapable there
    assert target_of("127.0.0.3", "127.0.0.3:8080") == "127.0.0.3:8080"  # a loopback fleet
    for bad in (None, "", "http", "0", "99999", "x:y"):
        assert target_of("10.0.0.2", bad) is None, bad


def test_sd_groups_list_the_live_edge_agents_with_meta_labels() -> None:
    members = [
        member("pi-b", "10.0.0.3", "8080", tags={"site": "shed"}),
        member("pi-a", "10.0.0.2", "8080"),
        member("pi-gone", "10.0.0.4", "8080", state="dead"),
        member("pi-left", "10.0.0.5", "8080", state="left"),
        member("pi-sus", "10.0.0.6", "8080", state="suspect"),
        member("pi-local", "10.0.0.8", "127.0.0.1:8080"),
        member("old", "10.0.0.9", None),
        {"name": "serf", "addr": "10.0.0.10", "state": "alive", "tags": {"role": "edge-agent"}},
    ]
    assert sd_groups(members) == [
        {
            "targets": ["10.0.0.2:8080"],
            "labels": {
                "__meta_edge_agent_node": "pi-a",
                "__meta_edge_agent_site": "",
                "__meta_edge_agent_version": "1.2.3",
            },
        },
        {
            "targets": ["10.0.0.3:8080"],
            "labels": {
                "__meta_edge_agent_node": "pi-b",
                "__meta_edge_agent_site": "shed",
                "__meta_edge_agent_version": "1.2.3",
            },
        },
        {
            "targets": ["10.0.0.6:8080"],
            "labels": {
                "__meta_edge_agent_node": "pi-sus",
                "__meta_edge_agent_site": "",
                "__meta_edge_agent_version": "1.2.3",
            },
        },
    ]
    assert sd_groups([]) == []


def test_members_advertise_their_api_address_within_the_tag_budget(tmp_path: Path) -> None:
    def tags(listen: str) -> dict[str, str]:
        cfg = parse_config({"node": {"data_dir": str(tmp_path)}, "api": {"listen": listen}})
        return Cluster(cfg, "n", api_port=int(listen.rsplit(":", 1)[1])).tags()

    assert tags("0.0.0.0:8080")["api"] == "8080"
    assert tags("10.1.2.3:8080")["api"] == "10.1.2.3:8080"
    longest = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
    t = tags(longest)
    assert t["api"] == longest
    assert len(encode_tags(t)) < 512 // 2
