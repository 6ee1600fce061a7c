"""A routed fleet of several sites (failure domains), for faults a flat LAN cannot show.

A site is a store or a branch: a few Pis on one LAN behind one router and one uplink. A
broken uplink makes every origin look down from that site while the rest of the fleet
sees them up; a dead router cuts the site off entirely. `SiteFleet` builds that shape
from network namespaces (all named with the fleet's run prefix, like `Fleet`'s):

    <prefix>core          the core router: one uplink per site (u-<site>), the origins
                          network (bridge br0, .200) and the sink network (br-sink, .201)
    <prefix>r-<site>      a site router: its LAN (bridge br0, <base>.<n>.0/24, itself .254)
                          and its uplink (up0) to the core
    <prefix><node>        a host on its site's LAN (eth0), default route via its router
    <prefix>farm          the origin farm, on the origins network (.200.250)
    <prefix>sink          a second farm used only as a webhook sink, on its own network
                          behind the core (.201.250): cutting a site's route to the
                          origins leaves its webhooks flowing

Faults are nftables rules in the site router's forward hook (`table inet easite`):
`cut_origins(site)` drops what the site and the origins network send each other (gossip
with other sites and webhooks still flow), `isolate(site)` drops everything routed in or
out of the site (its hosts still reach each other on their LAN), `restore(site)` removes
the table. Dropped, not rejected: a broken uplink answers nothing, so checks time out.

Nodes find each other by `[cluster] join` seeds (mDNS does not cross routers); `start()`
gives every host without its own `extra_cluster` the first host of each site as seeds
and `discover = false`. Docs: docs/fleet-harness.md ("Sites").
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_harness.fleet import (
    FARM_OCTET,
    GATEWAY,
    GOSSIP_PORT,
    Fleet,
    FleetError,
    Host,
    missing_prerequisites,
    ns_http,
    run,
    wait,
)

FARM_PORT = 8000
SINK_PORT = 8000
ORIGINS_NET = 200  # <base>.200.0/24: the origins network, behind the core
SINK_NET = 201  # <base>.201.0/24: the webhook sink's network, behind the core
TRANSIT_NET = 0  # <base>.0.0/24, cut into /30s: one per site uplink
MAX_SITES = 60  # site n's LAN is <base>.<n>.0/24 and its /30 uplink fits in <base>.0
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,9}\Z")  # short: "u-<site>", "p-<node>" <= 15 chars


@dataclass
class Site:
    name: str
    number: int  # 1-based: its LAN is <base>.<number>.0/24
    router: str  # the router's namespace
    subnet: str  # "10.232.1"
    core_addr: str  # the core's end of the uplink
    router_addr: str  # the router's end of the uplink
    hosts: list[Host] = field(default_factory=list)
    next_octet: int = 1  # the next host address on its LAN

    @property
    def lan(self) -> str:
        return f"{self.subnet}.0/24"


def origin_tables(
    base_url: str,
    ids: Iterable[int],
    *,
    interval: float = 2.0,
    timeout: float = 1.0,
    fall: int = 2,
    rise: int = 2,
) -> str:
    """`[[origin]]` tables o<i> -> <base_url>/o/<i>, for `Fleet.origins_toml`."""
    return "".join(
        f'[[origin]]\nid = "o{i}"\nurl = "{base_url}/o/{i}"\ninterval = "{interval:g}s"\n'
        f'timeout = "{timeout:g}s"\nfall = {fall}\nrise = {rise}\n'
        for i in ids
    )


def webhook_table(url: str) -> str:
    return f'[[webhook]]\nurl = "{url}"\n'


class SiteFleet(Fleet):
    """`SiteFleet(workdir, sites=("a", "b", "c"), prefix=family)`, `add_sites(2)` (nodes
    a1, a2, b1, ...), `start_farm()`, `start_sink()`, `start()`; a context manager whose
    exit tears every namespace down, as `Fleet`'s does."""

    def __init__(
        self,
        workdir: Path,
        sites: Sequence[str] = ("a", "b", "c"),
        *,
        base: str = "10.232",
        prefix: str = "eatest-",
        **kwargs: Any,
    ) -> None:
        missing = missing_prerequisites(need_nft=True)
        if missing:
            raise FleetError("the site fleet needs " + ", ".join(missing))
        if not 0 < len(sites) <= MAX_SITES or len(set(sites)) != len(sites):
            raise ValueError(f"1..{MAX_SITES} distinct sites, got {list(sites)}")
        for s in sites:
            if not _NAME.match(s) or s in ("core", "farm", "sink"):
                raise ValueError(f"site name {s!r}: 1-10 of a-z, 0-9, '-', not core/farm/sink")
        self.base = base
        self.site_names = list(sites)
        self.sites: dict[str, Site] = {}
        self.origins_subnet = f"{base}.{ORIGINS_NET}"
        self.sink_subnet = f"{base}.{SINK_NET}"
        # the fleet's own switch is the core; its br0 is the origins network, so
        # Fleet.start_farm / add_plain put the farm there unchanged
        super().__init__(workdir, prefix=prefix, subnet=self.origins_subnet, **kwargs)

    # --- topology ---
    def _make_switch(self) -> None:
        self.switch = core = f"{self.prefix}core"
        _router(core)
        _bridge(core, "br0", f"{self.origins_subnet}.{GATEWAY}/24")
        _bridge(core, "br-sink", f"{self.sink_subnet}.{GATEWAY}/24")
        for number, name in enumerate(self.site_names, start=1):
            self._make_site(number, name)

    def _make_site(self, number: int, name: str) -> None:
        core = self.switch
        router = f"{self.prefix}r-{name}"
        t = 4 * (number - 1)  # this site's /30 in the transit net
        core_addr = f"{self.base}.{TRANSIT_NET}.{t + 1}"
        router_addr = f"{self.base}.{TRANSIT_NET}.{t + 2}"
        subnet = f"{self.base}.{number}"
        site = Site(name, number, router, subnet, core_addr, router_addr)
        self.sites[name] = site  # before it exists: a failure below still tears it down
        _router(router)
        _bridge(router, "br0", f"{subnet}.{GATEWAY}/24")
        uplink = f"u-{name}"
        run("ip", "-n", core, "link", "add", uplink, "type", "veth", "peer", "name", "up0",
            "netns", router)  # fmt: skip
        run("ip", "-n", core, "addr", "add", f"{core_addr}/30", "dev", uplink)
        run("ip", "-n", core, "link", "set", uplink, "up")
        run("ip", "-n", router, "addr", "add", f"{router_addr}/30", "dev", "up0")
        run("ip", "-n", router, "link", "set", "up0", "up")
        run("ip", "-n", router, "route", "replace", "default", "via", core_addr)
        run("ip", "-n", core, "route", "replace", site.lan, "via", router_addr)

    def add(
        self,
        name: str,
        extra_cluster: str = "",
        label: str | None = None,
        *,
        site: str | None = None,
    ) -> Host:
        """A new host for node `name` on `site`'s LAN (its router is its gateway)."""
        if site not in self.sites:
            raise FleetError(f"{name}: a SiteFleet host needs a site (one of {self.site_names})")
        label = label or name
        if not _NAME.match(label) or label.startswith("r-") or label in ("core", "sink"):
            raise ValueError(f"host label {label!r}: 1-10 of a-z, 0-9, '-', not r-*/core/sink")
        s = self.sites[site]
        octet = s.next_octet
        s.next_octet += 1
        ns, port, ip = self._plug(label, octet, switch=s.router, subnet=s.subnet)
        h = Host(
            self,
            name,
            octet,
            ip,
            ns,
            port,
            self.workdir / label,
            extra_cluster=extra_cluster,
            site=site,
            switch_ns=s.router,
            gateway=f"{s.subnet}.{GATEWAY}",
        )
        h.dir.mkdir(parents=True, exist_ok=True)
        self.hosts.append(h)
        s.hosts.append(h)
        return h

    def add_sites(self, per_site: int) -> list[Host]:
        """`per_site` hosts on every site, named <site><n>: a1, a2, b1, b2, ..."""
        return [
            self.add(f"{name}{i + 1}", site=name)
            for name in self.site_names
            for i in range(per_site)
        ]

    def new_ip(self, site: str | None = None) -> str:
        """A fresh address on `site`'s LAN (for `Host.move`: a new DHCP lease)."""
        if site not in self.sites:
            raise FleetError(f"SiteFleet.new_ip needs a site (one of {self.site_names})")
        s = self.sites[site]
        s.next_octet += 1
        return f"{s.subnet}.{s.next_octet - 1}"

    def seeds(self) -> list[Host]:
        """The first host of every site: what `start()` gives as `join`."""
        return [s.hosts[0] for s in self.sites.values() if s.hosts]

    def start(self, hosts: Iterable[Host] | None = None) -> None:
        for h in self.hosts if hosts is None else hosts:
            if not h.extra_cluster:
                join = ", ".join(f'"{s.ip}:{GOSSIP_PORT}"' for s in self.seeds() if s is not h)
                h.extra_cluster = f"join = [{join}]\ndiscover = false\n"
            h.start()

    def start_sink(self) -> str:
        """A farm process used only as a webhook sink, on its own network behind the
        core (not the origins network); returns the URL to give `[[webhook]] url`."""
        label = "sink"
        ns, port, ip = self._plug(
            label, FARM_OCTET, switch=self.switch, bridge="br-sink", subnet=self.sink_subnet
        )
        sink = Host(self, label, FARM_OCTET, ip, ns, port, self.workdir / label)
        sink.dir.mkdir(parents=True, exist_ok=True)
        self.extra[label] = sink
        log = (sink.dir / "sink.log").open("ab")
        argv = [sys.executable, "-m", "edge_harness.farm", "--host", ip, "--port", str(SINK_PORT)]
        sink.proc = self.spawn(sink, [*argv, "--count", "0"], log)
        wait(lambda: "farm ready" in (sink.dir / "sink.log").read_text(), 15, "the sink")
        return f"http://{ip}:{SINK_PORT}/hook"

    # --- faults ---
    def cut_origins(self, site: str) -> None:
        """The site's uplink breaks for the origins only: the site router drops what
        the site and the origins network send each other. Gossip with other sites and
        webhooks to the sink still flow."""
        s = self.sites[site]
        org = f"{self.origins_subnet}.0/24"
        self._forward_rules(
            s, f"ip saddr {s.lan} ip daddr {org} drop\n  ip saddr {org} ip daddr {s.lan} drop"
        )

    def isolate(self, site: str) -> None:
        """The site router forwards nothing: the site reaches neither other sites, the
        origins nor the sink (its hosts still reach each other on their LAN)."""
        s = self.sites[site]
        self._forward_rules(
            s,
            f"ip saddr {s.lan} ip daddr != {s.lan} drop\n"
            f"  ip daddr {s.lan} ip saddr != {s.lan} drop",
        )

    def restore(self, site: str) -> None:
        run("ip", "netns", "exec", self.sites[site].router, "nft", "delete", "table", "inet",
            "easite", check=False)  # fmt: skip

    def _forward_rules(self, s: Site, rules: str) -> None:
        self.restore(s.name)
        script = (
            "table inet easite {\n"
            " chain forward { type filter hook forward priority 0; policy accept;\n"
            f"  {rules}\n }}\n"
            "}\n"
        )
        run("ip", "netns", "exec", s.router, "nft", "-f", "-", input=script)

    # --- views ---
    def site_of(self, h: Host) -> Site:
        return self.sites[h.site]

    def inside(self, site: str) -> list[Host]:
        return list(self.sites[site].hosts)

    def outside(self, site: str) -> list[Host]:
        return [h for h in self.hosts if h.site != site]

    def farm_set(self, oid: int | str, mode: str) -> None:
        """Set origin `oid`'s behaviour in the farm (`up`, `down`, `reset`, ...)."""
        farm = self.extra["farm"]
        status, body = ns_http(
            farm.ns, "POST", f"/control/{oid}?mode={mode}", port=FARM_PORT, host=farm.ip
        )
        if status != 200:
            raise FleetError(f"farm: /control/{oid}?mode={mode} answered {status}: {body}")

    def hooks(self) -> list[dict[str, Any]]:
        """What the sink received: [{"body": <the JSON posted>, "event": <header>}]."""
        sink = self.extra["sink"]
        status, body = ns_http(sink.ns, "GET", "/hooks", port=SINK_PORT, host=sink.ip)
        if status != 200:
            raise FleetError(f"sink: /hooks answered {status}")
        return list(body)


def _router(ns: str) -> None:
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")
    run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")


def _bridge(ns: str, name: str, addr: str) -> None:
    run("ip", "-n", ns, "link", "add", name, "type", "bridge")
    run("ip", "-n", ns, "link", "set", name, "type", "bridge", "mcast_snooping", "0")
    run("ip", "-n", ns, "addr", "add", addr, "dev", name)
    run("ip", "-n", ns, "link", "set", name, "up")
