"""Start-up time (issue 21, item 3): from exec to the first gossip packet, and to READY.

    .venv/bin/python bench/startup.py [--trials 5] [--origins 0,1000] [--no-serf]

Each trial execs one `edge-agent run` (a fresh data directory; `[cluster] join` names a
seed this script plays, `discover = false`, LEDs off, encryption on) and times, from just
before exec:

* **first packet**: the first connection or datagram reaching the seed's port (a join
  is a TCP push/pull, a probe a UDP ping: whichever comes first);
* **READY**: `READY=1` on the `$NOTIFY_SOCKET` this script binds, as systemd would
  (the unit is `Type=notify`).

with N origins in the config (0 and 1,000 by default). Debian's `serf agent` is timed the
same way for the first packet (`-join` the same seed; serf has no READY). agent/ is
byte-compiled first, as `pip install` leaves a deployed node. Medians and ranges over
--trials; the goals (issue 21): READY <= 0.5 s with 1,000 origins, first packet <= 0.25 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import EDGE_AGENT, LOOPBACK, compile_agent, cpu_seconds, free_port

DEADLINE = 30.0
GOAL_READY = 0.5
GOAL_PACKET = 0.25


class Seed:
    """A TCP listener and a UDP socket on one port: notes when anything first arrives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.first: float | None = None
        self._tcp: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None

    def _hit(self) -> None:
        if self.first is None:
            self.first = time.monotonic()

    async def start(self) -> None:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self._hit()
            w.close()

        self._tcp = await asyncio.start_server(on_conn, LOOPBACK, self.port)
        seed = self

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                seed._hit()

        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(Proto, local_addr=(LOOPBACK, self.port))

    def close(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
        if self._udp is not None:
            self._udp.close()


def agent_config(d: Path, seed: int, origins: int) -> Path:
    lines = [
        "[node]",
        'name = "s0"',
        f'data_dir = "{d / "data"}"',
        "[cluster]",
        f'bind = "{LOOPBACK}:{free_port()}"',
        "discover = false",
        f'join = ["{LOOPBACK}:{seed}"]',
        f'keyring_file = "{d / "keyring"}"',
        "[api]",
        f'listen = "{LOOPBACK}:{free_port()}"',
        f'socket = "{d / "api.sock"}"',
        "[leds]",
        "enabled = false",
        "[log]",
        'level = "warning"',
    ]
    for i in range(origins):
        lines += ["[[origin]]", f'id = "o{i}"', f'url = "http://{LOOPBACK}:9/o/{i}"']
    (d / "keyring").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    p = d / "agent.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


class Trial:
    """One exec's figures: wall seconds and CPU seconds to the first packet and READY."""

    def __init__(self) -> None:
        self.packet = 0.0
        self.ready: float | None = None
        self.cpu_packet = 0.0
        self.cpu_ready: float | None = None


async def one(argv: list[str], seed: Seed, notify: Path | None, log: Path) -> Trial:
    """Exec ``argv`` once and time it (CPU read when each moment is seen, within 2 ms)."""
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    sock: socket.socket | None = None
    if notify is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify))
        sock.setblocking(False)
        env["NOTIFY_SOCKET"] = str(notify)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    trial = Trial()
    cpu_packet: float | None = None
    try:
        while time.monotonic() - t0 < DEADLINE:
            if sock is not None and trial.ready is None:
                try:
                    while True:
                        msg = sock.recv(4096)
                        if b"READY=1" in msg.split(b"\n"):
                            trial.ready = time.monotonic() - t0
                            trial.cpu_ready = cpu_seconds(p.pid)
                except BlockingIOError:
                    pass
            if seed.first is not None and cpu_packet is None:
                cpu_packet = cpu_seconds(p.pid)
            if seed.first is not None and (sock is None or trial.ready is not None):
                break
            if p.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {p.returncode}; see {log}")
            await asyncio.sleep(0.002)  # polling a clock for a benchmark figure
        if seed.first is None or cpu_packet is None:
            raise RuntimeError(f"no packet reached the seed within {DEADLINE:.0f} s; see {log}")
        trial.packet, trial.cpu_packet = seed.first - t0, cpu_packet
        return trial
    finally:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if sock is not None:
            sock.close()


