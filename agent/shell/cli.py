"""The `edge-agent` command.

Exit codes: 0 ok, 1 runtime failure (agent unreachable, crashed, its status failing), 2 bad
usage or invalid config (EXIT_CODES below, in every --help and in docs/config.md).

Client commands (status, origins, members, identify, origin …) talk to the local agent's
API: over its Unix socket first ([api] socket, config.api_socket_path), which answers even
while the TCP port is taken, then over TCP at the config's [api] listen address. The config
is --config, else $EDGE_AGENT_CONFIG, else /etc/edge-agent/agent.toml. ``--api URL`` (TCP
only) and ``--socket PATH`` (that socket only) override. Only when there is no file at the
default path do they use the defaults (/run/edge-agent/api.sock, 127.0.0.1:8080) without a
word; a config that is invalid, or named but missing, is an error (exit 2), and one this
user may not read is said so on stderr. Writes (identify) send the bearer token from the
config's [api] token_file when one is set; writes to the fleet's origins (origin add, rm,
apply) need it (or --token-file), and say so before sending anything without it. With
--json every answer is JSON, errors too.
docs/config.md#client-commands says the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import mimetypes
import os
import re
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__
from agent.domain import ConfigError
from agent.shell.config import (
    CONFIG_ENV,
    ApiConfig,
    Config,
    HostPort,
    api_socket_path,
    load_config,
    parse_config_bytes,
    parse_hostport,
    resolve_config_path,
    socket_path_problem,
)
from agent.shell.haproxy_config import INTER_RE, NAME_RE, backend_text
from agent.shell.origin_file import (
    FORMATS,
    MAX_LISTED,
    ExportError,
    OriginFileError,
    OriginProblem,
    check,
    from_api,
    header_lines,
    limits_problem,
    parse,
    to_json,
    to_toml,
)

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXIT_CODES = """exit status:
  0  ok
  1  runtime error: the agent is unreachable, or its status is failing or starting
  2  usage or config error"""


# --- helpers --------------------------------------------------------------------------------


class ClientConfigError(Exception):
    """The config a client command needs cannot be used: exit 2, with the reason."""


def _client_config(args: argparse.Namespace, needed_for: str) -> Config | None:
    """The config a client command takes its [api] settings from (read once per command).

    None when there is none to use: no file at the default path (a machine without an
    agent config: the defaults apply, quietly), or a file this user may not read (the
    image and Ansible install it 0640 root:edge-agent; said on stderr, since the address
    may then be wrong). A file named by --config or $EDGE_AGENT_CONFIG that is missing,
    or any config that is not valid, raises ClientConfigError: never a silent fallback.
    """
    cache: dict[str, Config | None] = args.__dict__.setdefault("_client_config", {})
    if "cfg" in cache:
        return cache["cfg"]
    named = "--config" if args.config else CONFIG_ENV if os.environ.get(CONFIG_ENV) else None
    path = resolve_config_path(args.config)
    cfg: Config | None = None
    try:
        cfg = parse_config_bytes(path.read_bytes(), str(path))
    except FileNotFoundError:
        if named:
            raise ClientConfigError(f"{path}: no such file (named by {named})") from None
    except PermissionError as e:
        print(
            f"edge-agent: cannot read {path} ({e.strerror}): going without its [api] "
            f"settings, to {api_socket_path(Config())} then {_base(ApiConfig().listen)}; "
            "pass --api, or run as a user who can read it",
            file=sys.stderr,
        )
    except OSError as e:
        raise ClientConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except ConfigError as e:
        hint = "fix it, or pass --api" if needed_for == "API address" else "fix it"
        msg = f"the {needed_for} comes from an invalid config ({hint}):\n{e}"
        raise ClientConfigError(msg) from None
    cache["cfg"] = cfg
    return cfg


def _base(listen: HostPort) -> str:
    """The URL that reaches an API listening on ``listen`` from this host."""
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "::", "") else listen.host
    return f"http://{HostPort(host, listen.port)}"


def _api_base(args: argparse.Namespace) -> str:
    """--api, else the config's [api] listen, else (no config file) ApiConfig's default."""
    if args.api:
        return str(args.api).rstrip("/")
    cfg = _client_config(args, "API address")
    return _base(cfg.api.listen if cfg is not None else ApiConfig().listen)


@dataclass
class Target:
    """Where a client command reaches the agent: its Unix socket first, then TCP."""

    api: str | None  # base URL
    socket: str | None  # path of the local API socket
    socket_failed: str | None = None  # why the socket could not be used (then TCP)


def _target(args: argparse.Namespace) -> Target:
    """--api: that URL only; --socket: that socket only; else the config's socket, then
    its [api] listen (the defaults when there is no config file)."""
    if args.api:
        return Target(str(args.api).rstrip("/"), None)
    if getattr(args, "socket", None):
        return Target(None, str(args.socket))
    cfg = _client_config(args, "API address")
    return Target(_api_base(args), str(api_socket_path(cfg or Config())))


def socket_path(text: str) -> str:
    """``--socket``: a path that can name a Unix socket (an argparse error otherwise)."""
    problem = socket_path_problem(Path(text)) if text else "is empty"
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


def api_address(text: str) -> str:
    """``--api``: ``http(s)://host[:port]`` or ``host:port``, as a base URL; an
    argparse error (exit 2, naming the flag) for anything else."""
    from urllib.parse import urlsplit

    s = text.strip().rstrip("/")
    try:
        if "://" not in s:
            return f"http://{parse_hostport(s)}"
        parts = urlsplit(s)
        if parts.scheme not in ("http", "https"):
            raise ValueError("the scheme must be http or https")
        if not parts.hostname:
            raise ValueError("missing host")
        parts.port  # noqa: B018  (raises ValueError on a bad port)
        if parts.path or parts.query or parts.fragment:
            raise ValueError("give the agent's address only, without a path")
        return s
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not the agent's address ({e}); "
            "write http://host:port or host:port, e.g. 127.0.0.1:8080"
        ) from None


class ApiError(Exception):
    """A request that failed, in a sentence for a human; ``status`` and ``doc`` are the
    agent's own answer when it gave one (a 400 on a bad batch carries "errors")."""

    def __init__(self, message: str, status: int | None = None, doc: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.doc = doc


class _Unreachable(Exception):
    """The connection could not be made (nothing was sent): the next way may be tried."""


def _exchange(
    conn: Any, method: str, path: str, data: bytes | None, headers: dict[str, str]
) -> tuple[int, str, Any, bytes]:
    """One request on ``conn`` (http.client): (status, reason, headers, body)."""
    try:
        conn.connect()
    except OSError as e:
        raise _Unreachable(e.strerror or str(e)) from None
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.reason, resp.headers, resp.read()


#: how long a request may take: a read or a single write is quick; an apply of 100,000
#: origins is validated, stored and answered with its diff, which takes longer on a Pi
TIMEOUT = 5.0
LIST_TIMEOUT = 60.0  # a page of a listing, or all of it from an agent that does not page
BATCH_TIMEOUT = 300.0
#: origins asked per request of a listing: each page is a short request, so the agent's
#: event loop (gossip, checks) is never held for seconds by one 100,000-origin answer; an
#: agent older than paging ignores ?limit= and sends the whole list at once
PAGE = 5000


def _request(
    target: Target, path: str, body: dict[str, Any] | None = None, token: str | None = None
) -> Any:
    """GET ``path`` (or POST ``body`` as JSON) and return the decoded answer; ApiError
    carries a sentence for a human (unreachable, refused, the agent's own error)."""
    data = None if body is None else json.dumps(body).encode()
    return _call(target, "GET" if body is None else "POST", path, data, token).doc


@dataclass
class Reply:
    status: int
    doc: Any  # the decoded JSON answer
    headers: Any  # http.client.HTTPMessage


def _call(
    target: Target,
    method: str,
    path: str,
    data: bytes | None = None,
    token: str | None = None,
    timeout: float = TIMEOUT,
) -> Reply:
    """One request (``data``: a JSON body) and the agent's answer; an error status raises
    ApiError."""
    # imported here, not at the top: `edge-agent run` never needs an HTTP client library
    # and http.client (with email.*) costs the long-running agent ~1 MiB
    import http.client
    import socket
    from urllib.parse import urlsplit

    class UnixConnection(http.client.HTTPConnection):
        def __init__(self, sock_path: str) -> None:
            super().__init__("localhost", timeout=timeout)
            self.sock_path = sock_path

        def connect(self) -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.sock_path)
            except OSError:
                s.close()
                raise
            self.sock = s

    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    answer: tuple[int, str, Any, bytes] | None = None
    where = ""
    try:
        if target.socket is not None and target.socket_failed is None:
            where = f"{target.socket} {path}"
            try:
                answer = _exchange(UnixConnection(target.socket), method, path, data, headers)
            except _Unreachable as e:
                target.socket_failed = str(e)
                if target.api is None:
                    raise ApiError(
                        f"cannot reach the agent on its socket {target.socket} ({e}); "
                        "is it running?"
                    ) from None
        if answer is None:
            assert target.api is not None
            where = target.api + path
            parts = urlsplit(target.api)
            cls = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = cls(parts.hostname or "", parts.port, timeout=timeout)
            try:
                answer = _exchange(conn, method, path, data, headers)
            except _Unreachable as e:
                also = (
                    f", nor on its socket {target.socket} ({target.socket_failed})"
                    if target.socket_failed
                    else ""
                )
                raise ApiError(
                    f"cannot reach the agent at {target.api} ({e}){also}; is it running?"
                ) from None
    except (OSError, http.client.HTTPException) as e:
        maybe = (
            "; the change may or may not have been made (see `edge-agent origins`)"
            if method != "GET"
            else ""
        )
        raise ApiError(f"{where}: no answer ({e or type(e).__name__}){maybe}") from None
    status, reason, resp_headers, raw = answer
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        decoded = None
        if status < 400:
            raise ApiError(f"{where}: the answer is not JSON") from None
    if status >= 400:
        if isinstance(decoded, dict) and "status" in decoded and path == "/v1/health":
            return Reply(status, decoded, resp_headers)  # 503 still carries the health document
        msg = decoded.get("error") if isinstance(decoded, dict) else reason
        raise ApiError(f"{where}: {status} {msg}", status, decoded)
    return Reply(status, decoded, resp_headers)


