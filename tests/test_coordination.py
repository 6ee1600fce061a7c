"""The wired agent on loopback: replicated catalogue and verdicts, placement, handoff,
webhooks, persistence, the write API and the event stream, with real processes.

(The same behaviours across real hosts, partitions and cable pulls: tests/fleet/.)
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import AgentProcess, ThreadedApp, wait_for


def call(
    a: AgentProcess,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A request to ``a``, with its fleet token unless ``headers`` are given."""
    return a.call(method, path, body, headers)


class Site(ThreadedApp):
    """Origins and a webhook receiver on one loopback aiohttp server (own thread).

    GET /o/{name}: 200 while up, 500 while down; remembers which agents (User-Agent)
    checked what. POST /hook: records webhook deliveries.
    """

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.hits: list[tuple[float, str, str]] = []  # (time, origin, user agent)
        self.hooks: list[tuple[dict[str, Any], str]] = []  # (body, X-Edge-Agent-Event)

        async def origin(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.hits.append((time.monotonic(), name, request.headers.get("User-Agent", "")))
            return web.Response(status=500 if name in self.down else 200, text="x")

        async def hook(request: web.Request) -> web.Response:
            self.hooks.append((await request.json(), request.headers["X-Edge-Agent-Event"]))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/o/{name}", origin)
        app.router.add_post("/hook", hook)
        super().__init__(app)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/o/{name}"

    def checkers(self, name: str, since: float = 0.0) -> set[str]:
        """The agents (by node name) that checked ``name`` after ``since``."""
        return {ua.split("/")[0] for t, o, ua in list(self.hits) if o == name and t >= since}


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


def node_config(site: Site, name: str, extra: str = "") -> str:
    return (
        f'[checks]\nuser_agent = "{name}"\n'
        f'[[webhook]]\nurl = "http://127.0.0.1:{site.port}/hook"\n{extra}'
    )


def spec(site: Site, name: str, interval: str = "1s") -> dict[str, Any]:
    return {"url": site.url(name), "interval": interval, "rise": 1, "fall": 1}


def fleet(
    agent_process: Callable[..., AgentProcess], site: Site, n: int = 3, extra: str = ""
) -> list[AgentProcess]:
    first = agent_process(node_config(site, "n0", extra), name="n0").start()
    nodes = [first]
    for i in range(1, n):
        join = f'join = ["127.0.0.1:{first.gossip_port}"]'
        nodes.append(
            agent_process(node_config(site, f"n{i}", extra), name=f"n{i}", cluster=join).start()
        )
    for a in nodes:
        a.wait_notify("READY=1")
    wait_for(lambda: all(a.get("/v1/health")[1]["cluster"]["peers"] == n - 1 for a in nodes), 20)
    return nodes


def origin(a: AgentProcess, oid: str) -> dict[str, Any] | None:
    status, body = a.get(f"/v1/origins/{oid}")
    return body if status == 200 else None


def same_everywhere(nodes: list[AgentProcess], oid: str, verdict: str) -> bool:
    views = [origin(a, oid) for a in nodes]
    if any(v is None or v["verdict"] != verdict for v in views):
        return False
    owners = {tuple(v["owners"]) for v in views if v}
    return len(owners) == 1


def test_api_origin_replicates_is_checked_by_k_owners_and_alerts_once(
    agent_process: Callable[..., AgentProcess], site: Site
) -> None:
    nodes = fleet(agent_process, site)
    status, body = call(nodes[1], "PUT", "/v1/origins/web", spec(site, "web"))
    assert status == 201, body
    wait_for(lambda: same_everywhere(nodes, "web", "up"), 15, "web up on every node")
    view = origin(nodes[2], "web")
    assert view is not None
    owners = view["owners"]
    assert len(owners) == 2
    wait_for(
        lambda: (
            {o["observer"] for o in (origin(nodes[2], "web") or {})["observations"]} == set(owners)
        ),
        10,
        "both owners' observations replicated",
    )
    assert [a.name for a in nodes if (origin(a, "web") or {})["mine"]] == sorted(owners)
    # only the owners check it, once the start-up has settled
    t0 = time.monotonic()
    wait_for(lambda: site.checkers("web", t0) == set(owners), 10, "both owners checking")
    t1 = time.monotonic()
    wait_for(lambda: len([h for h in site.hits if h[0] >= t1 and h[1] == "web"]) >= 6, 10)
    assert site.checkers("web", t1) == set(owners)

    # one webhook per transition, from the rank-1 owner
    site.down.add("web")
    wait_for(lambda: same_everywhere(nodes, "web", "down"), 15, "web down everywhere")
    wait_for(lambda: len(site.hooks) >= 1, 10, "the down webhook")
    site.down.discard("web")
    wait_for(lambda: same_everywhere(nodes, "web", "up"), 15, "web up again everywhere")
    wait_for(lambda: any(b["to"] == "up" for b, _ in site.hooks), 10, "the up webhook")
    assert [(b["from"], b["to"]) for b, _ in site.hooks] == [("up", "down"), ("down", "up")]
    assert {b["node"] for b, _ in site.hooks} == {owners[0]}
    assert len({key for _, key in site.hooks}) == len(site.hooks)

    # remove it through another node's API: gone everywhere, and nobody checks it
    status, body = call(nodes[0], "DELETE", "/v1/origins/web")
    assert status == 200, body
    wait_for(lambda: all(origin(a, "web") is None for a in nodes), 10, "web gone everywhere")
    wait_for(lambda: all(checking(a) == 0 for a in nodes), 10, "nobody checks it any more")


def checking(a: AgentProcess) -> float:
    for line in a.get("/metrics")[1].splitlines():
        if line.startswith("edge_agent_origins_checked "):
            return float(line.split()[1])
    raise AssertionError("no edge_agent_origins_checked in /metrics")


def test_a_killed_owner_is_replaced_within_detection_plus_an_interval(
    agent_process: Callable[..., AgentProcess], site: Site
) -> None:
    nodes = fleet(agent_process, site, 3)
    for i in range(6):
        assert call(nodes[0], "PUT", f"/v1/origins/o{i}", spec(site, f"o{i}"))[0] == 201
    for i in range(6):
        wait_for(lambda i=i: same_everywhere(nodes, f"o{i}", "up"), 15, f"o{i} up")
    victim = nodes[2]
    lost = [f"o{i}" for i in range(6) if victim.name in (origin(nodes[0], f"o{i}") or {})["owners"]]
    assert lost, "the victim owns something (6 origins, k=2 of 3)"
    survivors = nodes[:2]
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGKILL)
    t_kill = time.monotonic()

    def dead_seen() -> bool:
        for a in survivors:
            members = {m["name"]: m["state"] for m in a.get("/v1/members")[1]}
            if members.get(victim.name) != "dead":
                return False
        return True

    wait_for(dead_seen, 30, "the survivors see the victim dead")
    t_dead = time.monotonic()
    for oid in lost:
        # both survivors own it now, and both check it within one interval (1 s) + slack
        wait_for(lambda oid=oid: site.checkers(oid, t_dead) == {"n0", "n1"}, 3.0, oid)
        assert all(set((origin(a, oid) or {})["owners"]) == {"n0", "n1"} for a in survivors)
    assert time.monotonic() - t_kill < 30


