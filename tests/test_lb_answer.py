"""The load-balancer policy (agent/node/lb_answer.py): every verdict x fail_open, an
unknown id, reasons made safe for one line of HAProxy's protocol, and what the
agent-check core makes of any bytes a client sends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.node import (
    MAX_REQUEST,
    AgentReply,
    LbAnswer,
    LbStatus,
    agent_reply,
    lb_answer_for,
    sanitise,
)
from agent.node.lb_answer import MAX_REASON


@pytest.mark.parametrize(
    ("verdict", "fail_open", "up", "reason"),
    [
        ("up", True, True, ""),
        ("up", False, True, ""),
        ("down", True, False, "a: down (HTTP 503)"),
        ("down", False, False, "a: down (HTTP 503)"),
        ("unknown", True, True, "verdict unknown (fail open)"),
        ("unknown", False, False, "verdict unknown (fail_open = false)"),
        ("disputed", True, True, "verdict disputed (fail open): a: down (HTTP 503)"),
        ("disputed", False, False, "verdict disputed (fail_open = false): a: down (HTTP 503)"),
    ],
)
def test_every_verdict_and_fail_open(verdict: str, fail_open: bool, up: bool, reason: str) -> None:
    why = "" if verdict in ("up", "unknown") else "a: down (HTTP 503)"
    answer = lb_answer_for(LbStatus(verdict, why, fail_open))
    assert answer == LbAnswer(up, reason)
    word = "up" if up else "down"
    assert answer.agent_line() == (f"{word} #{reason}\n" if reason else f"{word}\n").encode()
    assert answer.http_text() == (f"{word}: {reason}" if reason else word)


def test_an_unknown_origin_fails_open() -> None:
    answer = lb_answer_for(None)
    assert answer.up and answer.agent_line() == b"up #no such origin in the fleet (fail open)\n"


def test_a_down_verdict_without_a_reason_still_says_down() -> None:
    assert lb_answer_for(LbStatus("down", "", True)).agent_line() == b"down #down\n"


def test_reasons_are_one_line_of_printable_ascii_capped() -> None:
    assert sanitise("HTTP 503\r\ndown #2\tnow") == "HTTP 503 down #2 now"
    assert (
        sanitise("tls: certificate expired \u2013 caf\u00e9\x00")
        == "tls: certificate expired ? caf??"
    )
    long = sanitise("x" * 10_000)
    assert len(long) == MAX_REASON and long.endswith("...")
    line = lb_answer_for(LbStatus("down", "a\nb" * 500, True)).agent_line()
    assert line.count(b"\n") == 1 and line.endswith(b"\n") and len(line) <= MAX_REASON + 8


@given(st.text())
def test_any_reason_gives_one_ascii_line(reason: str) -> None:
    line = lb_answer_for(LbStatus("down", reason, True)).agent_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert all(32 <= c < 127 for c in line[:-1]) and len(line) <= MAX_REASON + 8


STATUSES = {"up1": LbStatus("up", "", True), "dn": LbStatus("down", "b: down (refused)", True)}


def reply(data: bytes, eof: bool = False) -> AgentReply | None:
    return agent_reply(data, eof, STATUSES.get)


def test_agent_requests() -> None:
    assert reply(b"up1\n") == AgentReply(b"up\n", "up")
    assert reply(b"up1\r\n") == AgentReply(b"up\n", "up")
    assert reply(b"dn\n") == AgentReply(b"down #b: down (refused)\n", "down")
    # only the first line counts; the rest is never read as a second request
    assert reply(b"dn\nup1\n") == AgentReply(b"down #b: down (refused)\n", "down")
    # an id and then the end of the stream (a client that half-closes without a newline)
    assert reply(b"dn", eof=True) == AgentReply(b"down #b: down (refused)\n", "down")
    unknown = reply(b"nope\n")
    assert unknown is not None and unknown.answer == "up" and unknown.bad == "unknown-origin"
    assert unknown.line == b"up #no such origin in the fleet (fail open)\n"


def test_incomplete_requests_wait_and_nothing_is_answered_to_nothing() -> None:
    assert reply(b"up") is None  # the newline may come in the next segment
    assert reply(b"") is None
    assert reply(b"", eof=True) is None  # connected and closed: no answer to give
    assert reply(b"  \r", eof=True) is None


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff\xfe\x00garbage\n", "not-an-id"),
        (b"GET / HTTP/1.1\r\n", "not-an-id"),
        (b"../../etc/passwd\n", "not-an-id"),
        (b"\n", "empty"),
        (b"x" * MAX_REQUEST, "too-long"),
        (b"y" * (MAX_REQUEST + 5000), "too-long"),
    ],
)
def test_bad_requests_fail_open_and_are_named(data: bytes, kind: str) -> None:
    r = reply(data)
    assert r is not None and r.answer == "up" and r.bad == kind
    assert r.line.startswith(b"up #") and r.line.endswith(b"\n") and r.line.count(b"\n") == 1


@given(st.binary(max_size=600), st.booleans())
def test_any_bytes_give_none_or_one_line(data: bytes, eof: bool) -> None:
    r = reply(data, eof)
    if r is not None:
        assert r.line.endswith(b"\n") and r.line.count(b"\n") == 1
        assert r.answer in ("up", "down")
    elif len(data) >= MAX_REQUEST:
        raise AssertionError("a full request buffer must be answered")
