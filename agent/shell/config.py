"""The agent's TOML configuration: parsed once into typed, immutable objects.

Every problem is reported with the file and the key path that holds it
(``agent.toml: origin[2].interval: "10x" is not a duration``), and all problems
are reported together, so an operator fixes a file in one pass rather than one
error per restart. The schema is documented for operators in docs/config.md;
examples/agent.toml is an annotated example.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from agent.domain import (
    ConfigError,
    HostPort,
    OriginSpec,
    Problem,
    TableReader,
    duration,
    field_default,
    header_pairs,
    parse_hostport,
    positive_duration,
    read_origin,
    show,
    str_table,
)
from agent.membership import Settings as GossipSettings

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/agent.toml")
CONFIG_ENV = "EDGE_AGENT_CONFIG"

T = TypeVar("T")


# --- the schema ----------------------------------------------------------------------------

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str = ""  # "" = derive from the hostname at start
    data_dir: Path = Path("/var/lib/edge-agent")
    weight: float = 1.0
    site: str | None = None  # failure domain (docs/placement.md); None: a domain of its own
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str = "edge"
    bind: HostPort = HostPort("0.0.0.0", 7946)
    advertise: HostPort | None = None
    join: tuple[str, ...] = ()
    discover: bool = True
    interface: str | None = None  # mDNS interface; None = the one carrying the advertise address
    keyring_file: Path | None = None
    replicas: int = 2
    reap_after: float = 3600.0  # observations of a node gone this long are deleted
    confirm_sites: int = 0  # sites that must agree on "down"; 0: automatic (placement.md)
    site_grace: float = 300.0  # a failed member's site still counts this long


@dataclass(frozen=True, slots=True)
class StoreConfig:
    commit_interval: float = 1.0  # fsync at most this often (and at clean shutdown)
    max_bytes: int = 64 << 20  # log + snapshots budget: a snapshot is taken before this


@dataclass(frozen=True, slots=True)
class AlertmanagerConfig:
    """An Alertmanager that alerts are POSTed to (``<url>/api/v2/alerts``) by every owner."""

    url: str
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Where verdict transitions are POSTed (by the origin's rank-1 owner only)."""

    url: str
    timeout: float = 5.0
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ApiConfig:
    listen: HostPort = HostPort("127.0.0.1", 8080)
    token_file: Path | None = None
    socket: Path | None = None  # None: see api_socket_path


@dataclass(frozen=True, slots=True)
class LbConfig:
    """HAProxy's agent-check port (docs/load-balancers.md): read-only, off by default."""

    agent_listen: HostPort | None = None  # None: no agent-check listener
    max_connections: int = 1000  # open at once; more are closed at once, unread
    read_timeout: float = 2.0  # for the request line; then the connection is closed


@dataclass(frozen=True, slots=True)
class LedsConfig:
    """BCM pin numbers; None disables that colour. ``layout = "rgb"`` drives one RGB LED
    on the ``rgb`` pins (red, green, blue) instead; ``act`` mirrors to the board's ACT LED."""

    green: int | None = 17
    amber: int | None = 27
    red: int | None = 22
    enabled: bool = True
    layout: str = "three"  # "three" single-colour LEDs, or "rgb": one RGB LED
    rgb: tuple[int, int, int] | None = None
    common_anode: bool = False  # the RGB LED's common leg goes to 3.3 V: pins drive low to light
    act: bool = False
    # which /dev/gpiochipN is the header: "auto" (by label), a number, or a label
    gpiochip: int | str = "auto"


@dataclass(frozen=True, slots=True)
class ChecksConfig:
    concurrency: int = 256  # most probes in flight at once, fleet of origins or not
    user_agent: str = "edge-agent"


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"


