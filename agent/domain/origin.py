"""An origin to check: its spec, and how one is read and validated, the same way for the
config file, the API and a spec that arrives from a peer."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agent.domain.durations import format_duration
from agent.domain.hostport import parse_hostport
from agent.domain.problems import ConfigError, TableReader, field_default
from agent.domain.values import Problem, header_pairs, positive_duration, show, status_list

ORIGIN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS")


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
    #: where traffic goes ("host:port"), when not the check URL's host and port: what
    #: `edge-agent haproxy-config` writes as the server's address. "" = the URL's.
    address: str = ""
    #: what the load-balancer surfaces answer while the fleet's verdict is "unknown" or
    #: "disputed": True "up" (the load balancer's own check decides), False "down"
    fail_open: bool = True
    #: keys of a spec from a peer that this agent does not know (a newer agent's), kept
    #: so that passing the spec on (gossip, anti-entropy) does not strip them; never set
    #: from the config or the API, which refuse an unknown key. Not part of the hash: its
    #: values may be lists or tables.
    peer_extra: tuple[tuple[str, Any], ...] = field(default=(), hash=False)

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
        if self.address:
            d["address"] = self.address
        if not self.fail_open:
            d["fail_open"] = False
        return d

    @property
    def traffic_address(self) -> str:
        """Where a load balancer sends this origin's traffic: ``address``, else the check
        URL's host:port (brackets around an IPv6 address)."""
        if self.address:
            return self.address
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


#: every key an origin table may hold: a key not here is refused from the config and the
#: API, and ignored (but kept, see ``OriginSpec.peer_extra``) in a spec from a peer
ORIGIN_KEYS = frozenset(
    {
        "id",
        "url",
        "interval",
        "timeout",
        "rise",
        "fall",
        "down_interval",
        "expect_status",
        "expect_body",
        "method",
        "headers",
        "tls_verify",
        "address",
        "fail_open",
    }
)


#: A DNS name (letters, digits, '-', '.', '_'; international names too), an IPv4
#: address, or an IPv6 one (the part urlsplit found between brackets, with its zone):
#: anything else would fail later, at DNS, as "down".
_SPACE_RE = re.compile(r"\s")
_HOST_RE = re.compile(r"[\w.-]+|[0-9A-Fa-f:.]+(%[\w.-]+)?")


def parse_target(url: str) -> tuple[str, str, int]:
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
    if _SPACE_RE.search(url):
        raise ValueError("it contains white space")
    if not url.isprintable():  # a NUL or other control character: no server has such a URL
        raise ValueError("it contains a control character")
    if not _HOST_RE.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or address")
    if scheme == "tcp":
        if port is None:
            raise ValueError("tcp:// needs a port")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("tcp:// takes no path")
        return "tcp", host, port
    return "http", host, port if port is not None else (443 if scheme == "https" else 80)


def read_origin(problems: list[str], idx: int, t: Any) -> OriginSpec | None:
    path = f"origin[{idx}]"
    if not isinstance(t, dict):
        problems.append(f"{path}: {show(t)} is not a table")
        return None
    before = len(problems)
    r = TableReader(problems, path, t)
    oid = r.get("id", str, "", "a string")
    if "id" not in t:
        r.bad("id", "missing (every origin needs an id)")
    elif oid and not ORIGIN_ID_RE.match(oid):
        r.bad("id", f"{show(oid)} is not a valid id (letters, digits, '.', '_', '-'; max 64)")
    url = r.get("url", str, "", "a string")
    kind, host, port = "http", "", 0
    if "url" not in t:
        r.bad("url", "missing (http://…, https://… or tcp://host:port)")
    elif url:
        try:
            kind, host, port = parse_target(url)
        except ValueError as e:
            r.bad("url", f"{show(url)} is not a valid URL ({e})")
    d = functools.partial(field_default, OriginSpec)
    interval = r.conv("interval", d("interval"), positive_duration, "a duration")
    # the default timeout never exceeds the interval (a 1 s check times out after 1 s)
    timeout = r.conv("timeout", min(d("timeout"), interval), positive_duration, "a duration")
    down_interval = r.conv("down_interval", d("down_interval"), positive_duration, "a duration")
    rise = r.get("rise", int, d("rise"), "an integer")
    fall = r.get("fall", int, d("fall"), "an integer")
    for name, val in (("rise", rise), ("fall", fall)):
        if not 1 <= val <= 100:
            r.bad(name, f"{val} is out of range (1..100)")
    if timeout > interval and "timeout" in t:
        r.bad("timeout", f"{show(t['timeout'])} is longer than the interval")
    expect_status: tuple[int, ...] = r.conv(
        "expect_status", d("expect_status"), status_list, "a list of status codes"
    )
    expect_body = r.get("expect_body", str, d("expect_body"), "a string")
    method = r.get("method", str, d("method"), "a string").upper()
    if method not in HTTP_METHODS:
        r.bad("method", f"{show(method)} is not one of {', '.join(HTTP_METHODS)}")
    headers = r.conv("headers", d("headers"), header_pairs, "a table of strings")
    tls_verify = r.get("tls_verify", bool, d("tls_verify"), "true or false")
    address = r.conv("address", d("address"), _address, '"host:port"')
    fail_open = r.get("fail_open", bool, d("fail_open"), "true or false")
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
        address=address,
        fail_open=fail_open,
    )


def _address(v: Any) -> str:
    """An origin's traffic address, in its one spelling (so a spec survives its encoding)."""
    if not isinstance(v, str):
        raise TypeError
    if v == "":
        return ""
    try:
        hp = parse_hostport(v)
    except ValueError as e:
        raise Problem(f"is not host:port ({e})") from None
    if not _HOST_RE.fullmatch(hp.host):
        raise Problem(f"is not host:port ({hp.host!r} is not a host name or address)")
    if hp.port == 0:
        raise Problem("is not host:port (port 0 is no port traffic can go to)")
    return str(hp)


def parse_origin(
    data: Mapping[str, Any], *, where: str = "origin", from_peer: bool = False
) -> OriginSpec:
    """Validate one origin given as a mapping (the API uses this with the config's rules).

    ``from_peer``: a spec another node sent. A newer agent may add keys this one does not
    know; refusing them would refuse the whole delta they came in (and every origin and
    observation with it), so they are set aside in ``peer_extra`` instead, and kept for
    passing the spec on. Everything this agent does know is checked as strictly as ever."""
    table = dict(data)
    extra: tuple[tuple[str, Any], ...] = ()
    if from_peer and not table.keys() <= ORIGIN_KEYS:
        extra = tuple(sorted((k, v) for k, v in table.items() if k not in ORIGIN_KEYS))
        table = {k: v for k, v in table.items() if k in ORIGIN_KEYS}
    problems: list[str] = []
    spec = read_origin(problems, 0, table)
    if spec is None:
        raise ConfigError(where, [p.replace("origin[0]", where, 1) for p in problems])
    if extra:
        spec = dataclasses.replace(spec, peer_extra=extra)
    return spec
