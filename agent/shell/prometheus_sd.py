"""Prometheus HTTP service discovery: the fleet's metrics addresses, from any node.

``GET /v1/sd/prometheus`` answers Prometheus' HTTP SD format: a list of target groups,
one per live edge-agent member, each with that member's API address (which serves
``/metrics``) and ``__meta_edge_agent_*`` labels for relabelling. Every node knows every
member from gossip, so ``http_sd_configs`` pointed at one Pi finds the whole fleet.

Where a member's API is comes from its ``api`` tag (agent/shell/cluster.py), made here by
:func:`api_tag`: the bare port when the API listens on every address (``0.0.0.0``,
``::``), since the member's gossip address is then the one to dial; ``host:port`` when
it listens on one address. A member whose API listens on loopback only cannot be
scraped from another host and is left out (older members advertise the bare port
whatever they listen on, and are listed at their gossip address). Pure functions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from agent.domain import ROLE, HostPort, parse_hostport

__all__ = ["META_PREFIX", "api_tag", "sd_groups", "target_of"]

META_PREFIX = "__meta_edge_agent_"
WILDCARDS = ("0.0.0.0", "::", "")
LIVE = ("alive", "suspect")  # a suspect is likely up: Prometheus' own `up` will tell


def api_tag(listen: HostPort, port: int) -> str:
    """The ``api`` tag for an API listening on ``listen`` (bound to ``port``)."""
    if listen.host in WILDCARDS:
        return str(port)
    return str(HostPort(listen.host, port))


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def target_of(gossip_host: str, tag: str | None) -> str | None:
    """``host:port`` to scrape for a member at ``gossip_host`` with ``api`` tag ``tag``;
    None when it has no usable API address (no tag, a bad one, or loopback only)."""
    if not tag:
        return None
    try:
        hp = HostPort(gossip_host, int(tag)) if tag.isdigit() else parse_hostport(tag)
    except ValueError:
        return None
    if not 0 < hp.port < 65536 or (_loopback(hp.host) and not _loopback(gossip_host)):
        return None
    return str(hp)


def sd_groups(members: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Target groups for the live edge-agent members of a members view
    (``[{name, addr, state, tags}]``, agent/shell/cluster.py ``members_view``), by name."""
    groups = []
    # the role claim as placement reads it (agent/node/placement.py claims_role): a stock
    # Serf agent in the cluster serves no /metrics
    for m in sorted(members, key=lambda m: str(m["name"])):
        tags = m.get("tags") or {}
        if m.get("state") not in LIVE or tags.get("role") != ROLE or not tags.get("version"):
            continue
        target = target_of(str(m["addr"]), tags.get("api"))
        if target is None:
            continue
        labels = {
            f"{META_PREFIX}node": str(m["name"]),
            f"{META_PREFIX}site": tags.get("site", ""),
            f"{META_PREFIX}version": tags.get("version", ""),
        }
        groups.append({"targets": [target], "labels": labels})
    return groups
