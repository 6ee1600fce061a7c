"""The agent's TOML configuration: parsed once into typed, immutable objects.

Every problem is reported with the file and the key path that holds it
(``agent.toml: origin[2].interval: "10x" is not a duration``), and all problems
are reported together, so an operator fixes a file in one pass rather than one
error per restart. The schema is documented for operators in docs/config.md;
examples/agent.toml is an annotated example.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agent.membership.settings import Settings as GossipSettings

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/agent.toml")
CONFIG_ENV = "EDGE_AGENT_CONFIG"

T = TypeVar("T")


class ConfigError(Exception):
    """Invalid configuration; ``problems`` lists each one as 'key.path: what is wrong'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


# --- value types ---------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Parse "500ms", "10s", "2m", "1h", "1m30s" into seconds; raise ValueError otherwise."""
    s = text.strip()
    if not s:
        raise ValueError("empty")
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(text)
    return total


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration, for display ("10s", "500ms", "2m")."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(text: str, *, default_port: int | None = None) -> HostPort:
    """Parse "host:port", "[v6]:port" (or bare "host" when default_port is given)."""
    s = text.strip()
    host: str
    port_s: str | None
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ValueError("unclosed '['")
        host, rest = s[1:end], s[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("junk after ']'")
        port_s = rest[1:] if rest else None
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    elif ":" in s:
        raise ValueError("IPv6 addresses need brackets: [addr]:port")
    else:
        host, port_s = s, None
    if not host:
        raise ValueError("missing host")
    if port_s is None:
        if default_port is None:
            raise ValueError("missing :port")
        return HostPort(host, default_port)
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"bad port {port_s!r}")
    return HostPort(host, int(port_s))


# --- the schema ----------------------------------------------------------------------------

ORIGIN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str = ""  # "" = derive from the hostname at start
    data_dir: Path = Path("/var/lib/edge-agent")
    weight: float = 1.0
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


@dataclass(frozen=True, slots=True)
class StoreConfig:
    commit_interval: float = 1.0  # fsync at most this often (and at clean shutdown)
    max_bytes: int = 64 << 20  # log + snapshots budget: a snapshot is taken before this


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


@dataclass(frozen=True, slots=True)
class ChecksConfig:
    concurrency: int = 256  # most probes in flight at once, fleet of origins or not
    user_agent: str = "edge-agent"


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True, slots=True)
class OriginSpec:
    """One origin to check. Equal specs compare equal, so a reload can diff them."""

    id: str
    url: str
    kind: str  # "http" (http and https URLs) or "tcp"
    host: str
    port: int
    interval: float = 10.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    down_interval: float | None = None  # None: same as interval
    expect_status: tuple[int, ...] = (200,)
    expect_body: str = ""
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    tls_verify: bool = True

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")

    @property
    def effective_down_interval(self) -> float:
        return self.interval if self.down_interval is None else self.down_interval

    def to_dict(self) -> dict[str, Any]:
        """The spec as the API and the TOML file spell it."""
        d: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "interval": format_duration(self.interval),
            "timeout": format_duration(self.timeout),
            "rise": self.rise,
            "fall": self.fall,
        }
        if self.down_interval is not None:
            d["down_interval"] = format_duration(self.down_interval)
        if self.kind == "http":
            d["expect_status"] = list(self.expect_status)
            d["method"] = self.method
            if self.expect_body:
                d["expect_body"] = self.expect_body
            if self.headers:
                d["headers"] = dict(self.headers)
            if self.tls:
                d["tls_verify"] = self.tls_verify
        return d


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


# --- the parser ----------------------------------------------------------------------------


class _Reader:
    """Walks one TOML table, recording problems with their key paths instead of raising."""

    def __init__(self, problems: list[str], path: str, table: Mapping[str, Any]) -> None:
        self.problems = problems
        self.path = path
        self.table = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def bad(self, name: str, message: str) -> None:
        self.problems.append(f"{self.key(name)}: {message}")

    def get(self, name: str, kind: type[T], default: T, what: str) -> T:
        self.used.add(name)
        if name not in self.table:
            return default
        v = self.table[name]
        ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            self.bad(name, f"{_show(v)} is not {what}")
            return default
        return v

    def conv(self, name: str, default: T, fn: Callable[[Any], T], what: str) -> T:
        """Read a value and convert it with fn; a ValueError becomes 'X is not <what>'."""
        self.used.add(name)
        if name not in self.table:
            return default
        v = self.table[name]
        try:
            return fn(v)
        except (ValueError, TypeError):
            self.bad(name, f"{_show(v)} is not {what}")
            return default

    def finish(self) -> None:
        for k in self.table:
            if k not in self.used:
                self.problems.append(f"{self.key(k)}: unknown key")


