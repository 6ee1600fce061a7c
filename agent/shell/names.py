"""The node's name: stable across reboots and unique per board.

Identity is the name, not the address (DHCP moves addresses). The default is the
hostname, but a factory-default hostname would give every fresh Pi the same name, so
such a hostname is replaced by one derived from the board serial (or, off-Pi, from
/etc/machine-id): "pi-" + the last 8 hex digits. Both survive reboots and reflashing
the same card keeps the machine-id, so the name is stable.

The file paths are parameters so tests can point them at fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.membership import (
    Keyring,
    NodeState,
    PushPull,
    StreamDecoder,
    encode_stream,
    ip_from_wire,
)
from agent.shell.config import Config

log = logging.getLogger(__name__)

# hostnames that fresh images ship with: never unique, so never a node name
DEFAULT_HOSTNAMES = frozenset(
    {"", "raspberrypi", "localhost", "localhost.localdomain", "debian", "ubuntu", "dietpi"}
)


@dataclass(frozen=True)
class IdentitySources:
    """Where the board's identity is read from (injectable for tests)."""

    serial_files: Sequence[Path] = (
        Path("/sys/firmware/devicetree/base/serial-number"),
        Path("/proc/device-tree/serial-number"),
    )
    cpuinfo: Path = Path("/proc/cpuinfo")
    machine_id: Path = Path("/etc/machine-id")


def _read(path: Path) -> str:
    try:
        # device-tree strings end with a NUL
        return path.read_bytes().replace(b"\0", b"").decode("ascii", "replace").strip()
    except OSError:
        return ""


def _hex_tail(text: str) -> str | None:
    """The last 8 hex digits of an id, or None if it has no usable (non-zero) digits."""
    digits = re.sub(r"[^0-9a-f]", "", text.lower())
    if len(digits) < 8 or not digits.strip("0"):
        return None
    return digits[-8:]


