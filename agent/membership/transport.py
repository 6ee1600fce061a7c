"""The asyncio adapter around the membership endpoint: sockets, the clock, timers.

Everything protocol-shaped lives in `endpoint.GossipEndpoint` (the SWIM core, the packet
layer, the stream exchanges); this file only moves bytes. Datagrams go in with
`receive_datagram` and come out of `datagrams_to_send`; connections are opened and
accepted as tasks that feed the endpoint's stream exchanges; events go to the owner's
callback; the endpoint's next timer is re-armed with loop.call_at. Malformed input and
broken streams are counted (in `counters`) and dropped, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from agent.membership.broadcast_queue import Broadcast
from agent.membership.counters import Counters
from agent.membership.endpoint import GossipEndpoint
from agent.membership.keyring import Keyring
from agent.membership.member import Member
from agent.membership.packet import MAX_UDP
from agent.membership.protocol import (
    Event,
    IncarnationChanged,
    JoinResult,
    LeaveDone,
)
from agent.membership.settings import Settings
from agent.membership.stream_exchange import InboundStream, OutboundStream
from agent.store import write_atomic

__all__ = ["Counters", "MembershipNode", "read_incarnation", "write_incarnation"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
BIND_ATTEMPTS = 10  # with port 0, as memberlist's makeNetRetry
READ_CHUNK = 65536


def read_incarnation(path: Path) -> int:
    """The last incarnation this node used, or 0; a damaged file is logged, not fatal."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    except OSError as e:
        log.warning("cannot read %s (%s); starting from incarnation 0", path, e)
        return 0
    if not text.isdigit() or int(text) >= 2**32:
        log.warning("%s holds %r, not an incarnation; starting from 0", path, text[:40])
        return 0
    return int(text)