def _not_agent(target: Target, path: str) -> ApiError:
    where = target.api if target.socket is None or target.socket_failed else target.socket
    return ApiError(f"{where} {path}: not an answer edge-agent understands; is it an agent?")


def _get(target: Target, path: str, timeout: float = TIMEOUT) -> Any:
    """A read; its answer must have the shape an edge-agent sends (a JSON object for
    /v1/health and one origin, a list of objects otherwise), so nothing later ends in a
    traceback. A list the agent sends in pages (a Link header with rel="next") is
    gathered whole."""
    one = path == "/v1/health" or path.startswith("/v1/origins/")
    name_key = "node" if path == "/v1/health" else "id"
    out: list[Any] = []
    seen = {path}
    while True:
        reply = _call(target, "GET", path, timeout=timeout)
        doc = reply.doc
        ok = (
            isinstance(doc, dict) and isinstance(doc.get(name_key), str)
            if one
            else isinstance(doc, list) and all(isinstance(x, dict) for x in doc)
        )
        if not ok:
            raise _not_agent(target, path)
        if one:
            return doc
        out.extend(doc)
        following = _next_page(reply.headers.get("Link"))
        if following is None or following in seen:
            return out
        seen.add(following)
        path = following


_LINK_NEXT = re.compile(r'<(/v1/[^>]*)>\s*;\s*rel="?next"?')


def _next_page(link: str | None) -> str | None:
    """The path of the next page from a Link header, if the agent says there is one."""
    m = _LINK_NEXT.search(link or "")
    return m.group(1) if m else None


def _api_token(args: argparse.Namespace) -> str | None:
    """The bearer token from the config's [api] token_file; None when none is set (or there
    is no config to read it from, see _client_config)."""
    cfg = _client_config(args, "API token")
    token_file = cfg.api.token_file if cfg is not None else None
    if token_file is None:
        return None
    try:
        return token_file.read_text().strip()
    except OSError as e:
        raise ApiError(
            f"cannot read the API token from {token_file} ({e.strerror or e}); "
            "run as a user who can (e.g. with sudo)"
        ) from None


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Aligned columns for a terminal; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, str(r[-1])]).rstrip())
    return "\n".join(lines)


def _own_observation(o: dict[str, Any]) -> dict[str, Any]:
    """This node's observation of an origin (the one with an exact latency), else the
    first one; {} before anyone has checked it."""
    observations: list[dict[str, Any]] = o.get("observations") or []
    for obs in observations:
        if obs.get("latency_ms") is not None:
            return obs
    return observations[0] if observations else {}


def _latency(obs: dict[str, Any]) -> str:
    lat = obs.get("latency_ms")
    if lat is not None:
        return f"{lat:.0f}ms"
    return str(obs.get("latency_band") or "")