def summary(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f})"


async def trials_of(
    argv_for: Callable[[Path, int], list[str]],
    label: str,
    n: int,
    trials: int,
    work: Path,
    notify: bool,
) -> list[Trial]:
    out = []
    for t in range(trials):
        d = work / f"{label}-{n}-{t}"
        d.mkdir()
        seed = Seed()
        await seed.start()
        try:
            trial = await one(
                argv_for(d, seed.port), seed, d / "notify" if notify else None, d / "run.log"
            )
        finally:
            seed.close()
        if notify and trial.ready is None:
            raise RuntimeError(f"{label}, {n} origins, trial {t + 1}: no READY")
        out.append(trial)
        ready = f", READY {trial.ready:.3f} s (CPU {trial.cpu_ready:.2f} s)" if notify else ""
        print(
            f"  {label}, {n:>5} origins, trial {t + 1}: first packet {trial.packet:.3f} s "
            f"(CPU {trial.cpu_packet:.2f} s){ready}"
        )
    return out


async def main_async(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="ea-startup-"))
    sizes = [int(x) for x in args.origins.split(",")]
    print(f"load average at the start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    rows: list[tuple[str, list[Trial]]] = []
    for n in sizes:

        def agent_argv(d: Path, port: int, n: int = n) -> list[str]:
            return [EDGE_AGENT, "run", "--config", str(agent_config(d, port, n))]

        rows.append(
            (
                f"edge-agent, {n} origins",
                await trials_of(agent_argv, "edge-agent", n, args.trials, work, True),
            )
        )
    serf = shutil.which("serf")
    if serf and not args.no_serf:

        def serf_argv(d: Path, port: int) -> list[str]:
            return [
                serf,
                "agent",
                "-node",
                "s0",
                "-bind",
                f"{LOOPBACK}:{free_port()}",
                "-rpc-addr",
                f"{LOOPBACK}:{free_port()}",
                "-join",
                f"{LOOPBACK}:{port}",
            ]

        rows.append(
            ("serf (Debian)", await trials_of(serf_argv, "serf", 0, args.trials, work, False))
        )
    print()
    print(f"{'':26} {'first packet (wall; CPU)':46} READY (wall; CPU)")
    for name, ts in rows:
        first = (
            summary([t.packet for t in ts])
            + f"; CPU {statistics.median(t.cpu_packet for t in ts):.2f} s"
        )
        readys = [t.ready for t in ts if t.ready is not None]
        ready = (
            summary(readys) + f"; CPU {statistics.median(t.cpu_ready or 0.0 for t in ts):.2f} s"
            if readys
            else "-"
        )
        print(f"{name:26} {first:46} {ready}")
    big = [ts for name, ts in rows if name.startswith("edge-agent")][-1]
    packet = statistics.median(t.packet for t in big)
    ready_med = statistics.median(t.ready or 0.0 for t in big)
    print(
        f"\ngoals: first packet <= {GOAL_PACKET} s: "
        f"{'met' if packet <= GOAL_PACKET else 'MISSED'}; "
        f"READY <= {GOAL_READY} s with {sizes[-1]} origins: "
        f"{'met' if ready_med <= GOAL_READY else 'MISSED'}"
    )
    if serf and not args.no_serf:
        ratio = packet / statistics.median(t.packet for t in rows[-1][1])
        print(f"first packet, edge-agent / serf: {ratio:.1f}x")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--origins", default="0,1000")
    ap.add_argument("--no-serf", action="store_true")
    args = ap.parse_args()
    compile_agent()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