# [gossip] keys: memberlist's LAN defaults; durations for times, integers for the rest
GOSSIP_DURATIONS = (
    "probe_interval",
    "probe_timeout",
    "gossip_interval",
    "gossip_to_the_dead_time",
    "push_pull_interval",
    "tcp_timeout",
    "dead_node_reclaim_time",
)
GOSSIP_POSITIVE = ("probe_interval", "probe_timeout", "gossip_interval", "tcp_timeout")
GOSSIP_INTS = (
    "indirect_checks",
    "awareness_max_multiplier",
    "suspicion_mult",
    "suspicion_max_timeout_mult",
    "retransmit_mult",
    "gossip_nodes",
    "udp_buffer_size",
)
GOSSIP_BOOLS = ("disable_tcp_pings", "enable_compression")


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeConfig = NodeConfig()
    cluster: ClusterConfig = ClusterConfig()
    gossip: GossipSettings = field(default_factory=GossipSettings)
    api: ApiConfig = ApiConfig()
    leds: LedsConfig = LedsConfig()
    checks: ChecksConfig = ChecksConfig()
    log: LogConfig = LogConfig()
    origins: tuple[OriginSpec, ...] = ()
    source: str = "<defaults>"
    store: StoreConfig = StoreConfig()
    webhooks: tuple[WebhookConfig, ...] = ()
    lb: LbConfig = LbConfig()
    alertmanagers: tuple[AlertmanagerConfig, ...] = ()


# --- the parser ----------------------------------------------------------------------------


def _hostport(v: Any) -> HostPort:
    if not isinstance(v, str):
        raise TypeError
    try:
        return parse_hostport(v)
    except ValueError as e:
        raise Problem(f"is not host:port ({e})") from None


def _optional_hostport(v: Any) -> HostPort | None:
    """An address; "" (how TOML spells "not set") is None."""
    return _hostport(v) if v != "" else None


def _path(v: Any) -> Path:
    if not isinstance(v, str):
        raise TypeError
    if "\0" in v:  # no file has such a name; the OS would refuse it later, as a crash
        raise Problem("contains a NUL byte, which no file name can")
    return Path(v)


def _optional_path(v: Any) -> Path | None:
    """A path; "" (how TOML spells "not set") is None."""
    return _path(v) if v != "" else None


def _optional_str(v: Any) -> str | None:
    if not isinstance(v, str):
        raise TypeError
    return v or None


def _pin(v: Any) -> int | None:
    if v is False:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 27:
        raise ValueError
    return v


def _gpiochip(v: Any) -> int | str:
    from agent.shell.gpiochip import parse_setting

    try:
        return parse_setting(v)
    except ValueError as e:
        raise Problem(f"is not usable: {e}") from None


def _rgb_pins(v: Any) -> tuple[int, int, int]:
    if not isinstance(v, list) or len(v) != 3:
        raise ValueError
    r, g, b = (_pin(p) for p in v)
    if r is None or g is None or b is None:
        raise ValueError
    return (r, g, b)


SITE_MAX_BYTES = 64
"""A site is gossiped in every membership message (memberlist allows 512 bytes of tags)."""


def site_problem(site: str) -> str | None:
    """Why ``site`` cannot be a node's site, or None. Printable text (spaces inside are
    fine), no leading or trailing space, at most 64 bytes in UTF-8."""
    if not site.isprintable():
        return "contains a control or non-printable character"
    if site != site.strip():
        return "starts or ends with a space"
    if len(site.encode("utf-8", "surrogatepass")) > SITE_MAX_BYTES:
        return f"is longer than {SITE_MAX_BYTES} bytes in UTF-8"
    return None