def origins_table(origins: list[dict[str, Any]]) -> str:
    """ORIGIN VERDICT LATENCY OWNERS MINE TARGET LAST CHECK, one row an origin."""
    rows = []
    for o in origins:
        obs = _own_observation(o)
        rows.append(
            [
                str(o.get("id", "?")),
                str(o.get("verdict", "?")),
                _latency(obs) or "-",
                ",".join(o.get("owners") or []) or "-",
                "yes" if o.get("mine") else "no",
                str(o.get("spec", {}).get("url", "")),
                str(obs.get("reason", "")),
            ]
        )
    return table(rows, ["ORIGIN", "VERDICT", "LATENCY", "OWNERS", "MINE", "TARGET", "LAST CHECK"])


def members_table(members: list[dict[str, Any]], me: str | None = None) -> str:
    """NAME ADDRESS STATE INC TAGS; this node (``me``) is marked with a star."""
    rows = [
        [
            str(m.get("name", "?")) + (" *" if m.get("name") == me else ""),
            f"{m.get('addr', '?')}:{m.get('port', '?')}",
            str(m.get("state", "?")),
            str(m.get("incarnation", "?")),
            ",".join(f"{k}={v}" for k, v in sorted((m.get("tags") or {}).items())),
        ]
        for m in members
    ]
    return table(rows, ["NAME", "ADDRESS", "STATE", "INC", "TAGS"])


def _counts(c: dict[str, Any]) -> str:
    parts = [f"{c.get(k, 0)} {k}" for k in ("up", "down", "disputed")]
    if c.get("unknown"):
        parts.append(f"{c['unknown']} unknown")
    return ", ".join(parts)


def _bytes(n: float) -> str:
    """1536 -> "1.5 KiB": storage counters read at a glance."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


STATUS_ORIGIN_ROWS = 10  # the status screen lists this many troubled origins, then "…"
# what the LEDs line adds when nothing lights (Leds.kind); "gpio" adds nothing
LED_KINDS = {
    "none": "(no LEDs enabled here: nothing lights)",
    "mock": "(mock pins: no GPIO here, nothing lights)",
}


def status_text(health: dict[str, Any], origins: list[dict[str, Any]]) -> str:
    """`edge-agent status`: this node, its cluster, its origins, storage and LEDs on one
    screen. Fields an older agent does not send are left out, never guessed."""
    lines = [f"node      {health['node']}  (edge-agent {health.get('version', '?')})"]
    lines.append(f"status    {health.get('status', '?')}")
    for r in health.get("reasons") or []:
        lines.append(f"          - {r}")
    cluster = health.get("cluster")
    if isinstance(cluster, dict):
        peers = int(cluster.get("peers", 0))
        size = (
            "alone, no live peer"
            if peers == 0
            else f"this node and {peers} live {'peer' if peers == 1 else 'peers'}"
        )
        name = cluster.get("name")
        lines.append(f"cluster   {name + ': ' if name else ''}{size}")
    counts = health.get("origins")
    if isinstance(counts, dict):
        total = sum(int(v) for v in counts.values())
        lines.append(
            f"origins   {total} {'origin' if total == 1 else 'origins'}: {_counts(counts)}"
        )
    elif health.get("summary"):
        lines.append(f"origins   {health['summary']}")
    mine = health.get("mine")
    if isinstance(mine, dict):
        owned = int(mine.get("owned", 0))
        detail = f": {_counts(mine)}" if owned else ""
        lines.append(f"mine      {owned} checked by this node{detail}")
    storage = health.get("storage")
    if isinstance(storage, dict):
        text = str(storage.get("status", "?"))
        if storage.get("reason"):
            text += f": {storage['reason']}"
        if "bytes_written" in storage:
            text += (
                f"  ({_bytes(float(storage['bytes_written']))} written, "
                f"{storage.get('fsyncs', 0)} fsyncs, {storage.get('snapshots', 0)} snapshots)"
            )
        lines.append(f"storage   {text}")
    led = health.get("led")
    if isinstance(led, dict):
        lines.append(f"LEDs      {led.get('state', '?')}: {led.get('meaning', '')}")
        if str(led.get("kind")) in LED_KINDS:
            lines.append(f"          {LED_KINDS[str(led['kind'])]}")
    identify = float(health.get("identify_s") or 0)
    if identify > 0:
        lines.append(f"identify  blinking, {identify:.0f} s left")
    troubled = [o for o in origins if o.get("verdict") != "up"]
    if origins and not troubled:
        lines.append("")
        n = len(origins)
        lines.append(f"all {n:,} origins up" if n != 1 else "the 1 origin is up")
    if troubled:
        lines.append("")
        lines.append(f"origins not up ({len(troubled):,} of {len(origins):,}):")
        lines.append(origins_table(troubled[:STATUS_ORIGIN_ROWS]))
        if len(troubled) > STATUS_ORIGIN_ROWS:
            more = len(troubled) - STATUS_ORIGIN_ROWS
            lines.append(f"… and {more} more: edge-agent origins")
    return "\n".join(lines)


# --- commands -------------------------------------------------------------------------------


_HASHED_CERT = re.compile(r"[0-9a-f]{8}\.[0-9]+")


def lazy_ca_store(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Have OpenSSL read trusted CA certificates one at a time, as TLS checks need them.

    aiohttp builds its certificate-verifying SSLContext when it is imported, and
    OpenSSL's default paths make that parse the whole CA bundle (~140 certificates,
    about 1.8 MiB resident for the life of the process). The same trust store is also
    laid out as a hashed directory (``update-ca-certificates``/``c_rehash``), which
    OpenSSL searches on demand by subject hash. With SSL_CERT_FILE pointing at an empty
    file only that lookup remains: the same certificates are trusted, and memory is
    spent only on the CAs that the configured https origins actually chain to.

    Done only when SSL_CERT_FILE and SSL_CERT_DIR are unset or name the system's
    defaults (an operator's own bundle or directory is left alone), and the directory
    holds at least one hashed entry per certificate of the bundle (so no CA that the
    bundle trusts can be missing from it). Must run before aiohttp is imported.
    Returns whether it changed the environment.
    """
    paths = ssl.get_default_verify_paths()
    cafile, capath = paths.openssl_cafile, paths.openssl_capath
    for var, default in (("SSL_CERT_FILE", cafile), ("SSL_CERT_DIR", capath)):
        if var in env and os.path.realpath(env[var]) != os.path.realpath(default):
            return False
    try:
        hashed = sum(1 for p in Path(capath).iterdir() if _HASHED_CERT.fullmatch(p.name))
        with open(cafile, "rb") as f:
            bundle = sum(line.startswith(b"-----BEGIN CERTIFICATE-----") for line in f)
    except OSError:
        return False
    if bundle == 0 or hashed < bundle:
        return False
    env["SSL_CERT_FILE"] = os.devnull
    return True


