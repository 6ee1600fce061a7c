"""What a load balancer is told about an origin, from the fleet's verdict: one policy for
both surfaces, HAProxy's agent-check port (agent/shell/agent_check.py) and the API's
``GET /v1/origins/{id}/ready`` (docs/load-balancers.md).

Pure: the request's bytes and a lookup of the origin's (verdict, reason, fail_open) in,
the answer out; nothing here reads a socket or a clock, so every case is a unit test.

The policy:

- ``up`` -> up; ``down`` -> down, with the observers' reasons.
- ``unknown`` (no owner has reported yet) or ``disputed`` (owners disagree) -> the origin's
  ``fail_open``: true (the default) answers up, so the load balancer's own check decides;
  false answers down. Failing open is the default because the fleet not knowing is not
  evidence that the origin is down: a verdict of "unknown" just after a restart must not
  take a whole backend out of service.
- an id the fleet does not know -> up, with a description saying so (agent-check): a typo
  in a load balancer's config, or an origin removed before the load balancer was
  reconfigured, must not take a server out. The ready endpoint answers 404 instead (an
  HTTP-only load balancer then marks it down: a mistake shows at once).

The agent-check answer uses HAProxy's operational words only, ``up`` and ``down``, never
the administrative ones (``ready``, ``drain``, ``maint``): those set the same flags an
operator sets on HAProxy's CLI, so an agent answering ``ready`` every 2 s would undo an
operator's ``disable server`` or drain. ``up`` alone undoes what ``down`` did, which is
all the agent ever says, so recovery needs nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.domain import ORIGIN_ID_RE

#: bytes read from an agent-check client at most: an id is at most 64 characters, and
#: HAProxy sends ``agent-send``'s string and nothing more
MAX_REQUEST = 256
#: bytes of a reason in an answer at most (HAProxy shows it in its logs and stats page)
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class LbStatus:
    """An origin as the load-balancer policy needs it (NodeCore.lb_status)."""

    verdict: str  # "up" | "down" | "disputed" | "unknown"
    reason: str  # the observers' reasons (down, disputed), else ""
    fail_open: bool


@dataclass(frozen=True, slots=True)
class LbAnswer:
    """What a load balancer is told: up or down, and why (sanitised, may be "")."""

    up: bool
    reason: str = ""

    @property
    def word(self) -> str:
        return "up" if self.up else "down"

    def agent_line(self) -> bytes:
        """The agent-check reply: ``up`` or ``down``, then ``#<reason>`` (HAProxy's
        description, logged with the state change), then a newline."""
        if self.reason:
            return f"{self.word} #{self.reason}\n".encode("ascii")
        return f"{self.word}\n".encode("ascii")

    def http_text(self) -> str:
        """The ready endpoint's body: ``up`` or ``down: <reason>``."""
        return f"{self.word}: {self.reason}" if self.reason else self.word


def sanitise(text: str) -> str:
    """A reason fit for one line of HAProxy's protocol and logs: runs of white space
    (line breaks too) as one space, then printable ASCII only (anything else becomes
    "?"), at most MAX_REASON bytes."""
    out = " ".join(text[: MAX_REASON * 2].split())  # line breaks, tabs: one space
    out = "".join(c if " " <= c <= "~" else "?" for c in out)
    if len(out) > MAX_REASON:
        out = out[: MAX_REASON - 3] + "..."
    return out


def lb_answer_for(status: LbStatus | None) -> LbAnswer:
    """The policy (module docstring) for one origin; None: the fleet has no such origin."""
    if status is None:
        return LbAnswer(True, "no such origin in the fleet (fail open)")
    if status.verdict == "up":
        return LbAnswer(True)
    if status.verdict == "down":
        return LbAnswer(False, sanitise(status.reason or "down"))
    policy = "fail open" if status.fail_open else "fail_open = false"
    why = f"verdict {status.verdict} ({policy})"
    if status.reason:
        why += f": {status.reason}"
    return LbAnswer(status.fail_open, sanitise(why))


@dataclass(frozen=True, slots=True)
class AgentReply:
    """One agent-check exchange: the line to send, and what to count."""

    line: bytes
    answer: str  # "up" | "down"
    bad: str | None = None  # the bad-input kind to count, None for a good request


def agent_reply(
    request: bytes, eof: bool, lookup: Callable[[str], LbStatus | None]
) -> AgentReply | None:
    """The reply to an agent-check client that sent ``request`` so far (``eof``: and then
    closed its side); None while the request is incomplete, and for a client that closed
    without sending anything (nothing to answer: the caller closes).

    A request is complete at its first newline, at end of stream, or at MAX_REQUEST bytes
    (a longer line is garbage: answered, not read further). Anything that is not an origin
    id is answered up (fail open), with a description that says what was wrong, so a
    misconfigured ``agent-send`` shows in HAProxy's logs instead of taking servers out."""
    end = request.find(b"\n")
    if end >= 0:
        line = request[:end]
    elif len(request) >= MAX_REQUEST:
        return _fail_open("request line too long (no newline in 256 bytes)", "too-long")
    elif eof:
        if not request.strip():
            return None
        line = request
    else:
        return None
    try:
        origin_id = line.decode("ascii").strip()
    except UnicodeDecodeError:
        return _fail_open("request is not an origin id", "not-an-id")
    if not ORIGIN_ID_RE.fullmatch(origin_id):
        if not origin_id:
            return _fail_open('empty request (agent-send is "<origin id>\\n")', "empty")
        return _fail_open("request is not an origin id", "not-an-id")
    status = lookup(origin_id)
    answer = lb_answer_for(status)
    return AgentReply(answer.agent_line(), answer.word, None if status else "unknown-origin")


def _fail_open(reason: str, kind: str) -> AgentReply:
    return AgentReply(LbAnswer(True, reason).agent_line(), "up", kind)