def _default(cls: type[Any], name: str) -> Any:
    """The dataclass field's own default: each default is stated once, on the field."""
    f = cls.__dataclass_fields__[name]
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"{cls.__name__}.{name} has no default")


def _show(v: Any) -> str:
    if isinstance(v, str):
        return '"' + v.replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        text = "[" + ", ".join(_show(x) for x in v[:5]) + (", …]" if len(v) > 5 else "]")
        return text if len(text) <= 60 else "an array"
    return str(v)


def _duration(v: Any) -> float:
    if not isinstance(v, str):
        raise TypeError
    return parse_duration(v)


def _positive_duration(v: Any) -> float:
    d = _duration(v)
    if d <= 0:
        raise ValueError
    return d


def _hostport(v: Any) -> HostPort:
    if not isinstance(v, str):
        raise TypeError
    return parse_hostport(v)


def _optional_hostport(v: Any) -> HostPort | None:
    """An address; "" (how TOML spells "not set") is None."""
    return _hostport(v) if v != "" else None


def _path(v: Any) -> Path:
    if not isinstance(v, str):
        raise TypeError
    return Path(v)


def _optional_path(v: Any) -> Path | None:
    """A path; "" (how TOML spells "not set") is None."""
    if not isinstance(v, str):
        raise TypeError
    return Path(v) if v else None


def _optional_str(v: Any) -> str | None:
    if not isinstance(v, str):
        raise TypeError
    return v or None


def _str_table(v: Any) -> Mapping[str, str]:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise TypeError
    return MappingProxyType(dict(v))


def _header_pairs(v: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(_str_table(v).items()))


def _pin(v: Any) -> int | None:
    if v is False:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 27:
        raise ValueError
    return v


def _rgb_pins(v: Any) -> tuple[int, int, int]:
    if not isinstance(v, list) or len(v) != 3:
        raise ValueError
    r, g, b = (_pin(p) for p in v)
    if r is None or g is None or b is None:
        raise ValueError
    return (r, g, b)


def _status_list(v: Any) -> tuple[int, ...]:
    """Status codes: integers, or "2xx"-style classes expanded to their 100 codes."""
    items = v if isinstance(v, list) else [v]
    out: list[int] = []
    for it in items:
        if isinstance(it, int) and not isinstance(it, bool) and 100 <= it <= 599:
            out.append(it)
        elif isinstance(it, str) and re.fullmatch(r"[1-5]xx", it):
            base = int(it[0]) * 100
            out.extend(range(base, base + 100))
        else:
            raise ValueError
    if not out:
        raise ValueError
    return tuple(sorted(set(out)))