def test_state_survives_restart_and_sigkill(
    agent_process: Callable[..., AgentProcess], site: Site
) -> None:
    a = agent_process(node_config(site, "solo"), name="solo").start()
    a.wait_notify("READY=1")
    assert call(a, "PUT", "/v1/origins/keep", spec(site, "keep", "5s"))[0] == 201
    wait_for(lambda: (origin(a, "keep") or {}).get("verdict") == "up", 10)
    wait_for(lambda: a.get("/v1/health")[1]["storage"]["fsyncs"] > 0, 10, "a commit")
    assert a.stop() == 0
    a.messages.clear()
    a.start()
    a.wait_notify("READY=1")
    view = origin(a, "keep")
    assert view is not None and view["spec"]["url"] == site.url("keep")
    assert view["declared_by"] == [{"node": "solo", "source": "api"}]
    # a second origin, then SIGKILL as soon as the API says it is durable: both come back
    status, body = call(a, "PUT", "/v1/origins/more", spec(site, "more", "5s"))
    assert status == 201 and body["durable"] is True  # answered after the group commit
    assert a.proc is not None
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    a.messages.clear()
    a.start()
    a.wait_notify("READY=1")
    assert origin(a, "keep") is not None and origin(a, "more") is not None
    assert a.stop() == 0