def cmd_run(args: argparse.Namespace) -> int:
    lazy_ca_store()  # before agent.shell.runtime imports aiohttp
    # The dashboard's files go out with fixed content types (agent/shell/api/page.py), but
    # aiohttp's static-file handler reads the system's MIME table (/etc/mime.types,
    # ~0.3 MiB resident) at import; Python's built-in table stays.
    mimetypes.knownfiles = []
    from agent.shell.launch import launch  # gossip first; the heavy imports follow it
    from agent.shell.systemd import setup_logging

    path = resolve_config_path(args.config)
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    setup_logging(cfg.log.level)
    # systemd's watchdog ends a stuck agent with SIGABRT (WatchdogSignal=): faulthandler
    # then writes every thread's Python stack to stderr, the journal, so the kill says
    # what the event loop was doing instead of leaving only "Watchdog timeout".
    with contextlib.suppress(AttributeError, OSError, ValueError):  # stderr without an fd
        faulthandler.enable()
    try:
        asyncio.run(launch(cfg, path))
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as e:  # the last line of defence: say what happened, exit 1
        import logging

        logging.getLogger("agent").exception("edge-agent failed: %s", e)
        return EXIT_FAIL
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.path or args.config)
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    from agent.shell.preflight import file_problems

    problems = file_problems(cfg)
    if problems:
        print("\n".join(f"{path}: {p}" for p in problems), file=sys.stderr)
        return EXIT_USAGE
    n = len(cfg.origins)
    print(f"{path}: ok ({n} origin{'' if n == 1 else 's'}; the files it names are usable)")
    return EXIT_OK


def _fail(args: argparse.Namespace, target: Target | None, e: Exception) -> int:
    """An error that ends a client command: JSON on stdout under --json, else a line on
    stderr; exit 1 (2 for a config the command cannot use)."""
    code = EXIT_USAGE if isinstance(e, ClientConfigError) else EXIT_FAIL
    if getattr(args, "json", False):
        doc: dict[str, Any] = {
            "error": str(e),
            "api": target.api if target else None,
            "socket": target.socket if target else None,
        }
        if args.command == "status":
            doc["status"] = None
        print(json.dumps(doc, indent=2))
    else:
        print(f"edge-agent: {e}", file=sys.stderr)
    return code


def _status_origins(target: Target) -> list[dict[str, Any]]:
    """What status_text needs: every origin's verdict (a compact listing, so 100,000 origins
    stay a small answer), and the full view of the troubled ones it shows. An agent older
    than ?fields= sends full views at once, which serve as they are."""
    from urllib.parse import quote

    origins: list[dict[str, Any]] = _get(
        target, f"/v1/origins?fields=id,verdict&limit={PAGE}", LIST_TIMEOUT
    )
    shown = [o for o in origins if o.get("verdict") != "up"][:STATUS_ORIGIN_ROWS]
    full = {}
    for o in shown:
        if "spec" in o or not isinstance(o.get("id"), str):
            continue
        try:
            full[o["id"]] = _get(target, f"/v1/origins/{quote(o['id'], safe='')}")
        except ApiError as e:
            if e.status != 404:  # removed since the listing: shown by its verdict alone
                raise
    return [full.get(o.get("id"), o) for o in origins]


def cmd_status(args: argparse.Namespace) -> int:
    target = None
    try:
        target = _target(args)
        health = _get(target, "/v1/health")
        origins = (
            _get(target, f"/v1/origins?limit={PAGE}", LIST_TIMEOUT)
            if args.json
            else _status_origins(target)
        )
    except (ApiError, ClientConfigError) as e:
        return _fail(args, target, e)
    if args.json:
        print(json.dumps({"health": health, "origins": origins}, indent=2))
    else:
        print(status_text(health, origins))
    return EXIT_OK if health.get("status") in ("ok", "degraded") else EXIT_FAIL


def cmd_origins(args: argparse.Namespace) -> int:
    target = None
    try:
        target = _target(args)
        origins = _get(target, f"/v1/origins?limit={PAGE}", LIST_TIMEOUT)
        if args.mine and any("mine" not in o for o in origins):  # an agent without "mine"
            me = _get(target, "/v1/health")["node"]
            origins = [{**o, "mine": me in o.get("owners", [])} for o in origins]
    except (ApiError, ClientConfigError) as e:
        return _fail(args, target, e)
    if args.mine:
        origins = [o for o in origins if o.get("mine")]
    if args.json:
        print(json.dumps(origins, indent=2))
    elif origins:
        print(origins_table(origins))
    else:
        print("no origins checked by this node" if args.mine else "no origins")
    return EXIT_OK


def cmd_members(args: argparse.Namespace) -> int:
    target = None
    try:
        target = _target(args)
        members = _get(target, "/v1/members")
        me = None if args.json else _get(target, "/v1/health").get("node")
    except (ApiError, ClientConfigError) as e:
        return _fail(args, target, e)
    if args.json:
        print(json.dumps(members, indent=2))
        return EXIT_OK
    print(members_table(members, me))
    return EXIT_OK


def identify_text(answer: dict[str, Any], node: str | None, seconds: float) -> str:
    """What an identify answer means for whoever stands at the rack: whether anything
    will blink there (the answer's "leds": gpio, mock or none; absent for another node,
    whose LEDs this one cannot know)."""
    who = str(answer.get("node", node or "this node"))
    secs = float(answer.get("seconds", seconds))
    leds = answer.get("leds")
    if leds == "gpio":
        return f"{who}: blinking its identify pattern for {secs:g} s (all LEDs flashing)"
    if leds == "none":
        return (
            f"{who} has no LEDs enabled: nothing blinks (identify is on for {secs:g} s; "
            "`edge-agent status` and the dashboard show it)"
        )
    if leds == "mock":
        return (
            f"{who}: identify is on for {secs:g} s, but its LEDs are mock pins (no GPIO "
            "here): nothing blinks"
        )
    via = f" (sent by {answer['via']})" if answer.get("via") else ""
    return f"{who}: asked to blink its identify pattern for {secs:g} s{via}"


def cmd_identify(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"seconds": args.seconds}
    if args.node:
        body["node"] = args.node
    target = None
    try:
        target = _target(args)
        token = _api_token(args)
        answer = _request(target, "/v1/identify", body, token)
    except (ApiError, ClientConfigError) as e:
        return _fail(args, target, e)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(identify_text(answer, args.node, args.seconds))
    return EXIT_OK


# --- origin: add, rm, apply, export (issue 17) -----------------------------------------------