def _parse_target(url: str) -> tuple[str, str, int]:
    """Return (kind, host, port) for an origin URL; ValueError with a reason otherwise."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "tcp"):
        raise ValueError("scheme must be http, https or tcp")
    try:
        host = parts.hostname
        port = parts.port
    except ValueError as e:
        raise ValueError(str(e)) from None
    if not host:
        raise ValueError("missing host")
    if scheme == "tcp":
        if port is None:
            raise ValueError("tcp:// needs a port")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("tcp:// takes no path")
        return "tcp", host, port
    return "http", host, port if port is not None else (443 if scheme == "https" else 80)


def _parse_origin(problems: list[str], idx: int, t: Any) -> OriginSpec | None:
    path = f"origin[{idx}]"
    if not isinstance(t, dict):
        problems.append(f"{path}: {_show(t)} is not a table")
        return None
    before = len(problems)
    r = _Reader(problems, path, t)
    oid = r.get("id", str, "", "a string")
    if "id" not in t:
        r.bad("id", "missing (every origin needs an id)")
    elif oid and not ORIGIN_ID_RE.match(oid):
        r.bad("id", f"{_show(oid)} is not a valid id (letters, digits, '.', '_', '-'; max 64)")
    url = r.get("url", str, "", "a string")
    kind, host, port = "http", "", 0
    if "url" not in t:
        r.bad("url", "missing (http://…, https://… or tcp://host:port)")
    elif url:
        try:
            kind, host, port = _parse_target(url)
        except ValueError as e:
            r.bad("url", f"{_show(url)} is not a valid URL ({e})")
    d = functools.partial(_default, OriginSpec)
    interval = r.conv("interval", d("interval"), _positive_duration, "a duration")
    # the default timeout never exceeds the interval (a 1 s check times out after 1 s)
    timeout = r.conv("timeout", min(d("timeout"), interval), _positive_duration, "a duration")
    down_interval = r.conv("down_interval", d("down_interval"), _positive_duration, "a duration")
    rise = r.get("rise", int, d("rise"), "an integer")
    fall = r.get("fall", int, d("fall"), "an integer")
    for name, val in (("rise", rise), ("fall", fall)):
        if not 1 <= val <= 100:
            r.bad(name, f"{val} is out of range (1..100)")
    if timeout > interval and "timeout" in t:
        r.bad("timeout", f"{_show(t['timeout'])} is longer than the interval")
    expect_status: tuple[int, ...] = r.conv(
        "expect_status", d("expect_status"), _status_list, "a list of status codes"
    )
    expect_body = r.get("expect_body", str, d("expect_body"), "a string")
    method = r.get("method", str, d("method"), "a string").upper()
    if method not in HTTP_METHODS:
        r.bad("method", f"{_show(method)} is not one of {', '.join(HTTP_METHODS)}")
    headers = r.conv("headers", d("headers"), _header_pairs, "a table of strings")
    tls_verify = r.get("tls_verify", bool, d("tls_verify"), "true or false")
    if kind == "tcp":
        for k in ("expect_status", "expect_body", "method", "headers", "tls_verify"):
            if k in t:
                r.bad(k, "applies only to http(s) origins")
    r.finish()
    if len(problems) != before:
        return None
    return OriginSpec(
        id=oid,
        url=url,
        kind=kind,
        host=host,
        port=port,
        interval=interval,
        timeout=timeout,
        rise=rise,
        fall=fall,
        down_interval=down_interval,
        expect_status=expect_status,
        expect_body=expect_body,
        method=method,
        headers=headers,
        tls_verify=tls_verify,
    )


def parse_origin(data: Mapping[str, Any], *, where: str = "origin") -> OriginSpec:
    """Validate one origin given as a mapping (the API uses this with the config's rules)."""
    problems: list[str] = []
    spec = _parse_origin(problems, 0, dict(data))
    if spec is None:
        raise ConfigError(where, [p.replace("origin[0]", where, 1) for p in problems])
    return spec


def _table(problems: list[str], root: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    v = root.get(name, {})
    if not isinstance(v, dict):
        problems.append(f"{name}: {_show(v)} is not a table")
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
    }
    for k in root:
        if k not in known:
            problems.append(f"{k}: unknown key")

    r = _Reader(problems, "node", _table(problems, root, "node"))
    nd = NodeConfig()
    name = r.get("name", str, nd.name, "a string")
    if name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
        r.bad("name", f"{_show(name)} is not a valid node name")
    node = NodeConfig(
        name=name,
        data_dir=r.conv("data_dir", nd.data_dir, _path, "a string"),
        weight=r.get("weight", float, nd.weight, "a number"),
        tags=r.conv("tags", nd.tags, _str_table, "a table of strings"),
    )
    if not (node.weight > 0 and math.isfinite(node.weight)):
        r.bad("weight", f"{node.weight} must be a positive number")
    r.finish()

    r = _Reader(problems, "cluster", _table(problems, root, "cluster"))
    cd = ClusterConfig()
    cname = r.get("name", str, cd.name, "a string")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,40}", cname):
        r.bad("name", f"{_show(cname)} is not a valid cluster name (letters, digits, '-')")
    join = r.get("join", list, list(cd.join), "an array of strings")
    for i, j in enumerate(join):
        if not isinstance(j, str):
            r.bad(f"join[{i}]", f"{_show(j)} is not a string")
            continue
        try:
            parse_hostport(j, default_port=7946)
        except ValueError as e:
            r.bad(f"join[{i}]", f"{_show(j)} is not host:port ({e})")
    cluster = ClusterConfig(
        name=cname,
        bind=r.conv("bind", cd.bind, _hostport, "host:port"),
        advertise=r.conv("advertise", cd.advertise, _optional_hostport, "host:port"),
        join=tuple(j for j in join if isinstance(j, str)),
        discover=r.get("discover", bool, cd.discover, "true or false"),
        interface=r.conv("interface", cd.interface, _optional_str, "a string"),
        keyring_file=r.conv("keyring_file", cd.keyring_file, _optional_path, "a string"),
        replicas=r.get("replicas", int, cd.replicas, "an integer"),
        reap_after=r.conv("reap_after", cd.reap_after, _duration, "a duration"),
    )
    iface = cluster.interface
    if iface is not None and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", iface):
        r.bad("interface", f"{_show(iface)} is not a network interface name")
    if not 1 <= cluster.replicas <= 16:
        r.bad("replicas", f"{cluster.replicas} is out of range (1..16)")
    if cluster.reap_after < 60:
        r.bad("reap_after", f"{cluster.reap_after:g}s is shorter than 60s")
    r.finish()

    r = _Reader(problems, "store", _table(problems, root, "store"))
    sd = StoreConfig()
    store = StoreConfig(
        commit_interval=r.conv("commit_interval", sd.commit_interval, _duration, "a duration"),
        max_bytes=r.get("max_bytes", int, sd.max_bytes, "an integer (bytes)"),
    )
    if not 0.01 <= store.commit_interval <= 60:
        r.bad("commit_interval", f"{store.commit_interval:g}s is out of range (10ms..60s)")
    if store.max_bytes < 1 << 20:
        r.bad("max_bytes", f"{store.max_bytes} is below 1 MiB")
    r.finish()

    r = _Reader(problems, "gossip", _table(problems, root, "gossip"))
    defaults = GossipSettings()
    gossip_values: dict[str, Any] = {}
    for key in GOSSIP_DURATIONS:
        gossip_values[key] = r.conv(key, getattr(defaults, key), _duration, "a duration")
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

    r = _Reader(problems, "api", _table(problems, root, "api"))
    ad = ApiConfig()
    api = ApiConfig(
        listen=r.conv("listen", ad.listen, _hostport, "host:port"),
        token_file=r.conv("token_file", ad.token_file, _optional_path, "a string"),
    )
    r.finish()

    leds_t = _table(problems, root, "leds")
    r = _Reader(problems, "leds", leds_t)
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
    )
    used = [p for p in pins.values() if p is not None] + list(leds.rgb or ())
    if len(used) != len(set(used)):
        problems.append("leds: two colours share one pin")
    r.finish()

    r = _Reader(problems, "checks", _table(problems, root, "checks"))
    chd = ChecksConfig()
    checks = ChecksConfig(
        concurrency=r.get("concurrency", int, chd.concurrency, "an integer"),
        user_agent=r.get("user_agent", str, chd.user_agent, "a string"),
    )
    if not 1 <= checks.concurrency <= 10000:
        r.bad("concurrency", f"{checks.concurrency} is out of range (1..10000)")
    r.finish()

    r = _Reader(problems, "log", _table(problems, root, "log"))
    level = r.get("level", str, LogConfig().level, "a string").lower()
    if level not in LOG_LEVELS:
        r.bad("level", f"{_show(level)} is not one of {', '.join(LOG_LEVELS)}")
    r.finish()

    raw_origins = root.get("origin", [])
    origins: list[OriginSpec] = []
    if not isinstance(raw_origins, list):
        problems.append("origin: must be an array of tables ([[origin]])")
        raw_origins = []
    seen: dict[str, int] = {}
    for i, t in enumerate(raw_origins):
        spec = _parse_origin(problems, i, t)
        if spec is None:
            continue
        if spec.id in seen:
            problems.append(
                f"origin[{i}].id: duplicate id {_show(spec.id)} (also origin[{seen[spec.id]}])"
            )
            continue
        seen[spec.id] = i
        origins.append(spec)

    webhooks = _parse_webhooks(problems, root.get("webhook", []))

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
    )


def _parse_webhooks(problems: list[str], raw: Any) -> tuple[WebhookConfig, ...]:
    if not isinstance(raw, list):
        problems.append("webhook: must be an array of tables ([[webhook]])")
        return ()
    out = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            problems.append(f"webhook[{i}]: {_show(t)} is not a table")
            continue
        r = _Reader(problems, f"webhook[{i}]", t)
        url = r.get("url", str, "", "a string")
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            r.bad("url", f"{_show(url)} is not an http(s) URL")
        hook = WebhookConfig(
            url=url,
            timeout=r.conv("timeout", _default(WebhookConfig, "timeout"), _duration, "a duration"),
            headers=r.conv("headers", _default(WebhookConfig, "headers"), _header_pairs, "a table"),
        )
        if not 0 < hook.timeout <= 60:
            r.bad("timeout", f"{hook.timeout:g}s is out of range (0..60s)")
        r.finish()
        out.append(hook)
    return tuple(out)


LEDS_COLOURS = ("green", "amber", "red")


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