def test_write_api_validation_auth_and_conflicts(
    agent_process: Callable[..., AgentProcess], site: Site, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    extra = f'[api]\ntoken_file = "{token}"\n'
    cfg = node_config(site, "t") + f'[[origin]]\nid = "cfg"\nurl = "{site.url("cfg")}"\n'
    a = agent_process(cfg, name="t", token=None)
    text = a.config.read_text().replace("[api]\n", extra, 1)
    a.config.write_text(text)
    a.start()
    a.wait_notify("READY=1")
    ok = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
    status, body = call(a, "PUT", "/v1/origins/x", spec(site, "x"), {})
    assert status == 401 and "token" in body["error"]
    status, body = call(a, "PUT", "/v1/origins/x", spec(site, "x"), {"Authorization": "Bearer no"})
    assert status == 401
    status, body = call(a, "PUT", "/v1/origins/x", {"url": "ftp://nope"}, ok)
    assert status == 400 and "url" in body["error"], body
    status, body = call(a, "PUT", "/v1/origins/x", {**spec(site, "x"), "interval": "soon"}, ok)
    assert status == 400 and "interval" in body["error"], body
    status, body = call(a, "PUT", "/v1/origins/x", {**spec(site, "x"), "id": "y"}, ok)
    assert status == 400 and "match" in body["error"]
    req = urllib.request.Request(a.url + "/v1/origins/x", data=b"{nope", method="PUT", headers=ok)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400
    assert call(a, "PUT", "/v1/origins/x", spec(site, "x"), ok)[0] == 201
    assert call(a, "PUT", "/v1/origins/x", spec(site, "x", "2s"), ok)[0] == 200
    status, body = call(a, "DELETE", "/v1/origins/cfg", None, ok)
    assert status == 409 and "config of t" in body["error"]
    assert call(a, "DELETE", "/v1/origins/none", None, ok)[0] == 404
    assert call(a, "DELETE", "/v1/origins/x", None, ok)[0] == 200
    metrics = a.get("/metrics")[1]
    assert 'edge_agent_bad_input_total{kind="401",source="api"} 2.0' in metrics
    assert 'edge_agent_bad_input_total{kind="400",source="api"}' in metrics
    assert 'edge_agent_gossip_bad_input_total{kind="bad_meta"} 0.0' in metrics
    assert a.get("/v1/health")[1]["status"] == "ok"
    assert a.stop() == 0


def test_event_stream_and_identify_across_the_cluster(
    agent_process: Callable[..., AgentProcess], site: Site
) -> None:
    nodes = fleet(agent_process, site, 2)
    got: list[str] = []
    done = threading.Event()

    def listen() -> None:
        with urllib.request.urlopen(nodes[0].url + "/v1/events", timeout=20) as r:
            for raw in r:
                got.append(raw.decode().rstrip("\n"))
                if got[-1].startswith("data:") and '"id":"ev"' in got[-1]:
                    done.set()
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    wait_for(lambda: any(": connected" in g for g in got), 10, "the stream to open")
    assert call(nodes[1], "PUT", "/v1/origins/ev", spec(site, "ev"))[0] == 201
    wait_for(done.is_set, 15, "an origin event on the other node's stream")
    assert "event: origin" in got
    status, body = call(nodes[0], "POST", "/v1/identify", {"node": "n1", "seconds": 5})
    assert status == 202, body
    wait_for(lambda: nodes[1].get("/v1/health")[1]["identify_s"] > 0, 5, "n1 identifying")
    assert nodes[0].get("/v1/health")[1]["identify_s"] == 0
    status, body = call(nodes[0], "POST", "/v1/identify", {"node": "nobody"})
    assert status == 404
    status, body = call(nodes[0], "POST", "/v1/identify", {"seconds": 0})
    assert status == 400 and "seconds" in body["error"]


# --- in process: the coordinator over a real store, without the agent around it ---------


def peer_member(name: str, meta: Any) -> Any:
    from agent.membership.member import Member as GossipMember
    from agent.membership.messages import NodeState

    return GossipMember(name, b"\x7f\x00\x00\x01", 7946, meta=meta, state=NodeState.ALIVE)


def in_process(tmp_path: Path) -> Any:
    from agent.checks.engine import CheckEngine
    from agent.shell.config import parse_config
    from agent.shell.coordinator import Coordinator

    config = parse_config({"node": {"name": "n1", "data_dir": str(tmp_path)}})
    co = Coordinator("n1", config, CheckEngine(concurrency=1))
    co.start([], 0.0, alone=True)
    return co


def test_a_bug_decoding_a_peers_tags_is_not_hidden(tmp_path: Path) -> None:
    """Nothing is caught around decode_tags (it handles damaged bytes itself): a member
    whose meta is not bytes at all is a bug upstream and must surface, not quietly
    become a member without tags (the old ``except Exception: tags = {}``)."""
    from agent.membership.meta import encode_tags
    from agent.membership.protocol import MemberEvent
    from agent.node.placement import ROLE

    co = in_process(tmp_path)
    try:
        good = peer_member("n2", encode_tags({"role": ROLE}))
        broken = peer_member("n3", None)
        with pytest.raises(TypeError):
            co.on_event(MemberEvent("join", good), 1.0, lambda: [good, broken])
    finally:
        co.close()
