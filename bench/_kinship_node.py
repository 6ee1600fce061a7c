"""One kinship node for bench/membership.py: joins a seed, answers its member view on a line.

    bench/.venv-kinship/bin/python bench/_kinship_node.py --name k1 --bind 127.0.0.1:P
        --ctl-port C [--seed 127.0.0.1:S] (--key-file F | --plaintext)

Runs in the bench's own venv (bench/_kinship.py makes it), never in the project's: kinship
is a peer measured beside edge-agent, not a dependency. The node is what an asyncio
application using kinship would be: Config.lan() (memberlist's LAN timings), the key every
node shares, one task reading the events. The bench polls it on a persistent TCP
connection to 127.0.0.1:C: each line it sends is answered with one JSON line,

    {"view": {name: "alive"|"suspect"|"dead"|"left"|"gone"}, "suspect": {name: n},
     "dead": {name: n}, "refutations": n, "suspicions": n}

view: members() (alive and suspect) plus every name ever seen that it no longer lists, as
member(name) has it (its tombstone), or "gone" once the tombstone expired. suspect and dead
count this node's MemberSuspect and MemberDead events per member since it started (so the
bench can count false positives without polling the idle window); refutations and
suspicions are the node's own Stats counters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import kinship


class Node:
    def __init__(self, cluster: kinship.Cluster) -> None:
        self.cluster = cluster
        self.seen: set[str] = set()
        self.suspect: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()

    async def follow(self, events: kinship.EventStream) -> None:
        """Count the events a member's state change makes, as an application sees them."""
        async for ev in events:
            member = getattr(ev, "member", None)
            if member is not None:
                self.seen.add(member.name)
            if isinstance(ev, kinship.MemberSuspect):
                self.suspect[ev.member.name] += 1
            elif isinstance(ev, kinship.MemberDead):
                self.dead[ev.member.name] += 1

    def answer(self) -> bytes:
        c = self.cluster
        view = {m.name: m.state.name.lower() for m in c.members()}
        self.seen.update(view)
        for name in self.seen - view.keys():
            m = c.member(name)
            view[name] = "gone" if m is None else m.state.name.lower()
        st = c.stats()
        out = {
            "view": view,
            "suspect": self.suspect,
            "dead": self.dead,
            "refutations": st.refutations,
            "suspicions": st.suspicions,
        }
        return json.dumps(out, separators=(",", ":")).encode() + b"\n"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():
                writer.write(self.answer())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # the loop is closing: end quietly (3.11's stream callback would log a
            # traceback for a handler task that ends cancelled)
            pass
        finally:
            writer.close()


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--bind", required=True)
    ap.add_argument("--ctl-port", type=int, required=True)
    ap.add_argument("--seed", action="append", default=[])
    keys = ap.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key-file", type=Path)
    keys.add_argument("--plaintext", action="store_true")
    args = ap.parse_args()
    fields: dict[str, object] = {"name": args.name, "bind": args.bind, "seeds": args.seed}
    if args.plaintext:
        fields["insecure_plaintext"] = True
    else:
        fields["keys"] = [args.key_file.read_text().strip()]
    cfg = kinship.Config.lan(**fields)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    cluster = kinship.Cluster(cfg)
    await cluster.start()
    node = Node(cluster)
    follower = asyncio.create_task(node.follow(cluster.events()))
    server = await asyncio.start_server(node.serve, "127.0.0.1", args.ctl_port)
    try:
        await stop.wait()
    finally:
        server.close()
        await cluster.close()  # no leave: the bench stops whole clusters at once
        await follower  # the event stream ends when the cluster closes
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stderr.flush()
    # kinship 0.4.0's protocol thread can crash the interpreter's finalization (seen here:
    # "Fatal Python error: PyGILState_Release" and SIGSEGV after close()); the cluster is
    # closed by now, so skip finalization rather than count a crash at every stop.
    os._exit(code)