def _fleet_token(args: argparse.Namespace) -> str:
    """The fleet write token, which every change to the fleet's origins needs: from
    --token-file, else the config's [api] token_file. Missing, unreadable or empty is a
    ClientConfigError (exit 2): nothing is sent that the agent would refuse with a 401."""
    given = getattr(args, "token_file", None)
    if given:
        path, source = Path(given), "--token-file"
    else:
        cfg = _client_config(args, "fleet write token")
        where = resolve_config_path(args.config)
        if cfg is None and where.exists():  # there, but this user may not read it
            raise ClientConfigError(
                "changing the fleet's origins needs the fleet write token, from [api] "
                f"token_file of {where}, which this user cannot read: run with sudo, or pass "
                "--token-file FILE"
            )
        if cfg is None or cfg.api.token_file is None:
            raise ClientConfigError(
                "changing the fleet's origins needs the fleet write token, and there is none: "
                f"set [api] token_file in {where} (or name it with --config), or pass "
                "--token-file FILE"
            )
        path, source = cfg.api.token_file, "[api] token_file"
    try:
        token = path.read_text().strip()
    except UnicodeDecodeError:
        raise ClientConfigError(
            f"the fleet write token file {path} ({source}) is not text (not UTF-8)"
        ) from None
    except OSError as e:
        why = e.strerror or str(e)
        raise ClientConfigError(
            f"cannot read the fleet write token from {path} ({source}: {why}); "
            "run as a user who can (e.g. with sudo), or pass --token-file FILE"
        ) from None
    if not token:
        raise ClientConfigError(f"the fleet write token file {path} ({source}) is empty")
    return token


#: the flags of `origin add` that set an origin's keys (the key a problem names -> the flag)
ADD_FLAGS = {
    "id": "ID",
    "url": "URL",
    "interval": "--interval",
    "timeout": "--timeout",
    "rise": "--rise",
    "fall": "--fall",
    "down_interval": "--down-interval",
    "expect_status": "--expect-status",
    "expect_body": "--expect-body",
    "method": "--method",
    "headers": "--header",
    "tls_verify": "--no-tls-verify",
    "address": "--address",
    "fail_open": "--no-fail-open",
}