def _table(problems: list[str], root: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    v = root.get(name, {})
    if not isinstance(v, dict):
        problems.append(f"{name}: {show(v)} is not a table")
        return {}
    return v


def parse_config(root: Mapping[str, Any], source: str = "<string>") -> Config:
    """Turn a parsed TOML document into a Config, or raise ConfigError listing every problem."""
    problems: list[str] = []
    known = {
        "node",
        "cluster",
        "gossip",
        "api",
        "leds",
        "checks",
        "log",
        "origin",
        "store",
        "webhook",
        "lb",
        "alertmanager",
    }
    for k in root:
        if k not in known:
            problems.append(f"{k}: unknown key")

    r = TableReader(problems, "node", _table(problems, root, "node"))
    nd = NodeConfig()
    name = r.get("name", str, nd.name, "a string")
    if name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
        r.bad("name", f"{show(name)} is not a valid node name")
    tags = r.conv("tags", nd.tags, str_table, "a table of strings")
    site = r.get("site", str, "", "a string")
    tag_site = tags.get("site", "")
    if site and tag_site and tag_site != site:
        r.bad("site", f"{show(site)} differs from tags.site {show(tag_site)}: set site only")
    elif not site and tag_site:  # written as a free-form tag before site existed
        site = tag_site
        if (why := site_problem(site)) is not None:
            r.bad("tags", f"site {show(site)} {why} (tags.site is the node's site)")
            site = ""
    elif site and (why := site_problem(site)) is not None:
        r.bad("site", f"{show(site)} {why}")
        site = ""
    node = NodeConfig(
        name=name,
        data_dir=r.conv("data_dir", nd.data_dir, _path, "a string"),
        weight=r.get("weight", float, nd.weight, "a number"),
        site=site or None,
        tags=tags,
    )
    if not (node.weight > 0 and math.isfinite(node.weight)):
        r.bad("weight", f"{node.weight} must be a positive number")
    r.finish()

    r = TableReader(problems, "cluster", _table(problems, root, "cluster"))
    cd = ClusterConfig()
    cname = r.get("name", str, cd.name, "a string")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,40}", cname):
        r.bad("name", f"{show(cname)} is not a valid cluster name (letters, digits, '-')")
    join = r.get("join", list, list(cd.join), "an array of strings")
    for i, j in enumerate(join):
        if not isinstance(j, str):
            r.bad(f"join[{i}]", f"{show(j)} is not a string")
            continue
        try:
            parse_hostport(j, default_port=7946)
        except ValueError as e:
            r.bad(f"join[{i}]", f"{show(j)} is not host:port ({e})")
    cluster = ClusterConfig(
        name=cname,
        bind=r.conv("bind", cd.bind, _hostport, "host:port"),
        advertise=r.conv("advertise", cd.advertise, _optional_hostport, "host:port"),
        join=tuple(j for j in join if isinstance(j, str)),
        discover=r.get("discover", bool, cd.discover, "true or false"),
        interface=r.conv("interface", cd.interface, _optional_str, "a string"),
        keyring_file=r.conv("keyring_file", cd.keyring_file, _optional_path, "a string"),
        replicas=r.get("replicas", int, cd.replicas, "an integer"),
        reap_after=r.conv("reap_after", cd.reap_after, duration, "a duration"),
        confirm_sites=r.get("confirm_sites", int, cd.confirm_sites, "an integer"),
        site_grace=r.conv("site_grace", cd.site_grace, duration, "a duration"),
    )
    iface = cluster.interface
    if iface is not None and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", iface):
        r.bad("interface", f"{show(iface)} is not a network interface name")
    if not 1 <= cluster.replicas <= 16:
        r.bad("replicas", f"{cluster.replicas} is out of range (1..16)")
    if cluster.reap_after < 60:
        r.bad("reap_after", f"{cluster.reap_after:g}s is shorter than 60s")
    if not 0 <= cluster.confirm_sites <= 16:
        r.bad("confirm_sites", f"{cluster.confirm_sites} is out of range (0..16, 0 = automatic)")
    if not 0 <= cluster.site_grace <= 86400:
        r.bad("site_grace", f"{cluster.site_grace:g}s is out of range (0 to 1 day)")
    r.finish()

    r = TableReader(problems, "store", _table(problems, root, "store"))
    sd = StoreConfig()
    store = StoreConfig(
        commit_interval=r.conv("commit_interval", sd.commit_interval, duration, "a duration"),
        max_bytes=r.get("max_bytes", int, sd.max_bytes, "an integer (bytes)"),
    )
    if not 0.01 <= store.commit_interval <= 60:
        r.bad("commit_interval", f"{store.commit_interval:g}s is out of range (10ms..60s)")
    if store.max_bytes < 1 << 20:
        r.bad("max_bytes", f"{store.max_bytes} is below 1 MiB")
    r.finish()

    r = TableReader(problems, "gossip", _table(problems, root, "gossip"))
    defaults = GossipSettings()
    gossip_values: dict[str, Any] = {}
    for key in GOSSIP_DURATIONS:  # a timer of 0 would spin (probe, gossip) or never wait
        conv = positive_duration if key in GOSSIP_POSITIVE else duration
        gossip_values[key] = r.conv(key, getattr(defaults, key), conv, "a duration")
    for key in GOSSIP_INTS:
        gossip_values[key] = r.get(key, int, getattr(defaults, key), "an integer")
        if gossip_values[key] < (0 if key == "indirect_checks" else 1):
            r.bad(key, f"{gossip_values[key]} is out of range")
    for key in GOSSIP_BOOLS:
        gossip_values[key] = r.get(key, bool, getattr(defaults, key), "true or false")
    if gossip_values["probe_timeout"] > gossip_values["probe_interval"]:
        r.bad("probe_timeout", "is longer than probe_interval")
    if not 512 <= gossip_values["udp_buffer_size"] <= 65000:
        r.bad("udp_buffer_size", f"{gossip_values['udp_buffer_size']} is out of range (512..65000)")
    gossip = GossipSettings(**gossip_values)
    r.finish()

    r = TableReader(problems, "api", _table(problems, root, "api"))
    ad = ApiConfig()
    api = ApiConfig(
        listen=r.conv("listen", ad.listen, _hostport, "host:port"),
        token_file=r.conv("token_file", ad.token_file, _optional_path, "a string"),
        socket=r.conv("socket", ad.socket, _optional_path, "a string"),
    )
    if api.socket is not None:
        problem = socket_path_problem(api.socket)
        if problem is None and not api.socket.is_absolute():
            problem = f"{show(str(api.socket))} is not an absolute path"
        if problem is not None:
            r.bad("socket", problem)
    r.finish()

    leds_t = _table(problems, root, "leds")
    lb = _parse_lb(problems, _table(problems, root, "lb"))

    r = TableReader(problems, "leds", leds_t)
    ld = LedsConfig()
    layout = r.get("layout", str, ld.layout, '"three" or "rgb"')
    if layout not in ("three", "rgb"):
        r.bad("layout", f'must be "three" or "rgb", not {layout!r}')
        layout = ld.layout
    rgb = r.conv("rgb", ld.rgb, _rgb_pins, "three BCM pins [red, green, blue]")
    if layout == "rgb":  # one RGB LED; single-colour keys would be a second, unused layout
        for c in LEDS_COLOURS:
            if c in leds_t:
                r.used.add(c)
                r.bad(c, 'not used with layout = "rgb" (remove it, or use layout = "three")')
        pins: dict[str, int | None] = dict.fromkeys(LEDS_COLOURS)
        if rgb is None:
            r.bad("rgb", 'needed with layout = "rgb": three BCM pins [red, green, blue]')
    elif "leds" in root:  # a present [leds] table lists the colours in use; omitted = off
        pins = {c: r.conv(c, None, _pin, "a BCM pin (0..27) or false") for c in LEDS_COLOURS}
    else:
        pins = {c: getattr(ld, c) for c in LEDS_COLOURS}
    leds = LedsConfig(
        **pins,
        enabled=r.get("enabled", bool, ld.enabled, "true or false"),
        layout=layout,
        rgb=rgb if layout == "rgb" else None,
        common_anode=r.get("common_anode", bool, ld.common_anode, "true or false"),
        act=r.get("act", bool, ld.act, "true or false"),
        gpiochip=r.conv("gpiochip", ld.gpiochip, _gpiochip, '"auto", a chip number or a label'),
    )
    used = [p for p in pins.values() if p is not None] + list(leds.rgb or ())
    if len(used) != len(set(used)):
        problems.append("leds: two colours share one pin")
    r.finish()

    r = TableReader(problems, "checks", _table(problems, root, "checks"))
    chd = ChecksConfig()
    checks = ChecksConfig(
        concurrency=r.get("concurrency", int, chd.concurrency, "an integer"),
        user_agent=r.get("user_agent", str, chd.user_agent, "a string"),
    )
    if not 1 <= checks.concurrency <= 10000:
        r.bad("concurrency", f"{checks.concurrency} is out of range (1..10000)")
    r.finish()

    r = TableReader(problems, "log", _table(problems, root, "log"))
    level = r.get("level", str, LogConfig().level, "a string").lower()
    if level not in LOG_LEVELS:
        r.bad("level", f"{show(level)} is not one of {', '.join(LOG_LEVELS)}")
    r.finish()

    raw_origins = root.get("origin", [])
    origins: list[OriginSpec] = []
    if not isinstance(raw_origins, list):
        problems.append("origin: must be an array of tables ([[origin]])")
        raw_origins = []
    seen: dict[str, int] = {}
    for i, t in enumerate(raw_origins):
        spec = read_origin(problems, i, t)
        if spec is None:
            continue
        if spec.id in seen:
            problems.append(
                f"origin[{i}].id: duplicate id {show(spec.id)} (also origin[{seen[spec.id]}])"
            )
            continue
        seen[spec.id] = i
        origins.append(spec)

    webhooks = _parse_webhooks(problems, root.get("webhook", []))
    alertmanagers = _parse_alertmanagers(problems, root.get("alertmanager", []))

    if problems:
        raise ConfigError(source, problems)
    return Config(
        node=node,
        cluster=cluster,
        gossip=gossip,
        api=api,
        leds=leds,
        checks=checks,
        log=LogConfig(level=level),
        origins=tuple(origins),
        source=source,
        store=store,
        webhooks=webhooks,
        lb=lb,
        alertmanagers=alertmanagers,
    )


