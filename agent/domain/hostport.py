"""An address as "host:port" ("[v6]:port" for IPv6): the one parser for every key that
takes one (the config's listen and join addresses, an origin's traffic ``address``), so
the same text is accepted, and refused with the same reason, wherever it is written."""

from __future__ import annotations

from dataclasses import dataclass


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
    if any(c.isspace() or not c.isprintable() for c in host):
        raise ValueError("the host contains white space or a control character")
    if port_s is None:
        if default_port is None:
            raise ValueError("missing :port")
        return HostPort(host, default_port)
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"bad port {port_s!r}")
    return HostPort(host, int(port_s))
