"""Real HAProxy accepts what `edge-agent haproxy-config` writes (`haproxy -c`), IPv6
addresses included, and what docs/load-balancers.md tells an operator to write."""

from __future__ import annotations

import re
from pathlib import Path

from agent.domain import HostPort
from agent.shell.haproxy_config import backend_text
from edge_harness import haproxy
from tests.lb.conftest import require_haproxy

ROOT = Path(__file__).resolve().parents[2]

VIEWS = [
    {"id": "web-1", "spec": {"id": "web-1", "url": "http://127.0.0.1:8081/healthz"}},
    {"id": "v6.a_b", "spec": {"id": "v6.a_b", "url": "http://[::1]:8082/"}},
    {
        "id": "v6-addr",
        "spec": {"id": "v6-addr", "url": "https://127.0.0.1:8443/", "address": "[fd00::b]:80"},
    },
    {"id": "db", "spec": {"id": "db", "url": "tcp://[fd00::5]:5432"}},
]


def accepted(sections: str, tmp: Path) -> str:
    ok, said = haproxy.check_config(sections, tmp)
    assert ok, f"haproxy -c refused:\n{sections}\n{said}"
    return said


def test_haproxy_accepts_the_generated_backend_with_ipv6(tmp_path: Path) -> None:
    require_haproxy()
    for agent in (HostPort("127.0.0.1", 7950), HostPort("::1", 7950)):
        text, skipped = backend_text(
            VIEWS, backend="shop", agent=agent, inter="2s", source="a test"
        )
        assert not skipped
        assert "[fd00::5]:5432" in text and "[::1]:8082" in text
        said = accepted(
            f"frontend www\n    bind 127.0.0.1:1\n    default_backend shop\n\n{text}", tmp_path
        )
        assert "ALERT" not in said, said


def test_haproxy_accepts_the_docs_example(tmp_path: Path) -> None:
    """The complete configuration in docs/load-balancers.md, with the paths and
    addresses of this machine (no /run/haproxy, no port 80)."""
    require_haproxy()
    doc = (ROOT / "docs" / "load-balancers.md").read_text()
    blocks = re.findall(r"```haproxy\n(.*?)```", doc, re.S)
    full = next(b for b in blocks if b.startswith("global"))
    body = full.split("defaults", 1)[1]  # ours has a global with the stats socket
    body = body.replace("bind :80", "bind 127.0.0.1:1")
    said = accepted("defaults" + body, tmp_path)
    assert "ALERT" not in said, said
