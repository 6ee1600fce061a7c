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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import EDGE_AGENT, LOOPBACK, compile_agent, free_port

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


async def one(
    argv: list[str], seed: Seed, notify: Path | None, log: Path
) -> tuple[float, float | None]:
    """(seconds to the first packet, seconds to READY or None) for one exec."""
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
    ready: float | None = None
    try:
        while time.monotonic() - t0 < DEADLINE:
            if sock is not None and ready is None:
                try:
                    while True:
                        msg = sock.recv(4096)
                        if b"READY=1" in msg.split(b"\n"):
                            ready = time.monotonic() - t0
                except BlockingIOError:
                    pass
            if seed.first is not None and (sock is None or ready is not None):
                break
            if p.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {p.returncode}; see {log}")
            await asyncio.sleep(0.002)  # polling a clock for a benchmark figure
        if seed.first is None:
            raise RuntimeError(f"no packet reached the seed within {DEADLINE:.0f} s; see {log}")
        return seed.first - t0, ready
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


async def main_async(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="ea-startup-"))
    sizes = [int(x) for x in args.origins.split(",")]
    rows: list[tuple[str, list[float], list[float]]] = []
    for n in sizes:
        packets, readies = [], []
        for t in range(args.trials):
            d = work / f"agent-{n}-{t}"
            d.mkdir()
            seed = Seed()
            await seed.start()
            try:
                cfg = agent_config(d, seed.port, n)
                pk, rd = await one(
                    [EDGE_AGENT, "run", "--config", str(cfg)], seed, d / "notify", d / "agent.log"
                )
            finally:
                seed.close()
            packets.append(pk)
            if rd is None:
                print(f"  edge-agent, {n} origins, trial {t + 1}: no READY", file=sys.stderr)
                return 1
            readies.append(rd)
            print(
                f"  edge-agent, {n:>5} origins, trial {t + 1}: "
                f"first packet {pk:.3f} s, READY {rd:.3f} s"
            )
        rows.append((f"edge-agent, {n} origins", packets, readies))
    serf = shutil.which("serf")
    if serf and not args.no_serf:
        packets = []
        for t in range(args.trials):
            d = work / f"serf-{t}"
            d.mkdir()
            seed = Seed()
            await seed.start()
            try:
                argv = [
                    serf,
                    "agent",
                    "-node",
                    "s0",
                    "-bind",
                    f"{LOOPBACK}:{free_port()}",
                    "-rpc-addr",
                    f"{LOOPBACK}:{free_port()}",
                    "-join",
                    f"{LOOPBACK}:{seed.port}",
                ]
                pk, _ = await one(argv, seed, None, d / "serf.log")
            finally:
                seed.close()
            packets.append(pk)
            print(f"  serf, trial {t + 1}: first packet {pk:.3f} s")
        rows.append(("serf (Debian)", packets, []))
    print()
    print(f"{'':28} {'first packet':40} READY")
    for name, firsts, readys in rows:
        print(f"{name:28} {summary(firsts):40} {summary(readys) if readys else '-'}")
    agent_rows = [r for r in rows if r[0].startswith("edge-agent")]
    big = agent_rows[-1]
    print(
        f"\ngoals: first packet <= {GOAL_PACKET} s: "
        f"{'met' if statistics.median(big[1]) <= GOAL_PACKET else 'MISSED'}; "
        f"READY <= {GOAL_READY} s with {sizes[-1]} origins: "
        f"{'met' if statistics.median(big[2]) <= GOAL_READY else 'MISSED'}"
    )
    if serf and not args.no_serf:
        ratio = statistics.median(big[1]) / statistics.median(rows[-1][1])
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