def _parse_lb(problems: list[str], t: Mapping[str, Any]) -> LbConfig:
    r = TableReader(problems, "lb", t)
    d = LbConfig()
    lb = LbConfig(
        agent_listen=r.conv("agent_listen", d.agent_listen, _optional_hostport, "host:port"),
        max_connections=r.get("max_connections", int, d.max_connections, "an integer"),
        read_timeout=r.conv("read_timeout", d.read_timeout, positive_duration, "a duration"),
    )
    if not 1 <= lb.max_connections <= 100000:
        r.bad("max_connections", f"{lb.max_connections} is out of range (1..100000)")
    if lb.read_timeout > 60:
        r.bad("read_timeout", f"{lb.read_timeout:g}s is out of range (up to 60s)")
    r.finish()
    return lb


def _each_table(
    problems: list[str], raw: Any, name: str
) -> Iterator[tuple[TableReader, dict[str, Any]]]:
    """A reader for each table of an array of tables (``[[name]]``); what is not one is a
    problem named by its index, and is skipped."""
    if not isinstance(raw, list):
        problems.append(f"{name}: must be an array of tables ([[{name}]])")
        return
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            problems.append(f"{name}[{i}]: {show(t)} is not a table")
            continue
        yield TableReader(problems, f"{name}[{i}]", t), t