def add_body(args: argparse.Namespace) -> dict[str, Any]:
    """The origin `origin add` declares: the keys given, the config's defaults for the rest."""
    body: dict[str, Any] = {"id": args.id, "url": args.url}
    for key in ("interval", "timeout", "rise", "fall", "down_interval", "expect_body", "method"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.expect_status:
        codes: list[Any] = []
        for item in args.expect_status:
            for part in filter(None, (p.strip() for p in item.split(","))):
                codes.append(int(part) if part.isdigit() else part)
        body["expect_status"] = codes
    if args.header:
        body["headers"] = dict(args.header)
    if args.no_tls_verify:
        body["tls_verify"] = False
    if args.address is not None:
        body["address"] = args.address
    if args.no_fail_open:
        body["fail_open"] = False
    return body


def header_arg(text: str) -> tuple[str, str]:
    """``--header 'Name: value'``."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not 'Name: value'")
    return name.strip(), value.strip()


class _FileProblem(Exception):
    """The input cannot be used (a file, or an origin's keys): exit 2, nothing sent.
    ``errors`` holds one entry per bad element."""

    def __init__(self, message: str, errors: list[OriginProblem] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def _file_fail(args: argparse.Namespace, e: _FileProblem) -> int:
    if args.json:
        doc: dict[str, Any] = {"error": str(e)}
        if e.errors:
            doc["errors"] = [x.as_dict() for x in e.errors[:MAX_LISTED]]
        print(json.dumps(doc, indent=2))
    else:
        print(f"edge-agent: {e}", file=sys.stderr)
        for x in e.errors[:MAX_LISTED]:
            print(f"  {x.text()}", file=sys.stderr)
        if len(e.errors) > MAX_LISTED:
            print(f"  … and {len(e.errors) - MAX_LISTED:,} more", file=sys.stderr)
    return EXIT_USAGE


def _batch_refused(args: argparse.Namespace, target: Target | None, e: ApiError) -> int:
    """A 400 that lists bad elements: the file is at fault (exit 2), each one said."""
    doc = e.doc if isinstance(e.doc, dict) else {}
    raw = doc.get("errors")
    if e.status != 400 or not isinstance(raw, list):
        return _fail(args, target, e)
    errors = [from_api(x) for x in raw if isinstance(x, dict)]
    return _file_fail(args, _FileProblem(str(doc.get("error") or e), errors))


def cmd_origin_add(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from agent.domain import parse_origin

    body = add_body(args)
    try:
        parse_origin(body, where="origin")
    except ConfigError as e:
        return _file_fail(args, _FileProblem(_add_problems(e.problems)))
    target = None
    try:
        token = _fleet_token(args)
        target = _target(args)
        path = f"/v1/origins/{quote(args.id, safe='')}"
        reply = _call(target, "PUT", path, json.dumps(body).encode(), token)
    except (ApiError, ClientConfigError) as e:
        return _fail(args, target, e)
    if args.json:
        print(json.dumps(reply.doc, indent=2))
    else:
        print(f"{'added' if reply.status == 201 else 'updated'} {args.id}")
        _warn_not_durable(reply.doc)
    return EXIT_OK


def _add_problems(problems: list[str]) -> str:
    """The config's messages ("origin.interval: …") with the flag that set the key."""
    out = []
    for p in problems:
        key, _, message = p.removeprefix("origin.").partition(": ")
        out.append(f"{ADD_FLAGS.get(key.split('.')[0], key)}: {message}")
    return "; ".join(out)


def _warn_not_durable(answer: Any) -> None:
    if isinstance(answer, dict) and answer.get("durable") is False:
        print(
            "edge-agent: warning: the agent took the change but could not store it durably "
            "(its storage is faulted: `edge-agent status`); it spreads to the fleet, but this "
            "node may forget it at a restart",
            file=sys.stderr,
        )


def cmd_origin_rm(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    target = None
    try:
        token = _fleet_token(args)
        target = _target(args)
        path = f"/v1/origins/{quote(args.id, safe='')}"
        reply = _call(target, "DELETE", path, None, token)
    except ApiError as e:
        if e.status == 404:
            e = ApiError(f"no origin {args.id!r} in the fleet: nothing removed", 404, e.doc)
        elif e.status == 409:
            doc = e.doc if isinstance(e.doc, dict) else {}
            e = ApiError(
                f"{args.id} stays in the fleet: its API declaration is withdrawn, but "
                f"{doc.get('error') or 'node configs still declare it'}",
                409,
                e.doc,
            )
        return _fail(args, target, e)
    except ClientConfigError as e:
        return _fail(args, target, e)
    if args.json:
        print(json.dumps(reply.doc, indent=2))
    else:
        print(f"removed {args.id}")
        _warn_not_durable(reply.doc)
    return EXIT_OK


def read_catalogue(name: str) -> list[Any]:
    """The origins of an apply file (``-``: standard input), every element checked with
    the config's rules: a _FileProblem says all that is wrong, nothing is sent."""
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as e:
        raise _FileProblem(f"{name}: cannot read it ({e.strerror or e})") from None
    label = "standard input" if name == "-" else name
    suffix = Path(name).suffix.lower().lstrip(".")
    fmt = suffix if suffix in FORMATS else None
    try:
        elements = parse(data, label, fmt)
    except OriginFileError as e:
        raise _FileProblem(str(e)) from None
    # where each [[origin]] table starts, in a TOML file (check uses them only when there
    # is one per element)
    errors = check(elements, header_lines(data.decode("utf-8-sig")))
    if errors:
        bad = len({x.index for x in errors})
        raise _FileProblem(
            f"{label}: {bad} of {len(elements):,} origins are invalid; nothing was sent", errors
        )
    return elements


def diff_text(answer: dict[str, Any]) -> str:
    """An apply's answer as a diff: "+ id" added, "~ id" changed, "- id" removed, then the
    counts; an id some node's config still declares is said so (it stays in the fleet)."""
    lines = [f"+ {i}" for i in answer.get("added") or []]
    lines += [f"~ {i}" for i in answer.get("changed") or []]
    still: dict[str, list[str]] = {}
    for d in answer.get("still_declared") or []:
        if isinstance(d, dict) and isinstance(d.get("id"), str):
            still[d["id"]] = [str(n) for n in d.get("nodes") or []]
    for i in answer.get("removed") or []:
        if i in still:
            nodes = ", ".join(still[i]) or "some node"
            lines.append(f"- {i} (still declared in the config of {nodes}: it stays)")
        else:
            lines.append(f"- {i}")
    counts = (
        f"{len(answer.get('added') or [])} added, {len(answer.get('changed') or [])} changed, "
        f"{len(answer.get('removed') or [])} removed, {answer.get('unchanged', 0)} unchanged"
    )
    lines.append(counts)
    if answer.get("dry_run"):
        lines.append("(dry run: nothing applied)")
    return "\n".join(lines)


def cmd_origin_apply(args: argparse.Namespace) -> int:
    try:
        elements = read_catalogue(args.file)
        data = json.dumps(elements, separators=(",", ":")).encode()
        problem = limits_problem(len(elements), len(data))
        if problem is not None:
            raise _FileProblem(f"{args.file}: {problem}; nothing was sent")
    except _FileProblem as e:
        return _file_fail(args, e)
    target = None
    try:
        token = _fleet_token(args)
        target = _target(args)
        path = "/v1/origins?dry_run=1" if args.dry_run else "/v1/origins"
        reply = _call(target, "PUT", path, data, token, timeout=BATCH_TIMEOUT)
    except ApiError as e:
        if e.status == 405:  # an agent from before PUT /v1/origins
            e = ApiError(f"{e}: this agent is too old for `origin apply`; upgrade it", 405)
        return _batch_refused(args, target, e)
    except ClientConfigError as e:
        return _fail(args, target, e)
    if not isinstance(reply.doc, dict) or not isinstance(reply.doc.get("added"), list):
        return _fail(args, target, _not_agent(target, "/v1/origins"))
    if args.json:
        print(json.dumps(reply.doc, indent=2))
    else:
        print(diff_text(reply.doc))
        _warn_not_durable(reply.doc)
    return EXIT_OK


def cmd_origin_export(args: argparse.Namespace) -> int:
    fmt = "json" if args.json else args.format
    target = None
    try:
        target = _target(args)
        origins = _get(target, f"/v1/catalogue?limit={PAGE}", LIST_TIMEOUT)
        if fmt == "json":
            text = to_json(origins)
        else:
            n = len(origins)
            text = to_toml(
                origins,
                f"{n:,} origin{'' if n == 1 else 's'} declared through the API "
                "(edge-agent origin export)\n"
                "`edge-agent origin apply FILE` makes the fleet's set exactly this",
            )
    except ExportError as e:
        return _fail(args, target, ApiError(f"{e}: TOML cannot hold it; use --format json"))
    except ApiError as e:
        if e.status == 404:  # an agent from before GET /v1/catalogue
            e = ApiError(f"{e}: this agent is too old for `origin export`; upgrade it", 404)
        return _fail(args, target, e)
    except ClientConfigError as e:
        return _fail(args, target, e)
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode())  # UTF-8, as TOML is, whatever the locale
    return EXIT_OK


# --- haproxy-config (issue 18) ---------------------------------------------------------------


def _haproxy_name(text: str) -> str:
    if not NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a HAProxy name (letters, digits, '.', '_', ':', '-'; max 64)"
        )
    return text


def _haproxy_time(text: str) -> str:
    if not INTER_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a HAProxy time (a number and a unit: 500ms, 2s, 1m)"
        )
    return text


def _agent_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1..65535)")
    return int(text)


def _agent_address(args: argparse.Namespace) -> HostPort:
    """--agent-addr/--agent-port, else the config's [lb] agent_listen (a wildcard host
    reaches no one: then --agent-addr is needed)."""
    addr, port = args.agent_addr, args.agent_port
    if addr is None or port is None:
        cfg = _client_config(args, "agent-check address")
        listen = cfg.lb.agent_listen if cfg is not None else None
        if listen is None:
            raise ClientConfigError(
                "give --agent-addr and --agent-port: the config has no [lb] agent_listen "
                "(docs/load-balancers.md)"
            )
        if addr is None and listen.host in ("0.0.0.0", "::", ""):
            raise ClientConfigError(
                f"give --agent-addr: [lb] agent_listen = {str(listen)!r} listens on every "
                "address, so which one HAProxy should ask is yours to say"
            )
        addr = addr if addr is not None else listen.host
        port = port if port is not None else listen.port
    return HostPort(addr, port)


def cmd_haproxy_config(args: argparse.Namespace) -> int:
    target = None
    try:
        agent = _agent_address(args)
        target = _target(args)
        origins = _get(target, f"/v1/origins?fields=id,spec&limit={PAGE}", LIST_TIMEOUT)
    except (ApiError, ClientConfigError) as e:
        return _fail(args, target, e)
    source = target.api or target.socket or "the agent"
    n = len(origins)
    text, skipped = backend_text(
        origins,
        backend=args.backend,
        agent=agent,
        inter=args.inter,
        source=f"{n:,} origin{'' if n == 1 else 's'} of the fleet, as {source} knows them",
    )
    for line in skipped:
        print(f"edge-agent: left out: {line}", file=sys.stderr)
    sys.stdout.write(text)
    return EXIT_OK


