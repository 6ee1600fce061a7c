"""The batch API against a real agent (issue 17): POST /v1/origins upserts many origins,
PUT /v1/origins makes the API-declared set exactly the array (answered with the diff),
?dry_run=1 applies nothing, a bad element rejects the whole batch with its index, id and
key, GET /v1/catalogue | PUT is a no-op, and a SIGKILL during a batch leaves all of it
or none of it after the restart."""

from __future__ import annotations

import json
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import AgentProcess


def origin(i: int | str, **extra: Any) -> dict[str, Any]:
    return {"id": f"o{i}", "url": "tcp://127.0.0.1:9", "interval": "60s", **extra}


def started(agent_process: Callable[..., AgentProcess]) -> AgentProcess:
    a = agent_process()
    a.start()
    a.wait_notify("READY=1", timeout=20)
    return a


def catalogue(a: AgentProcess) -> dict[str, dict[str, Any]]:
    status, body = a.get("/v1/catalogue")
    assert status == 200
    return {o["id"]: o for o in body}


def test_post_upserts_a_batch_in_one_durable_write(
    agent_process: Callable[..., AgentProcess],
) -> None:
    a = started(agent_process)
    status, body = a.call("POST", "/v1/origins", [origin(i) for i in range(1000)])
    assert status == 200, body
    assert len(body["added"]) == 1000 and body["changed"] == [] and body["removed"] == []
    assert body["durable"] is True and body["dry_run"] is False
    assert len(catalogue(a)) == 1000
    # again, with one changed: only that one is written
    batch = [origin(i) for i in range(1000)]
    batch[7] = origin(7, interval="30s")
    status, body = a.call("POST", "/v1/origins", batch)
    assert status == 200
    assert body["added"] == [] and body["changed"] == ["o7"] and body["unchanged"] == 999
    assert catalogue(a)["o7"]["interval"] == "30s"
    # a POST leaves origins outside the array alone
    status, body = a.call("POST", "/v1/origins", [origin("new")])
    assert status == 200 and body["added"] == ["onew"]
    assert len(catalogue(a)) == 1001


def test_put_applies_exactly_and_answers_with_the_diff(
    agent_process: Callable[..., AgentProcess],
) -> None:
    a = started(agent_process)
    assert a.call("PUT", "/v1/origins", [origin(i) for i in range(5)])[0] == 200
    wanted = [origin(0), origin(1, interval="20s"), origin(2), origin(9)]
    status, plan = a.call("PUT", "/v1/origins?dry_run=1", wanted)
    assert status == 200, plan
    expected = {"added": ["o9"], "changed": ["o1"], "removed": ["o3", "o4"], "unchanged": 2}
    assert {k: plan[k] for k in expected} == expected
    assert plan["dry_run"] is True and "durable" not in plan
    assert sorted(catalogue(a)) == [f"o{i}" for i in range(5)]  # the dry run applied nothing
    status, done = a.call("PUT", "/v1/origins", wanted)
    assert status == 200
    assert {k: done[k] for k in expected} == expected and done["durable"] is True
    got = catalogue(a)
    assert sorted(got) == ["o0", "o1", "o2", "o9"]
    assert got["o1"]["interval"] == "20s"
    # the removed ones are gone from the fleet, not only from the catalogue listing
    assert a.get("/v1/origins/o3")[0] == 404


def test_export_then_apply_is_a_no_op(agent_process: Callable[..., AgentProcess]) -> None:
    a = started(agent_process)
    batch = [
        origin(1),
        origin(2, interval="1500ms", timeout="250ms", rise=3, fall=5, down_interval="5s"),
        {
            "id": "web",
            "url": "https://127.0.0.1:9/health?x=1",
            "interval": "10s",
            "method": "HEAD",
            "expect_status": [200, 204],
            "expect_body": "ok",
            "headers": {"Host": "example.org", "X-Quote": 'say "hi" é'},
            "tls_verify": False,
        },
    ]
    assert a.call("PUT", "/v1/origins", batch)[0] == 200
    _, exported = a.get("/v1/catalogue")
    status, diff = a.call("PUT", "/v1/origins", exported)
    assert status == 200
    assert (diff["added"], diff["changed"], diff["removed"]) == ([], [], [])
    assert diff["unchanged"] == 3
    assert a.get("/v1/catalogue")[1] == exported