def write_incarnation(path: Path, value: int) -> None:
    write_atomic(path, f"{value}\n")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: MembershipNode) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.owner._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class MembershipNode:
    """One gossip node on real sockets. Create, `await start()`, then join/leave/stop."""

    def __init__(
        self,
        name: str,
        bind: Address,
        *,
        advertise: Address | None = None,
        meta: bytes = b"",
        settings: Settings | None = None,
        keyring: Keyring | None = None,
        incarnation_file: Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        local_state: Callable[[bool], bytes] | None = None,
    ) -> None:
        self.name = name
        self.bind = bind
        self.advertise = advertise
        self.meta = meta
        self.settings = settings or Settings()
        self._keyring = keyring
        self.incarnation_file = incarnation_file
        self.on_event = on_event
        self.local_state = local_state
        self.counters = Counters()
        self.endpoint: GossipEndpoint | None = None
        self.port = bind[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._stopping = False
        self._tcp: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._incarnation_pending: int | None = None
        self._incarnation_writer: asyncio.Future[None] | None = None
        self._joins: dict[int, asyncio.Future[str | None]] = {}
        self._left: asyncio.Event = asyncio.Event()

    @property
    def keyring(self) -> Keyring | None:
        return self._keyring

    @keyring.setter
    def keyring(self, keyring: Keyring | None) -> None:
        """Rotated keys apply to the next packet and stream."""
        self._keyring = keyring
        if self.endpoint is not None:
            self.endpoint.keyring = keyring

    @property
    def running(self) -> bool:
        """Started (bound and announced): the node takes commands."""
        return self.endpoint is not None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP and TCP on one port (OSError if taken), then announce ourselves."""
        self._loop = asyncio.get_running_loop()
        host, port = self.bind
        # Port 0: the kernel picks a free UDP port, which TCP may already hold (an
        # outgoing connection's ephemeral port); pick again, as memberlist does
        for attempt in range(BIND_ATTEMPTS if port == 0 else 1):
            try:
                await self._bind(host, port)
                break
            except OSError as e:
                if port != 0 or e.errno != errno.EADDRINUSE or attempt == BIND_ATTEMPTS - 1:
                    raise
        adv_host, adv_port = self.advertise or (host, self.port)
        if adv_port == 0:
            adv_port = self.port
        incarnation = read_incarnation(self.incarnation_file) if self.incarnation_file else 0
        self.endpoint = GossipEndpoint(
            self.name,
            (adv_host, adv_port),
            meta=self.meta,
            settings=self.settings,
            keyring=self._keyring,
            incarnation=incarnation,
            local_state=self.local_state,
            counters=self.counters,
        )
        self.endpoint.start(self._now())
        self._pump()

    async def _bind(self, host: str, port: int) -> None:
        """UDP on ``port`` (0: any), then TCP on the same port; OSError if either fails."""
        assert self._loop is not None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(host, port), family=family
        )
        self.port = transport.get_extra_info("sockname")[1]
        try:
            self._tcp = await asyncio.start_server(
                self._on_stream, host, self.port, family=family, reuse_address=True
            )
        except OSError:
            transport.close()
            raise
        self._udp = transport
        self._stopping = False

    async def join(self, addrs: list[Address], timeout: float | None = None) -> int:
        """Push/pull with each seed; returns how many answered. ``timeout`` (default
        tcp_timeout + 1) also bounds each exchange, so nothing lingers after it."""
        ep = self._need_endpoint()
        ids = ep.join(addrs, self._now(), timeout)
        futs = []
        for sid in ids:
            fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self._joins[sid] = fut
            futs.append(fut)
        self._pump()
        results = await asyncio.wait_for(
            asyncio.gather(*futs), timeout or self.settings.tcp_timeout + 1
        )
        return sum(1 for r in results if r is None)

    async def leave(self, timeout: float = 5.0) -> None:
        """Gossip our departure and wait (bounded) until it has been sent enough times."""
        ep = self._need_endpoint()
        ep.leave(self._now())
        self._pump()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._left.wait(), timeout)

    async def stop(self) -> None:
        # From here on nothing is sent and no timer is armed: events still arriving while
        # the incarnation is flushed must not write to a socket being closed.
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        await self.flush_incarnation()
        udp, self._udp = self._udp, None
        if udp is not None:
            udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for fut in self._joins.values():
            if not fut.done():
                fut.cancel()

    # --- views ---------------------------------------------------------------------------

    def members(self) -> list[Member]:
        return self.endpoint.members() if self.endpoint else []

    @property
    def health_score(self) -> int:
        """Lifeguard's local health score (0 before start)."""
        return self.endpoint.health_score if self.endpoint else 0

    @property
    def incarnation(self) -> int:
        return self.endpoint.incarnation if self.endpoint else 0

    @property
    def stale_views(self) -> int:
        return self.endpoint.stale_views if self.endpoint else 0

    def dropped_broadcasts(self) -> dict[tuple[str, str], int]:
        return self.endpoint.dropped_broadcasts() if self.endpoint else {}

    def update_meta(self, meta: bytes) -> None:
        self.meta = meta
        self._need_endpoint().update_meta(meta, self._now())
        self._pump()

    def readdress(self, advertise: Address) -> None:
        """Announce ourselves at a new address (see Membership.readdress); the sockets are
        bound to the wildcard address and stay as they are."""
        self.advertise = advertise
        self._need_endpoint().readdress(advertise, self._now())
        self._pump()

    def send_user(self, addr: Address, payload: bytes) -> None:
        self._need_endpoint().send_user(addr, payload)
        self._pump()

    def send_reliable(self, addr: Address, payload: bytes) -> int:
        sid = self._need_endpoint().send_reliable(addr, payload, self._now())
        self._pump()
        return sid

    def broadcast(
        self, payload: bytes, name: str | None = None, exclude: str | None = None
    ) -> Broadcast:
        return self._need_endpoint().broadcast(payload, name, exclude=exclude)

    # --- plumbing ------------------------------------------------------------------------

    def _need_endpoint(self) -> GossipEndpoint:
        if self.endpoint is None:
            raise RuntimeError("membership not started")
        return self.endpoint

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if self.endpoint is None:
            return
        self.endpoint.receive_datagram(data[:MAX_UDP], addr, self._now())
        self._pump()

    def _pump(self) -> None:
        """Drain the endpoint: send its datagrams, open its streams, deliver events, re-arm."""
        ep = self.endpoint
        if ep is None or self._loop is None or self._stopping:
            return
        now = self._now()
        for data, addr in ep.datagrams_to_send(now):
            self._sendto(data, addr)
        for s in ep.streams_to_open(now):
            self._spawn(self._client_stream(s))
        for ev in ep.events():
            self._dispatch(ev)
        when = ep.next_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = None if when is None else self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.endpoint is not None:
            self.endpoint.handle_timer(self._now())
        self._pump()

    def _dispatch(self, ev: Event) -> None:
        if isinstance(ev, IncarnationChanged) and self.incarnation_file is not None:
            self._persist_incarnation(ev.incarnation)
        elif isinstance(ev, JoinResult):
            fut = self._joins.pop(ev.stream_id, None)
            if fut is not None and not fut.done():
                fut.set_result(ev.error)
        elif isinstance(ev, LeaveDone):
            self._left.set()
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:  # a bug of ours: never fatal, never hidden
                log.exception("membership event handler failed")
                self.counters.bad("internal-error")

    def _persist_incarnation(self, value: int) -> None:
        """Write the incarnation on a thread, the newest value last: a durable write
        (two fsyncs, tens of ms on an SD card) must not hold the loop that answers
        probes, nor the first join of a start. A crash before it lands costs at most
        one reuse of an incarnation, which the node refutes as it would any stale claim."""
        self._incarnation_pending = value
        if self._incarnation_writer is None or self._incarnation_writer.done():
            self._incarnation_writer = asyncio.ensure_future(self._write_incarnations())

    async def _write_incarnations(self) -> None:
        path = self.incarnation_file
        while path is not None and self._incarnation_pending is not None:
            value, self._incarnation_pending = self._incarnation_pending, None
            try:
                await asyncio.to_thread(write_incarnation, path, value)
            except OSError as e:
                log.warning("cannot persist incarnation to %s: %s", path, e)

    async def flush_incarnation(self) -> None:
        """Wait until the newest incarnation is on disk (stop does this)."""
        writer = self._incarnation_writer
        if writer is not None:
            await asyncio.shield(writer)

    def _sendto(self, data: bytes, addr: Address) -> None:
        if self._udp is None or self._udp.is_closing():
            return
        try:
            self._udp.sendto(data, addr)
        except OSError as e:
            log.debug("sendto %s:%d failed: %s", addr[0], addr[1], e)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _client_stream(self, s: OutboundStream) -> None:
        await _exchange_out(s, self._now)
        self._pump()

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one accepted connection: read the request, write the reply, close."""
        ep = self.endpoint
        if ep is None:
            writer.close()
            return
        peer = writer.get_extra_info("peername") or ("", 0)
        st: InboundStream = ep.accept_stream((str(peer[0]), int(peer[1])), self._now())
        await _exchange_in(st, reader, writer, self.settings.tcp_timeout, self._now, self._pump)


async def _exchange_out(s: OutboundStream, now: Callable[[], float]) -> None:
    """Open a connection, write the request, feed the reply to the exchange."""
    writer: asyncio.StreamWriter | None = None
    timeout = max(s.deadline - now(), 0.01)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(s.addr[0], s.addr[1])
            writer.write(s.request)
            await writer.drain()
            s.sent(now())
            while not s.done:
                chunk = await reader.read(READ_CHUNK)
                if chunk:
                    s.receive(chunk, now())
                else:
                    s.receive_eof(now())
    except (TimeoutError, OSError) as e:
        s.fail(e, now())
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _exchange_in(
    st: InboundStream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    timeout: float,
    now: Callable[[], float],
    pump: Callable[[], None],
) -> None:
    """Read one request into the exchange, write its reply, close (``pump`` lets the
    endpoint act on what the request changed before the reply goes out)."""
    try:
        async with asyncio.timeout(timeout):
            while not st.done:
                chunk = await reader.read(READ_CHUNK)
                if chunk:
                    st.receive(chunk, now())
                else:
                    st.receive_eof(now())
            pump()
            if st.reply is not None:
                writer.write(st.reply)
                await writer.drain()
    except (TimeoutError, OSError) as e:
        st.abort(e)  # counted by kind in counters.stream_errors
    finally:
        pump()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