def board_id(sources: IdentitySources = IdentitySources()) -> tuple[str, str] | None:
    """(8 hex digits, where they came from): board serial first, then machine-id."""
    for path in sources.serial_files:
        tail = _hex_tail(_read(path))
        if tail:
            return tail, str(path)
    for line in _read(sources.cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "serial":
            tail = _hex_tail(value)
            if tail:
                return tail, f"{sources.cpuinfo} Serial"
    tail = _hex_tail(_read(sources.machine_id))
    if tail:
        return tail, str(sources.machine_id)
    return None


def is_default_hostname(hostname: str) -> bool:
    return hostname.strip().lower() in DEFAULT_HOSTNAMES


def node_name(
    config: Config,
    *,
    hostname: str | None = None,
    sources: IdentitySources = IdentitySources(),
) -> str:
    """[node] name, else the short hostname, else (factory default) "pi-" + board id."""
    if config.node.name:
        return config.node.name
    host = (socket.gethostname() if hostname is None else hostname).split(".")[0]
    if not is_default_hostname(host):
        return host
    found = board_id(sources)
    if found is None:
        name = host or "edge-agent"
        log.warning(
            "hostname %r is a factory default and no board serial or machine-id was found; "
            "using %r: set [node] name, or every such node will claim the same name",
            host,
            name,
        )
        return name
    tail, where = found
    name = f"pi-{tail}"
    log.info("hostname %r is a factory default; node name %s (from %s)", host, name, where)
    return name


# --- two nodes, one name -----------------------------------------------------------------

Address = tuple[str, int]
ASK_TIMEOUT = 3.0
RECHECK = 15.0  # while we are the newcomer: ask again (the original may be gone by now)
ORIGINAL_FAULT_FOR = 300.0  # how long the node that keeps its name shows the clash


async def ask_where(
    peer: Address, name: str, keyring: Keyring | None, timeout: float = ASK_TIMEOUT
) -> Address | None:
    """Where does `peer` think node `name` lives? None if it does not know it as alive.

    A push/pull carrying no node states: the peer merges nothing, and its reply is its
    whole view. Go memberlist and Serf accept it (an empty remote list is valid).
    """
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(*peer)
            writer.write(encode_stream(PushPull((), b"", False), keyring=keyring))
            await writer.drain()
            dec = StreamDecoder(keyring)
            while (msg := dec.next_message()) is None:
                chunk = await reader.read(65536)
                if chunk:
                    dec.feed(chunk)
                else:
                    dec.feed_eof()
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    if not isinstance(msg, PushPull):
        raise ValueError(f"{type(msg).__name__} instead of a push/pull reply")
    for n in msg.nodes:
        if n.name == name and n.state in (NodeState.ALIVE, NodeState.SUSPECT):
            ip = ip_from_wire(n.addr)
            return (str(ip), n.port) if ip is not None else None
    return None


class NameGuard:
    """Decides, when another node claims our name, which of the two is the newcomer.

    memberlist reports a conflict on every node that sees two addresses for one name,
    on both claimants alike. The tie-breaker is the cluster's own view: a third member
    keeps the first claimant's entry (a conflicting alive is ignored), so we ask up to
    three witnesses where they think our name lives. If they say "here", we are the
    original: we keep the name and log it; if they say "there", we are the newcomer:
    health fails with the reason, and we keep re-asking, since the fault clears by
    itself if the original goes away and the cluster takes us in.
    """

    def __init__(
        self,
        name: str,
        own: Callable[[], Address],
        witnesses: Callable[[], list[Address]],
        keyring: Callable[[], Keyring | None],
        set_fault: Callable[[tuple[str, str] | None], None],
    ) -> None:
        self.name = name
        self.own = own
        self.witnesses = witnesses
        self.keyring = keyring
        self.set_fault = set_fault
        self.rival: Address | None = None
        self.verdict: str | None = None  # "original" | "newcomer" | "unknown"
        self.last_conflict = 0.0
        self._task: asyncio.Task[None] | None = None

    def conflict(self, other: Address) -> None:
        """A NameConflict for our own name, `other` being the rival's address."""
        self.last_conflict = time.monotonic()
        if self.rival != other:
            log.error(
                "NAME CONFLICT: the node at %s:%d also calls itself %r; finding out which "
                "of us the cluster knows",
                *other,
                self.name,
            )
        self.rival = other
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        while True:
            verdict = await self.judge()
            if verdict == "original":
                if time.monotonic() - self.last_conflict > ORIGINAL_FAULT_FOR:
                    self.set_fault(None)
                    self.verdict = self.rival = None
                    return
                await asyncio.sleep(RECHECK)
            elif verdict == "cleared":
                return
            else:
                await asyncio.sleep(RECHECK)

    async def judge(self) -> str:
        rival = self.rival
        if rival is None:
            return "cleared"
        own = self.own()
        asked = [w for w in self.witnesses() if w not in (own, rival)][:3]
        answers: list[Address | None] = []
        for w in asked:
            try:
                answers.append(await ask_where(w, self.name, self.keyring()))
            except (OSError, TimeoutError, ValueError, Exception) as e:
                log.debug("name check: %s:%d did not answer: %s", *w, e)
        us = sum(1 for a in answers if a == own)
        them = [a for a in answers if a is not None and a != own]
        level = reason = ""
        if us and us >= len(them):
            # the cluster knows us here: either we are the original, or we were the
            # newcomer and the cluster has taken us in since (the original went away)
            verdict = "cleared" if self.verdict == "newcomer" else "original"
            reason = (
                f"the node at {rival[0]}:{rival[1]} claims our name {self.name!r}; the cluster "
                f"knows us ({us} of {len(asked)} peers asked), so we keep it: rename that node"
            )
            level = "degraded"
        elif them:
            verdict = "newcomer"
            holder = them[0]
            reason = (
                f"name {self.name!r} already belongs to the node at {holder[0]}:{holder[1]} "
                f"({len(them)} of {len(asked)} peers asked say so): this node is not in the "
                "cluster; give it a unique [node] name"
            )
            level = "failing"
        else:
            verdict = "newcomer" if self.verdict == "newcomer" else "unknown"
            reason = (
                f"the node at {rival[0]}:{rival[1]} claims our name {self.name!r} and no third "
                "member knows which of us it is: give one of them a unique [node] name"
            )
            level = "failing"
        if verdict == "cleared":
            log.warning("name %r: the cluster knows us now; the conflict is over", self.name)
            self.verdict = self.rival = None
            self.set_fault(None)
            return verdict
        if verdict != self.verdict:
            log.error("NAME CONFLICT (we are the %s): %s", verdict, reason)
        self.verdict = verdict
        self.set_fault((level, reason))
        return verdict