def _seconds(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if not 1 <= n <= 3600:
        raise argparse.ArgumentTypeError(f"{n} is not between 1 and 3600")
    return n


def cmd_keygen(args: argparse.Namespace) -> int:
    from agent.membership import generate_key

    print(generate_key())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    # The demo lives in the harness (harness/ in the repository), which a Pi's install
    # leaves out: it brings an origin farm, network namespaces and nftables with it.
    try:
        from edge_harness.demo import run_demo
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != "edge_harness":
            raise  # the harness is there but broken: show the real error
        print(
            "edge-agent: the demo runs from a clone of the repository, not from an installed "
            "node: run `make demo` there (it installs the harness, harness/, into .venv)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return run_demo(api_port=args.port)


# --- self-update (issue 22) -------------------------------------------------------------------


def cmd_self_update(args: argparse.Namespace) -> int:
    """Install a release from a wheel, keep the previous one, roll back if it is not healthy
    (agent/shell/selfupdate.py; docs/self-update.md). Exit codes are its own (see --help)."""
    from agent.shell import selfupdate as su

    try:
        target = _target(args)
    except ClientConfigError as e:
        print(f"edge-agent: {e}", file=sys.stderr)
        return su.EXIT_UNCHANGED
    target.socket_failed = None

    def probe() -> su.Snapshot:
        target.socket_failed = None  # the agent restarts: its socket comes back
        try:
            health = _call(target, "GET", "/v1/health", timeout=3).doc
            members = _call(target, "GET", "/v1/members", timeout=3).doc
        except ApiError as e:
            return su.Snapshot(error=str(e))
        if not isinstance(health, dict) or not isinstance(members, list):
            return su.Snapshot(error="not an answer edge-agent understands")
        alive = frozenset(
            str(m.get("name")) for m in members if isinstance(m, dict) and m.get("state") == "alive"
        )
        return su.Snapshot(health, alive)

    config = Path(args.config) if args.config else resolve_config_path(None)
    opts = su.Options(
        source=args.source or "",
        home=Path(args.home),
        deadline=args.deadline,
        restart_command=args.restart_command,
        find_links=args.find_links or [],
        sha256=args.sha256,
        config=config,
        python=args.python,
    )
    say = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
    updater = su.Updater(opts, probe, say)
    if args.rollback:
        out = updater.rollback()
    elif not args.source:
        print("edge-agent self-update: give a wheel (path or URL), or --rollback", file=sys.stderr)
        return su.EXIT_UNCHANGED
    else:
        out = updater.run()
    if args.json:
        print(out.as_json())
    elif out.code != su.EXIT_OK:
        print(f"edge-agent: {out.message}", file=sys.stderr)
    return out.code


SELF_UPDATE_HELP = """\
install a new release of the agent from a wheel (a path or an http(s) URL) into a venv of
its own beside the running one, switch /opt/edge-agent/venv to it, restart the agent, and
go back to the previous release if the new one is not healthy in time (docs/self-update.md)."""
SELF_UPDATE_CODES = """exit status:
  0  ok: updated, already running that release, or --rollback done
  1  runtime error: the new release was not healthy in time; rolled back, the previous runs
  2  usage or config error, or nothing changed: bad wheel, download, install or config
     check, or another update running
  3  rolled back, but the previous release is not healthy either: look at the node"""


class UsageError(Exception):
    """A command line argparse refuses: main says it (as JSON under --json), exit 2."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    """argparse, whose errors main reports (so --json can have them as JSON)."""

    def error(self, message: str) -> Any:  # argparse's is NoReturn
        raise UsageError(self, message)


CONFIG_HELP = (
    "the agent's config file (default: $EDGE_AGENT_CONFIG, else /etc/edge-agent/agent.toml)"
)
API_HELP = (
    "reach the agent over TCP only, at this address: http(s)://host:port or host:port "
    "(default: its socket first, then the config's [api] listen, 127.0.0.1:8080 when "
    "there is no config file)"
)
SOCKET_HELP = (
    "reach the agent over this Unix socket only (default: the config's [api] socket "
    "first, then TCP; docs/config.md says where it is)"
)
JSON_HELP = 'print JSON (errors too: an object with "error"), for scripts'


ORIGIN_HELP = (
    "The fleet's origins declared through the API (those of node configs are the configs'). "
    "Changes need the fleet write token: [api] token_file of the config, or --token-file. "
    "docs/catalogue.md shows how to import a catalogue."
)
APPLY_HELP = (
    "make the fleet's API-declared origins exactly those of FILE (TOML [[origin]] tables, "
    "or JSON); prints the diff: + added, ~ changed, - removed"
)
EXPORT_HELP = (
    "print the fleet's API-declared origins as a file `origin apply` takes "
    "(export | apply changes nothing)"
)
TOKEN_FILE_HELP = "the fleet write token's file (default: the config's [api] token_file)"


HAPROXY_HELP = """\
print a HAProxy backend section for every origin of the fleet: one server per origin, at
its `address` (else its check URL's host:port), with `check agent-check` pointed at the
agent-check port of a node ([lb] agent_listen), so HAProxy routes by the fleet's verdict.
See docs/load-balancers.md."""


def build_parser() -> argparse.ArgumentParser:
    common: dict[str, Any] = {
        "epilog": EXIT_CODES,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
    p = Parser(
        prog="edge-agent",
        description="A fleet of Pis that agree on which origins are up.",
        **common,
    )
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--api", type=api_address, help=API_HELP)
    p.add_argument("--socket", type=socket_path, help=SOCKET_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def here(s: argparse.ArgumentParser, *options: str) -> None:
        """The global options, also accepted after the command."""
        for option, kind, text in (
            ("--config", str, CONFIG_HELP),
            ("--api", api_address, API_HELP),
            ("--socket", socket_path, SOCKET_HELP),
        ):
            if option in options:
                s.add_argument(
                    option,
                    dest=option[2:],
                    type=kind,
                    default=argparse.SUPPRESS,
                    help=text,
                )

    s = sub.add_parser("run", help="run the agent in the foreground (systemd runs this)", **common)
    here(s, "--config")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check-config", help="validate a config file without starting", **common)
    s.add_argument("path", nargs="?", help="the file (default: as for run)")
    here(s, "--config")
    s.set_defaults(func=cmd_check_config)

    clients = {}
    for name, fn, text in (
        ("status", cmd_status, "this node, its cluster, origins, storage and LEDs at a glance"),
        ("origins", cmd_origins, "every origin with its verdict, owners and latency"),
        ("members", cmd_members, "the cluster's members as this node sees them"),
        ("identify", cmd_identify, "make a node blink its LEDs so you can find it"),
    ):
        s = clients[name] = sub.add_parser(name, help=text, description=text, **common)
        s.add_argument("--json", action="store_true", help=JSON_HELP)
        here(s, "--api", "--socket", "--config")
        s.set_defaults(func=fn)
    clients["origins"].add_argument(
        "--mine", action="store_true", help="only the origins this node checks"
    )
    clients["identify"].add_argument(
        "--node", help="the node to blink, anywhere in the cluster (default: this one)"
    )
    clients["identify"].add_argument(
        "--seconds", type=_seconds, default=30, help="how long, 1..3600 (default 30)"
    )

    origin = sub.add_parser(
        "origin",
        help="add, remove, apply or export the origins declared through the API",
        description=ORIGIN_HELP,
        **common,
    )

    def no_origin_command(args: argparse.Namespace) -> int:
        e = UsageError(origin, "name a command: add, rm, apply or export")
        return _usage_error(e, False)

    origin.set_defaults(func=no_origin_command)
    osub = origin.add_subparsers(dest="origin_command", metavar="COMMAND")
    writes = {}
    for name, fn, text in (
        ("add", cmd_origin_add, "declare one origin (or replace its spec) for the whole fleet"),
        ("rm", cmd_origin_rm, "remove one origin from the fleet (its API declaration)"),
        ("apply", cmd_origin_apply, APPLY_HELP),
        ("export", cmd_origin_export, EXPORT_HELP),
    ):
        s = writes[name] = osub.add_parser(name, help=text, description=text, **common)
        s.add_argument("--json", action="store_true", help=JSON_HELP)
        here(s, "--api", "--socket", "--config")
        if name != "export":
            s.add_argument("--token-file", metavar="FILE", help=TOKEN_FILE_HELP)
        s.set_defaults(func=fn, command=f"origin {name}")
    s = writes["add"]
    s.add_argument("id", metavar="ID", help="the origin's id (letters, digits, '.', '_', '-')")
    s.add_argument("url", metavar="URL", help="http://…, https://… or tcp://host:port")
    for flag, text in (
        ("--interval", "time between checks, e.g. 10s (default 10s)"),
        ("--timeout", "a check's time limit, e.g. 2s (default 2s, at most the interval)"),
        ("--down-interval", "time between checks while it is down (default: the interval)"),
        ("--expect-body", "text the answer's body must contain"),
        ("--method", "GET, HEAD, POST, PUT or OPTIONS (default GET)"),
    ):
        s.add_argument(flag, help=text)
    s.add_argument("--rise", type=int, help="passing checks before up (default 2)")
    s.add_argument("--fall", type=int, help="failing checks before down (default 3)")
    s.add_argument(
        "--expect-status",
        action="append",
        metavar="CODES",
        help="status codes that pass, e.g. 200,204 or 2xx (default 200; repeatable)",
    )
    s.add_argument(
        "--header",
        action="append",
        type=header_arg,
        metavar="'NAME: VALUE'",
        help="a header to send with each check (repeatable)",
    )
    s.add_argument(
        "--no-tls-verify", action="store_true", help="accept any certificate (https only)"
    )
    s.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="where load balancers send its traffic, if not the URL's host:port",
    )
    s.add_argument(
        "--no-fail-open",
        action="store_true",
        help="load balancers are told down (not up) while the verdict is unknown or disputed",
    )
    writes["rm"].add_argument("id", metavar="ID", help="the origin's id")
    s = writes["apply"]
    s.add_argument("file", metavar="FILE", help="a .toml or .json file; - reads standard input")
    s.add_argument(
        "--dry-run", action="store_true", help="show what would change, and change nothing"
    )
    writes["export"].add_argument(
        "--format", choices=FORMATS, default="toml", help="toml (default) or json"
    )

    text = "print a HAProxy backend whose servers ask this fleet's agent-check port"
    s = sub.add_parser("haproxy-config", help=text, description=HAPROXY_HELP, **common)
    here(s, "--api", "--socket", "--config")
    s.add_argument("--backend", type=_haproxy_name, default="edge-agent", help="the backend's name")
    s.add_argument(
        "--agent-addr",
        help="the address HAProxy asks (default: the host of the config's [lb] agent_listen)",
    )
    s.add_argument(
        "--agent-port",
        type=_agent_port,
        help="the port HAProxy asks (default: the port of [lb] agent_listen)",
    )
    s.add_argument("--inter", type=_haproxy_time, default="2s", help="agent-inter (default 2s)")
    s.set_defaults(func=cmd_haproxy_config)

    s = sub.add_parser(
        "self-update",
        help="install a new release from a wheel, with an automatic rollback",
        description=SELF_UPDATE_HELP,
        epilog=SELF_UPDATE_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("source", nargs="?", metavar="WHEEL", help="an edge_agent-*.whl path or URL")
    s.add_argument("--rollback", action="store_true", help="go back to the previous release")
    s.add_argument("--sha256", help="the wheel's expected sha256")
    s.add_argument(
        "--find-links",
        action="append",
        metavar="DIR",
        help="where newer dependencies' wheels are (repeatable; the wheel's own directory "
        "is always searched)",
    )
    s.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="seconds the new release has to be healthy (default 120)",
    )
    s.add_argument("--home", default="/opt/edge-agent", help="where venv and releases/ are")
    s.add_argument(
        "--restart-command",
        default="systemctl restart edge-agent",
        help="how to restart the agent (default: systemctl restart edge-agent)",
    )
    s.add_argument("--python", help="the Python for new venvs (default: the running venv's)")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    here(s, "--api", "--socket", "--config")
    s.set_defaults(func=cmd_self_update)

    s = sub.add_parser(
        "keygen", help="print a new gossip encryption key (as `serf keygen`)", **common
    )
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser(
        "demo", help="run a local demo: an agent checking an origin farm it serves", **common
    )
    s.add_argument("--port", type=int, default=8080, help="API/status page port (default 8080)")
    s.set_defaults(func=cmd_demo)
    return p


def _usage_error(e: UsageError, as_json: bool) -> int:
    if as_json:
        doc = {"error": f"{e.parser.prog}: {e.message}", "usage": e.parser.format_usage().strip()}
        print(json.dumps(doc, indent=2))
    else:
        e.parser.print_usage(sys.stderr)
        print(f"{e.parser.prog}: error: {e.message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except UsageError as e:
            return _usage_error(e, "--json" in argv)
        if not getattr(args, "command", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        try:
            rc: int = args.func(args)
        except ClientConfigError as e:
            print(f"edge-agent: {e}", file=sys.stderr)
            return EXIT_USAGE
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`edge-agent origins | head -3`): it had what it wanted.
        # Point stdout at /dev/null so the interpreter's own final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
