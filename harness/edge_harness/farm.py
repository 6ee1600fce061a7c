"""The origin farm: one small aiohttp server that plays many fake origins.

``edge-agent demo`` and the benchmarks point their origins at it. Origin ``ID`` lives at
``GET|HEAD /o/ID`` and answers according to its behaviour:

=================  ======================================================================
``up``             200 ``ok``
``down``           500 ``down``
``slow[:S]``       200 ``ok`` after S seconds (default: the farm's ``slow_delay``)
``flap[:P]``       up for the first half of every period of P seconds, down for the second
                   (default: the farm's ``flap_period``); the phase is derived from the id
                   and the farm's start time, so every farm process agrees
``wrongbody``      200 with a body that is not ``ok``
=================  ======================================================================

Behaviours can be changed at run time (single-process farms only, since the state lives
in the process that serves the request)::

    POST /control/ID?mode=down      # one origin; mode=reset restores its start behaviour
    POST /control?mode=down         # the default, for every origin without its own
    GET  /control/ID                # {"id": ..., "mode": ...}
    GET  /stats                     # {"requests": ..., "pid": ...}
    POST /hook, GET /hooks          # a webhook receiver for edge-agent's [[webhook]], and
                                    # what it received (per process: use --processes 1)

``python -m edge_harness.farm --port P --count N --processes K`` serves origins ``0`` .. ``N-1``
from K processes sharing one port with SO_REUSEPORT, so the farm is not what limits a
benchmark. It prints one line, ``farm ready: port=P ...``, once every process listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import signal
import socket
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

MODES = ("up", "down", "slow", "flap", "wrongbody")
DEFAULT_SLOW_DELAY = 3.0  # longer than the default 2 s check timeout: "slow" means "times out"
DEFAULT_FLAP_PERIOD = 20.0

_OK = b"ok"
_DOWN = b"down"
_WRONG = b"unexpected body"


@dataclass(frozen=True, slots=True)
class Behaviour:
    """A mode and its optional parameter: seconds of delay (slow) or of period (flap)."""

    mode: str
    param: float | None = None

    @classmethod
    def parse(cls, text: str) -> Behaviour:
        """Parse "up", "slow", "slow:0.5", "flap:10"...; ValueError names what is wrong."""
        mode, sep, arg = text.strip().partition(":")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
        if not sep:
            return cls(mode)
        if mode not in ("slow", "flap"):
            raise ValueError(f"mode {mode!r} takes no parameter")
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"{arg!r} is not a number of seconds") from None
        if not 0 <= value < 86400 or (mode == "flap" and value == 0):
            raise ValueError(f"{arg!r} is out of range")
        return cls(mode, value)

    def __str__(self) -> str:
        return self.mode if self.param is None else f"{self.mode}:{self.param:g}"


class FarmState:
    """Which origins exist and how each answers; no I/O (the clock is passed in)."""

    def __init__(
        self,
        behaviours: Mapping[str, str | Behaviour] | None = None,
        *,
        default: str | Behaviour = "up",
        count: int | None = None,
        slow_delay: float = DEFAULT_SLOW_DELAY,
        flap_period: float = DEFAULT_FLAP_PERIOD,
        epoch: float = 0.0,
    ) -> None:
        self.initial = {k: _behaviour(v) for k, v in (behaviours or {}).items()}
        self.current = dict(self.initial)
        self.default = _behaviour(default)
        self.count = count
        self.slow_delay = slow_delay
        self.flap_period = flap_period
        self.epoch = epoch

    def behaviour(self, oid: str) -> Behaviour | None:
        """The origin's behaviour, or None if the farm has no such origin."""
        b = self.current.get(oid)
        if b is not None:
            return b
        if self.count is None or _index(oid) < self.count:
            return self.default
        return None

    def set(self, oid: str, mode: str) -> Behaviour:
        """Set one origin's behaviour; "reset" restores the one it started with."""
        if mode == "reset":
            if oid in self.initial:
                self.current[oid] = self.initial[oid]
            else:
                self.current.pop(oid, None)
            return self.current.get(oid, self.default)
        b = self.current[oid] = Behaviour.parse(mode)
        return b

    def set_default(self, mode: str) -> Behaviour:
        self.default = Behaviour.parse(mode)
        return self.default

    def answer(self, oid: str, now: float) -> tuple[int, bytes, float]:
        """(status, body, seconds to wait before answering) for a request at ``now``."""
        b = self.behaviour(oid)
        if b is None:
            return 404, b"no such origin", 0.0
        mode = b.mode
        if mode == "up":
            return 200, _OK, 0.0
        if mode == "down":
            return 500, _DOWN, 0.0
        if mode == "slow":
            return 200, _OK, self.slow_delay if b.param is None else b.param
        if mode == "flap":
            return (200, _OK, 0.0) if self.flap_up(oid, now, b.param) else (500, _DOWN, 0.0)
        return 200, _WRONG, 0.0  # wrongbody

    def flap_up(self, oid: str, now: float, period: float | None = None) -> bool:
        """Whether a flapping origin is up at ``now``: up, then down, each half a period."""
        p = self.flap_period if period is None else period
        phase = (zlib.crc32(oid.encode()) % 1000) / 1000 * p
        return int((now - self.epoch + phase) // (p / 2)) % 2 == 0


def _index(oid: str) -> float:
    """The number a canonical decimal id ("0", "17") stands for; infinity for others."""
    if 0 < len(oid) <= 12 and oid.isascii() and oid.isdigit() and (oid == "0" or oid[0] != "0"):
        return int(oid)
    return math.inf


def _behaviour(v: str | Behaviour) -> Behaviour:
    return v if isinstance(v, Behaviour) else Behaviour.parse(v)


def make_app(
    state: FarmState,
    *,
    clock: Callable[[], float] = time.monotonic,
    control: bool = True,
) -> web.Application:
    """The farm's aiohttp application. With control=False, /control answers 409."""
    counter = [0]

    async def origin(request: web.Request) -> web.StreamResponse:
        counter[0] += 1
        status, body, delay = state.answer(request.match_info["id"], clock())
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, body=body, content_type="text/plain")

    async def by_host(request: web.Request) -> web.StreamResponse:
        """GET /healthz: the origin named by the first label of the Host header, so
        virtual hosts (www.shop.lan, api.shop.lan) pointed at the farm by name are origins
        of their own with a health path a real site would have (docs/operator-guide.md)."""
        host = (request.host or "").rsplit(":", 1)[0] if "]" not in (request.host or "") else ""
        label = host.split(".", 1)[0]
        if not label:
            raise web.HTTPBadRequest(text="no Host header to name the origin\n")
        counter[0] += 1
        status, body, delay = state.answer(label, clock())
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, body=body, content_type="text/plain")

    def _reply(oid: str | None, b: Behaviour) -> web.Response:
        return web.json_response({"id": oid, "mode": str(b)})

    def _check_control() -> None:
        if not control:
            raise web.HTTPConflict(text="control needs a single-process farm (--processes 1)\n")

    async def set_one(request: web.Request) -> web.Response:
        _check_control()
        oid = request.match_info["id"]
        try:
            b = state.set(oid, request.query.get("mode", ""))
        except ValueError as e:
            raise web.HTTPBadRequest(text=f"{e}\n") from None
        return _reply(oid, b)

    async def set_default(request: web.Request) -> web.Response:
        _check_control()
        try:
            b = state.set_default(request.query.get("mode", ""))
        except ValueError as e:
            raise web.HTTPBadRequest(text=f"{e}\n") from None
        return _reply(None, b)

    async def get_one(request: web.Request) -> web.Response:
        oid = request.match_info["id"]
        b = state.behaviour(oid)
        if b is None:
            raise web.HTTPNotFound(text="no such origin\n")
        return _reply(oid, b)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": counter[0], "pid": os.getpid()})

    hooks: list[dict[str, Any]] = []  # webhook deliveries received (demos and tests)

    async def hook(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="not JSON\n") from None
        hooks.append({"body": body, "event": request.headers.get("X-Edge-Agent-Event", "")})
        del hooks[:-1000]
        return web.json_response({"ok": True})

    async def hook_list(request: web.Request) -> web.Response:
        return web.json_response(hooks)

    app = web.Application()
    app.router.add_get("/o/{id}", origin)  # also HEAD
    app.router.add_get("/healthz", by_host)  # the origin named by the Host header
    app.router.add_post("/control/{id}", set_one)
    app.router.add_get("/control/{id}", get_one)
    app.router.add_post("/control", set_default)
    app.router.add_get("/stats", stats)
    app.router.add_post("/hook", hook)  # a webhook receiver: POST /hook, GET /hooks
    app.router.add_get("/hooks", hook_list)
    return app