def test_a_bad_element_rejects_the_whole_batch(
    agent_process: Callable[..., AgentProcess],
) -> None:
    a = started(agent_process)
    assert a.call("PUT", "/v1/origins", [origin(0)])[0] == 200
    batch = [origin(i) for i in range(1, 11)]
    batch[3] = origin(4, interval="0s")
    batch[6] = {"id": "o7"}  # no url
    batch[8] = "not an origin"
    batch[9] = origin(2)  # the id of element 1 again
    for method in ("POST", "PUT"):
        status, body = a.call(method, "/v1/origins", batch)
        assert status == 400, body
        assert body["error"] == "4 of 10 origins are invalid; nothing was applied"
        got = [(e["index"], e["id"], e["key"]) for e in body["errors"]]
        assert got == [(3, "o4", "interval"), (6, "o7", "url"), (8, None, None), (9, "o2", "id")]
        assert "origins[3].interval" in body["errors"][0]["message"]
        assert "must be longer than 0" in body["errors"][0]["message"]
        assert "origins[1]" in body["errors"][3]["message"]
    assert sorted(catalogue(a)) == ["o0"]  # nothing applied, nothing removed
    for bad, why in (
        ({"id": "o1"}, "must be a JSON array"),
        ([[]], "origins[0]"),
    ):
        status, body = a.call("PUT", "/v1/origins", bad)
        assert status == 400 and why in json.dumps(body), body
    assert sorted(catalogue(a)) == ["o0"]
    _, text = _metrics(a)
    assert 'edge_agent_bad_input_total{kind="400",source="api"}' in text


def test_batch_writes_need_the_fleet_token(agent_process: Callable[..., AgentProcess]) -> None:
    a = started(agent_process)
    status, body = a.call("POST", "/v1/origins", [origin(1)], headers={})
    assert status == 401, body
    status, body = a.call("PUT", "/v1/origins?dry_run=maybe", [origin(1)])
    assert status == 400 and "dry_run" in body["error"]
    assert catalogue(a) == {}


def _metrics(a: AgentProcess) -> tuple[int, str]:
    with urllib.request.urlopen(a.url + "/metrics", timeout=5) as r:
        return r.status, r.read().decode()


@pytest.mark.timeout(180)
def test_sigkill_during_a_batch_leaves_all_or_none(
    agent_process: Callable[..., AgentProcess],
) -> None:
    a = agent_process()
    n = 5000
    body = json.dumps([origin(i) for i in range(n)]).encode()
    # kill points: as the body is sent, while the agent validates and applies it, around
    # its commit, and after the answer (then the whole batch must be there)
    for round_, kill_after in enumerate((0.0, 0.15, 0.4, 0.8, None)):
        a.messages.clear()
        a.start()
        a.wait_notify("READY=1", timeout=30)
        present = set(catalogue(a))
        assert present in (set(), {f"o{i}" for i in range(n)}), (
            f"round {round_}: {len(present)} of {n} origins survived the kill"
        )
        if present:
            assert a.call("PUT", "/v1/origins", [])[0] == 200  # empty again, durably
        answer: dict[str, Any] = {}

        def send(answer: dict[str, Any] = answer) -> None:
            req = urllib.request.Request(
                a.url + "/v1/origins", data=body, method="POST", headers=a.auth
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer.update(json.loads(r.read()))
            except (OSError, urllib.error.URLError, ValueError):
                pass  # killed under us

        t = threading.Thread(target=send)
        t.start()
        if kill_after is None:
            t.join(30)
            assert answer.get("durable") is True, answer
        else:
            t.join(kill_after)  # the kill lands at a point of the batch's path
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        t.join(30)
    a.messages.clear()
    a.start()
    a.wait_notify("READY=1", timeout=30)
    final = set(catalogue(a))
    assert final == {f"o{i}" for i in range(n)}  # the acknowledged last round survived
