"""The fleet write token across three real nodes (agent processes gossiping on loopback).

A fleet-wide write is taken by one node and spreads to all, so one node that asks for no
token, or for another one, would unprotect the fleet (issue 16, item 5). Here such a node
refuses the write, its peers say which node differs, and nothing it refused spreads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.shell.api.app import NO_FLEET_TOKEN
from agent.shell.fleet_token import agreement, fingerprint
from tests.conftest import FLEET_TOKEN, AgentProcess, wait_for
from tests.test_coordination import Site, node_config, spec


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


def three(
    agent_process: Callable[..., AgentProcess], site: Site, third: str | None
) -> list[AgentProcess]:
    """n0 and n1 hold the fleet token; n2 holds ``third`` (None: no token_file at all)."""
    first = agent_process(node_config(site, "n0"), name="n0").start()
    join = f'join = ["127.0.0.1:{first.gossip_port}"]'
    nodes = [first]
    for name, token in (("n1", FLEET_TOKEN), ("n2", third)):
        cfg = node_config(site, name)
        nodes.append(agent_process(cfg, name=name, cluster=join, token=token).start())
    for a in nodes:
        a.wait_notify("READY=1")
    wait_for(lambda: all(a.get("/v1/health")[1]["cluster"]["peers"] == 2 for a in nodes), 20)
    return nodes


def everywhere(nodes: list[AgentProcess], oid: str) -> bool:
    return all(a.get(f"/v1/origins/{oid}")[0] == 200 for a in nodes)


def reasons(a: AgentProcess) -> list[str]:
    body: dict[str, Any] = a.get("/v1/health")[1]
    return list(body["reasons"])


def test_a_node_without_the_fleet_token_refuses_fleet_wide_writes(
    agent_process: Callable[..., AgentProcess], site: Site
) -> None:
    n0, n1, n2 = nodes = three(agent_process, site, None)
    fleet_auth = {"Authorization": f"Bearer {FLEET_TOKEN}"}
    assert n0.call("PUT", "/v1/origins/web", spec(site, "web"))[0] == 201
    wait_for(lambda: everywhere(nodes, "web"), 10, "web on every node")

    # through n2, from its own host, with no token or with the fleet's: refused
    for headers in ({}, fleet_auth):
        status, body = n2.call("DELETE", "/v1/origins/web", headers=headers)
        assert (status, body["error"]) == (403, NO_FLEET_TOKEN)
        status, body = n2.call("PUT", "/v1/origins/web", spec(site, "web", "5s"), headers)
        assert (status, body["error"]) == (403, NO_FLEET_TOKEN)
        status, body = n2.call("PUT", "/v1/origins/new", spec(site, "new"), headers)
        assert status == 403
    assert n2.get("/v1/health")[1]["writes"] == "refused: no token"
    assert n0.get("/v1/health")[1]["writes"] == "fleet token"
    metrics = n2.get("/metrics")[1]
    assert 'edge_agent_bad_input_total{kind="403",source="api"} 6.0' in metrics

    # nothing it refused spread: web is still declared everywhere, unchanged; no "new"
    assert n0.call("PUT", "/v1/origins/probe", spec(site, "probe"))[0] == 201
    wait_for(lambda: everywhere(nodes, "probe"), 10, "a later write on every node")
    for a in nodes:
        assert a.get("/v1/origins/web")[1]["spec"]["interval"] == "1s"
        assert a.get("/v1/origins/new")[0] == 404
    # a node-local write (identify) from its own host stays allowed without a token
    assert n2.call("POST", "/v1/identify", {"seconds": 2}, {})[0] == 202
    # the token-holding nodes take the same writes from any of them
    assert n1.call("DELETE", "/v1/origins/web")[0] == 200
    wait_for(lambda: all(a.get("/v1/origins/web")[0] == 404 for a in nodes), 10, "web gone")


def test_a_node_with_another_token_refuses_and_its_peers_name_it(
    agent_process: Callable[..., AgentProcess], site: Site
) -> None:
    n0, n1, n2 = nodes = three(agent_process, site, "not-the-fleet-token")

    def odd_one_named() -> bool:
        return all(any("differs on 1 of 2 peers (n2)" in r for r in reasons(a)) for a in (n0, n1))

    wait_for(odd_one_named, 15, "n0 and n1 naming n2's token as different")
    assert n0.get("/v1/health")[1]["status"] == "degraded"
    wait_for(lambda: any("differs on 2 of 2 peers (n0, n1)" in r for r in reasons(n2)), 15)
    # n2's own token is right for n2, but it is not the fleet's: refused, with the reason
    status, body = n2.call("PUT", "/v1/origins/x", spec(site, "x"))
    assert status == 503, body
    assert "fleet-wide writes are refused on this node until it matches" in body["error"]
    status, body = n2.call("PUT", "/v1/origins/x", spec(site, "x"), {"Authorization": "Bearer x"})
    assert status == 401
    # the majority goes on taking writes, and says it does
    assert n0.call("PUT", "/v1/origins/x", spec(site, "x"))[0] == 201
    assert any("still takes fleet-wide writes" in r for r in reasons(n0))
    wait_for(lambda: everywhere(nodes, "x"), 10, "x on every node")

    # the operator fixes n2's token file: no restart, the fault clears, n2 takes writes
    n2.token_file.write_text(FLEET_TOKEN + "\n")
    n2.token = FLEET_TOKEN
    wait_for(lambda: not any("token" in r for a in nodes for r in reasons(a)), 20, "all agree")
    assert n2.call("DELETE", "/v1/origins/x")[0] == 200
    wait_for(lambda: all(a.get("/v1/origins/x")[0] == 404 for a in nodes), 10, "x gone")


def test_agreement_is_by_strict_majority_of_token_holders() -> None:
    a, b = fingerprint("alpha"), fingerprint("beta")
    assert a != b and len(a) == 8 and fingerprint("alpha") == a
    assert agreement(a, {}).may_write and agreement(a, {}).reason() is None
    assert agreement(a, {"p": a, "q": b}).may_write  # 2 of 3
    assert not agreement(b, {"p": a, "q": a}).may_write  # 1 of 3
    assert not agreement(a, {"p": b}).may_write  # 1 of 2: neither side may write
    odd = agreement(a, {"p": a, "q": b, "r": b})
    assert not odd.may_write and odd.differing == ("q", "r")
    assert odd.reason() is not None and "2 of 3 peers (q, r)" in (odd.reason() or "")
