"""The `edge-agent` command.

Exit codes: 0 ok, 1 runtime failure (agent unreachable, crashed), 2 bad usage or
invalid config. Client commands (status, origins) talk to the local agent's API:
--api URL, else the [api] listen address of the config, else 127.0.0.1:8080.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from agent import __version__
from agent.config import ConfigError, load_config, resolve_config_path

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


# --- helpers --------------------------------------------------------------------------------


def _api_base(args: argparse.Namespace) -> str:
    if args.api:
        return str(args.api).rstrip("/")
    path = resolve_config_path(args.config)
    listen = "127.0.0.1:8080"
    if path.exists():
        try:
            cfg = load_config(path)
            host = cfg.api.listen.host
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            listen = (
                f"[{host}]:{cfg.api.listen.port}"
                if ":" in host
                else f"{host}:{cfg.api.listen.port}"
            )
        except ConfigError:
            pass
    return f"http://{listen}"


class ApiError(Exception):
    pass


def _get(base: str, path: str) -> Any:
    # imported here, not at the top: `edge-agent run` never needs an HTTP client library
    # and urllib.request (with email.*) costs the long-running agent ~1 MiB
    import urllib.error
    import urllib.request

    url = base + path
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
        except (ValueError, OSError):
            body = None
        if isinstance(body, dict) and "status" in body and path == "/v1/health":
            return body  # 503 still carries the health document
        msg = body.get("error") if isinstance(body, dict) else e.reason
        raise ApiError(f"{url}: {e.code} {msg}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ApiError(f"cannot reach the agent at {base} ({reason}); is it running?") from None
    except ValueError:
        raise ApiError(f"{url}: the answer is not JSON") from None


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Aligned columns for a terminal; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for r in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, str(r[-1])]).rstrip())
    return "\n".join(lines)


def origins_table(origins: list[dict[str, Any]]) -> str:
    rows = []
    for o in origins:
        obs = o["observations"][0] if o["observations"] else {}
        lat = obs.get("latency_ms")
        rows.append(
            [
                o["id"],
                o["verdict"],
                "" if lat is None else f"{lat:.0f}ms",
                ",".join(o["owners"]),
                o["spec"]["url"],
                obs.get("reason", ""),
            ]
        )
    return table(rows, ["ORIGIN", "VERDICT", "LATENCY", "OWNERS", "TARGET", "LAST CHECK"])


# --- commands -------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from agent.runtime import Agent
    from agent.systemd import setup_logging

    path = resolve_config_path(args.config)
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    setup_logging(cfg.log.level)
    try:
        asyncio.run(Agent(cfg, path).run())
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
    print(f"{path}: ok ({len(cfg.origins)} origins)")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    base = _api_base(args)
    try:
        health = _get(base, "/v1/health")
        origins = _get(base, "/v1/origins")
    except ApiError as e:
        print(f"edge-agent: {e}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps({"health": health, "origins": origins}, indent=2))
        return EXIT_OK
    print(f"node     {health['node']}  (edge-agent {health['version']})")
    print(f"status   {health['status']}")
    for r in health.get("reasons", []):
        print(f"         - {r}")
    print(f"origins  {health.get('summary', '')}")
    down = [o for o in origins if o["verdict"] != "up"]
    if down:
        print()
        print(origins_table(down))
    return EXIT_OK if health["status"] in ("ok", "degraded") else EXIT_FAIL


def cmd_origins(args: argparse.Namespace) -> int:
    base = _api_base(args)
    try:
        origins = _get(base, "/v1/origins")
    except ApiError as e:
        print(f"edge-agent: {e}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps(origins, indent=2))
    elif origins:
        print(origins_table(origins))
    else:
        print("no origins")
    return EXIT_OK


def cmd_members(args: argparse.Namespace) -> int:
    base = _api_base(args)
    try:
        members = _get(base, "/v1/members")
    except ApiError as e:
        print(f"edge-agent: {e}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps(members, indent=2))
        return EXIT_OK
    rows = [
        [
            m["name"],
            f"{m['addr']}:{m['port']}",
            m["state"],
            str(m["incarnation"]),
            ",".join(f"{k}={v}" for k, v in sorted(m["tags"].items())),
        ]
        for m in members
    ]
    print(table(rows, ["NAME", "ADDRESS", "STATE", "INC", "TAGS"]))
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from agent.membership.keyring import generate_key

    print(generate_key())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(api_port=args.port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-agent",
        description="A fleet of Pis that agree on which origins are up.",
    )
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    p.add_argument(
        "--config", help="config file (default: $EDGE_AGENT_CONFIG or /etc/edge-agent/agent.toml)"
    )
    p.add_argument("--api", help="the agent's API for client commands (default: from the config)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("run", help="run the agent in the foreground (systemd runs this)")
    s.add_argument("--config", dest="config", default=argparse.SUPPRESS)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check-config", help="validate a config file without starting")
    s.add_argument("path", nargs="?", help="the file (default: as for run)")
    s.set_defaults(func=cmd_check_config)

    for name, fn, text in (
        ("status", cmd_status, "this node and its origins at a glance"),
        ("origins", cmd_origins, "every origin with its verdict"),
        ("members", cmd_members, "the cluster's members as this node sees them"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--json", action="store_true", help="machine-readable output")
        s.add_argument("--api", dest="api", default=argparse.SUPPRESS)
        s.set_defaults(func=fn)

    s = sub.add_parser("keygen", help="print a new gossip encryption key (as `serf keygen`)")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("demo", help="run a local demo: an agent checking an origin farm it serves")
    s.add_argument("--port", type=int, default=8080, help="API/status page port (default 8080)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