def _parse_webhooks(problems: list[str], raw: Any) -> tuple[WebhookConfig, ...]:
    out = []
    for r, t in _each_table(problems, raw, "webhook"):
        url = r.get("url", str, "", "a string")
        if "url" not in t:
            r.bad("url", "missing (the http(s):// address to POST alerts to)")
        elif isinstance(t["url"], str) and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            r.bad("url", f"{show(url)} is not an http(s) URL")
        hook = WebhookConfig(
            url=url,
            timeout=r.conv(
                "timeout", field_default(WebhookConfig, "timeout"), duration, "a duration"
            ),
            headers=r.conv(
                "headers", field_default(WebhookConfig, "headers"), header_pairs, "a table"
            ),
        )
        if not 0 < hook.timeout <= 60:
            r.bad("timeout", f"{hook.timeout:g}s is out of range (0..60s)")
        r.finish()
        out.append(hook)
    return tuple(out)


def _parse_alertmanagers(problems: list[str], raw: Any) -> tuple[AlertmanagerConfig, ...]:
    out: list[AlertmanagerConfig] = []
    for r, t in _each_table(problems, raw, "alertmanager"):
        url = r.get("url", str, "", "a string")
        if "url" not in t:
            r.bad("url", 'missing (the Alertmanager\'s address, e.g. "http://host:9093")')
        elif isinstance(t["url"], str):
            if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
                r.bad("url", f'{show(url)} is not an http(s) URL (e.g. "http://host:9093")')
            elif url.rstrip("/").endswith("/api/v2/alerts") or url.rstrip("/").endswith("/api/v1"):
                r.bad(
                    "url",
                    f"{show(url)}: give the Alertmanager's base address; "
                    "/api/v2/alerts is added to it",
                )
            elif any(url.rstrip("/") == a.url.rstrip("/") for a in out):
                r.bad("url", f"{show(url)} is given twice (every alert would be sent twice)")
        am = AlertmanagerConfig(
            url=url.rstrip("/"),
            timeout=r.conv(
                "timeout", field_default(AlertmanagerConfig, "timeout"), duration, "a duration"
            ),
        )
        if not 0 < am.timeout <= 60:
            r.bad("timeout", f"{am.timeout:g}s is out of range (0..60s)")
        r.finish()
        out.append(am)
    return tuple(out)


