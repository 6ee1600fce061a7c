"""A small server-rendered status page at GET /.

It refreshes itself every few seconds and needs no assets, so it works from a
phone on the same network. (The live dashboard of issue 8 replaces it.)
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;background:#111;color:#eee}
table{border-collapse:collapse;width:100%}td,th{padding:.3rem .5rem;text-align:left;
border-bottom:1px solid #333}.up{color:#3c3}.down{color:#f55}.unknown{color:#aaa}
.ok{color:#3c3}.degraded{color:#fa3}.failing{color:#f55}.starting{color:#fa3}
"""


def render_status_page(health: dict[str, Any], origins: list[dict[str, Any]]) -> str:
    rows = []
    for o in origins:
        obs = o["observations"][0] if o["observations"] else {}
        lat = obs.get("latency_ms")
        rows.append(
            "<tr><td>{id}</td><td class='{v}'>{v}</td><td>{url}</td><td>{lat}</td>"
            "<td>{reason}</td></tr>".format(
                id=escape(o["id"]),
                v=escape(o["verdict"]),
                url=escape(o["spec"]["url"]),
                lat="" if lat is None else f"{lat:.0f} ms",
                reason=escape(obs.get("reason", "")),
            )
        )
    status = escape(health["status"])
    reasons = "".join(f"<li>{escape(r)}</li>" for r in health.get("reasons", []))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        "<meta http-equiv='refresh' content='2'>"
        f"<title>edge-agent {escape(health['node'])}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(health['node'])} <span class='{status}'>{status}</span></h1>"
        f"<p>{escape(health.get('summary', ''))}</p><ul>{reasons}</ul>"
        "<table><tr><th>origin</th><th>verdict</th><th>target</th><th>latency</th>"
        f"<th>last check</th></tr>{''.join(rows)}</table></body></html>"
    )