class Farm:
    """A running farm: its ports, its state (change it with set / set_default), close()."""

    def __init__(self, runner: web.AppRunner, state: FarmState, host: str, ports: list[int]):
        self.runner = runner
        self.state = state
        self.host = host
        self.ports = ports

    @property
    def port(self) -> int:
        return self.ports[0]

    def url(self, oid: str | int, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/o/{oid}"

    def set(self, oid: str, mode: str) -> Behaviour:
        return self.state.set(oid, mode)

    def set_default(self, mode: str) -> Behaviour:
        return self.state.set_default(mode)

    async def close(self) -> None:
        await self.runner.cleanup()

    async def __aenter__(self) -> Farm:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_farm(
    host: str = "127.0.0.1",
    ports: int | Sequence[int] = 0,
    behaviours: Mapping[str, str | Behaviour] | None = None,
    *,
    default: str | Behaviour = "up",
    count: int | None = None,
    slow_delay: float = DEFAULT_SLOW_DELAY,
    flap_period: float = DEFAULT_FLAP_PERIOD,
    epoch: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    control: bool = True,
    reuse_port: bool = False,
) -> Farm:
    """Serve the farm on ``host`` at each of ``ports`` (0 = any free port).

    ``behaviours`` maps origin ids to modes ("down", "slow:0.5", ...); other ids get
    ``default``. With ``count``, only ids ``0``..``count-1`` and those in ``behaviours``
    exist; others answer 404. ``epoch`` (default: now, on ``clock``) anchors flapping.
    """
    state = FarmState(
        behaviours,
        default=default,
        count=count,
        slow_delay=slow_delay,
        flap_period=flap_period,
        epoch=clock() if epoch is None else epoch,
    )
    runner = web.AppRunner(
        make_app(state, clock=clock, control=control),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,  # a client that gave up on a slow origin frees its handler
        shutdown_timeout=0.5,  # fake origins have nothing worth draining
    )
    await runner.setup()
    try:
        for p in [ports] if isinstance(ports, int) else list(ports):
            site = web.TCPSite(runner, host, p, reuse_port=reuse_port or None, backlog=1024)
            await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return Farm(runner, state, host, [addr[1] for addr in runner.addresses])


# --- python -m edge_harness.farm ------------------------------------------------------------------


def _serve_forever(opts: dict[str, Any], ready: Any = None) -> None:
    """Run one farm process until SIGTERM/SIGINT; put its pid on ``ready`` once it listens."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        farm = await start_farm(**opts)
        if ready is not None:
            ready.put((os.getpid(), farm.port))
            watchdog = asyncio.create_task(_exit_with_parent(os.getppid(), stop))
        else:
            _announce(farm.host, farm.port, [os.getpid()])
        try:
            await stop.wait()
        finally:
            await farm.close()
            if ready is not None:
                watchdog.cancel()

    asyncio.run(run())


async def _exit_with_parent(parent: int, stop: asyncio.Event) -> None:
    """A worker must not outlive its parent, even one killed with SIGKILL."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


def _announce(host: str, port: int, pids: list[int]) -> None:
    h = f"[{host}]" if ":" in host else host
    pid_list = ",".join(map(str, pids))
    print(
        f"farm ready: port={port} processes={len(pids)} pids={pid_list} url=http://{h}:{port}/o/ID",
        flush=True,
    )


def _reserve_port(host: str) -> socket.socket:
    """Bind (not listen) a SO_REUSEPORT socket on a free port, so K processes can share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, 0))
    return s


def _run_processes(opts: dict[str, Any], processes: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    reserved = None
    if opts["ports"] == 0:
        reserved = _reserve_port(opts["host"])
        opts["ports"] = reserved.getsockname()[1]
    opts["reuse_port"] = True
    opts["control"] = False
    ready = ctx.Queue()
    procs = [
        ctx.Process(target=_serve_forever, args=(opts, ready), daemon=True)
        for _ in range(processes)
    ]
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for p in procs:
            p.start()
        pids = []
        for _ in procs:
            pid, port = ready.get(timeout=30)
            pids.append(pid)
        if reserved is not None:
            reserved.close()
        _announce(opts["host"], port, pids)
        while not stopping and all(p.is_alive() for p in procs):
            time.sleep(0.2)
        failed = not stopping
        if failed:
            print("farm: a worker process died", file=sys.stderr)
        return 1 if failed else 0
    finally:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edge_harness.farm", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    ap.add_argument("--count", type=int, default=None, help="serve origins 0..N-1 (default: any)")
    ap.add_argument("--processes", type=int, default=1, help="processes sharing the port")
    ap.add_argument("--default", default="up", help="behaviour of origins not named by --mode")
    ap.add_argument(
        "--mode", action="append", default=[], metavar="ID=MODE", help="one origin's behaviour"
    )
    ap.add_argument("--slow-delay", type=float, default=DEFAULT_SLOW_DELAY)
    ap.add_argument("--flap-period", type=float, default=DEFAULT_FLAP_PERIOD)
    args = ap.parse_args(argv)
    behaviours: dict[str, Behaviour] = {}
    try:
        for item in args.mode:
            oid, sep, mode = item.partition("=")
            if not sep or not oid:
                raise ValueError(f"--mode {item!r}: expected ID=MODE")
            behaviours[oid] = Behaviour.parse(mode)
        default = Behaviour.parse(args.default)
        if args.processes < 1 or (args.count is not None and args.count < 0):
            raise ValueError("--processes and --count must be positive")
    except ValueError as e:
        ap.error(str(e))
    opts: dict[str, Any] = {
        "host": args.host,
        "ports": args.port,
        "behaviours": behaviours,
        "default": default,
        "count": args.count,
        "slow_delay": args.slow_delay,
        "flap_period": args.flap_period,
        "epoch": time.monotonic(),  # CLOCK_MONOTONIC is system-wide: all workers agree
    }
    if args.processes == 1:
        with contextlib.suppress(KeyboardInterrupt):
            _serve_forever(opts)
        return 0
    return _run_processes(opts, args.processes)


if __name__ == "__main__":
    sys.exit(main())