LEDS_COLOURS = ("green", "amber", "red")


# The local API socket: the same API on a Unix socket, which answers (`edge-agent status`)
# even when the TCP port is taken. systemd's RuntimeDirectory=edge-agent makes /run's.
DEFAULT_DATA_DIR = NodeConfig().data_dir
DEFAULT_API_SOCKET = Path("/run/edge-agent/api.sock")
SOCKET_PATH_MAX = 107  # bytes: sockaddr_un's sun_path is 108, with the final NUL


def api_socket_path(cfg: Config) -> Path:
    """Where the API's Unix socket is: [api] socket, else /run/edge-agent/api.sock for the
    packaged data_dir (systemd makes /run/edge-agent), else ``<data_dir>/api.sock`` (a
    test's or a hand-run agent's own directory, which it can write)."""
    if cfg.api.socket is not None:
        return cfg.api.socket
    if cfg.node.data_dir == DEFAULT_DATA_DIR:
        return DEFAULT_API_SOCKET
    return cfg.node.data_dir / "api.sock"


def socket_path_problem(path: Path) -> str | None:
    """Why ``path`` cannot name a Unix socket (too long, a NUL), or None."""
    raw = os.fsencode(path)
    if b"\0" in raw:
        return "contains a NUL byte"
    if len(raw) > SOCKET_PATH_MAX:
        return (
            f"{show(str(path))} is {len(raw)} bytes: a Unix socket path may have at most "
            f"{SOCKET_PATH_MAX}; choose a shorter one"
        )
    return None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError (never OSError or TOML errors)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(str(p), [f"cannot read: {e.strerror or e}"]) from None
    return parse_config_bytes(data, str(p))


def parse_config_bytes(data: bytes, source: str) -> Config:
    """A config file's bytes (TOML in UTF-8) into a Config; ConfigError for any problem."""
    try:
        root = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(source, [f"not UTF-8 text (byte {e.start})"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [f"not valid TOML: {e}"]) from None
    return parse_config(root, source)


def resolve_config_path(cli_path: str | None) -> Path:
    """--config, else $EDGE_AGENT_CONFIG, else /etc/edge-agent/agent.toml."""
    if cli_path:
        return Path(cli_path)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
