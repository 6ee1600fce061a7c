"""The asyncio shell around the membership core: UDP and TCP sockets, the clock, timers.

Everything protocol-shaped lives in `protocol.Membership`; this file only moves
bytes. After each input it drains the core's outputs: packets are framed by the
codec (compound, compression, CRC, encryption) and sent; streams are opened as
tasks; events go to the owner's callback; the core's next timer is re-armed with
loop.call_at. Malformed input is counted and dropped, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.atomic_file import write_atomic
from agent.membership.broadcast_queue import Broadcast
from agent.membership.codec import decode_packet, encode_packet
from agent.membership.errors import DecodeError, EncodeError
from agent.membership.keyring import Keyring
from agent.membership.member import Member
from agent.membership.messages import ErrResp, Message, UserMsg
from agent.membership.protocol import (
    Event,
    IncarnationChanged,
    JoinResult,
    LeaveDone,
    Membership,
    OpenStream,
    Rejected,
    SendPacket,
)
from agent.membership.settings import Settings
from agent.membership.stream import StreamDecoder, encode_stream

log = logging.getLogger(__name__)

Address = tuple[str, int]
MAX_UDP = 65536
BIND_ATTEMPTS = 10  # with port 0, as memberlist's makeNetRetry


@dataclass
class Counters:
    """Plain counters the owner exports to /metrics."""

    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    streams_in: int = 0
    streams_out: int = 0
    bad_input: dict[str, int] = field(default_factory=dict)

    def bad(self, kind: str) -> None:
        self.bad_input[kind] = self.bad_input.get(kind, 0) + 1


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
        self.keyring = keyring
        self.incarnation_file = incarnation_file
        self.on_event = on_event
        self.local_state = local_state
        self.counters = Counters()
        self.core: Membership | None = None
        self.port = bind[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._joins: dict[int, asyncio.Future[str | None]] = {}
        self._left: asyncio.Event = asyncio.Event()

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
        overhead = 29 if self.keyring is not None else 0
        self.core = Membership(
            self.name,
            adv_host,
            adv_port,
            meta=self.meta,
            settings=self.settings,
            incarnation=incarnation,
            encryption_overhead=overhead,
            local_state=self.local_state,
        )
        self.core.start(self._now())
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

    async def join(self, addrs: list[Address], timeout: float | None = None) -> int:
        """Push/pull with each seed; returns how many answered."""
        core = self._need_core()
        ids = core.join(addrs, self._now())
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
        core = self._need_core()
        core.leave(self._now())
        self._pump()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._left.wait(), timeout)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._udp is not None:
            self._udp.close()
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
        return self.core.members() if self.core else []

    def update_meta(self, meta: bytes) -> None:
        self.meta = meta
        core = self._need_core()
        core.update_meta(meta, self._now())
        self._pump()

    def readdress(self, advertise: Address) -> None:
        """Announce ourselves at a new address (see Membership.readdress); the sockets are
        bound to the wildcard address and stay as they are."""
        self.advertise = advertise
        core = self._need_core()
        core.readdress(advertise[0], advertise[1], self._now())
        self._pump()

    def send_user(self, addr: Address, payload: bytes) -> None:
        self._need_core().send_user(addr, payload)
        self._pump()

    def send_reliable(self, addr: Address, payload: bytes) -> int:
        core = self._need_core()
        sid = core.send_reliable(addr, payload, self._now())
        self._pump()
        return sid

    def broadcast(
        self, payload: bytes, name: str | None = None, exclude: str | None = None
    ) -> Broadcast:
        core = self._need_core()
        return core.queue_user_broadcast(payload, name, exclude=exclude)

    # --- plumbing ------------------------------------------------------------------------

    def _need_core(self) -> Membership:
        if self.core is None:
            raise RuntimeError("membership not started")
        return self.core

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        core = self.core
        if core is None:
            return
        self.counters.packets_in += 1
        self.counters.bytes_in += len(data)
        try:
            result = decode_packet(data[:MAX_UDP], self.keyring)
        except DecodeError as e:
            self.counters.bad(str(e.kind))
            log.debug("dropped packet from %s:%d: %s", addr[0], addr[1], e)
            return
        except Exception:  # a decoder bug, not the peer's garbage: never fatal, never hidden
            log.exception("internal error decoding a packet from %s:%d", addr[0], addr[1])
            self.counters.bad("internal-error")
            return
        for problem in result.problems:
            self.counters.bad(str(problem.kind))
        now = self._now()
        for msg in result.messages:
            try:
                core.handle_message(msg, addr, now)
            except Exception:  # a bug must not take the node down with it
                log.exception("membership failed on a %s from %s", type(msg).__name__, addr)
                self.counters.bad("internal-error")
        self._pump()

    def _pump(self) -> None:
        """Drain the core: send its packets, open its streams, deliver events, re-arm."""
        core = self.core
        if core is None or self._loop is None:
            return
        for p in core.packets_to_send():
            self._send_packet(p)
        for s in core.streams_to_open():
            self._spawn(self._client_stream(s))
        for ev in core.events():
            self._dispatch(ev)
        when = core.next_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = None if when is None else self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.core is not None:
            self.core.handle_timer(self._now())
        self._pump()

    def _dispatch(self, ev: Event) -> None:
        if isinstance(ev, IncarnationChanged) and self.incarnation_file is not None:
            try:
                write_incarnation(self.incarnation_file, ev.incarnation)
            except OSError as e:
                log.warning("cannot persist incarnation to %s: %s", self.incarnation_file, e)
        elif isinstance(ev, JoinResult):
            fut = self._joins.pop(ev.stream_id, None)
            if fut is not None and not fut.done():
                fut.set_result(ev.error)
        elif isinstance(ev, LeaveDone):
            self._left.set()
        elif isinstance(ev, Rejected):
            self.counters.bad(ev.kind)
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:
                log.exception("membership event handler failed")

    def _send_packet(self, p: SendPacket) -> None:
        if self._udp is None:
            return
        try:
            data = encode_packet(
                p.messages,
                compress=self.settings.enable_compression,
                crc=p.member is not None and p.member.pmax >= 5,
                keyring=self.keyring,
            )
        except EncodeError as e:
            log.error("cannot encode a packet for %s:%d: %s", p.addr[0], p.addr[1], e)
            return
        self.counters.packets_out += 1
        self.counters.bytes_out += len(data)
        try:
            self._udp.sendto(data, p.addr)
        except OSError as e:
            log.debug("sendto %s:%d failed: %s", p.addr[0], p.addr[1], e)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _client_stream(self, s: OpenStream) -> None:
        """Open a stream, send the request, read one reply, hand it to the core."""
        self.counters.streams_out += 1
        reply: Message | None = None
        error: str | None = None
        writer: asyncio.StreamWriter | None = None
        timeout = max(s.deadline - self._now(), 0.01)
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(s.addr[0], s.addr[1])
                writer.write(
                    encode_stream(
                        s.request,  # type: ignore[arg-type]
                        compress=self.settings.enable_compression,
                        keyring=self.keyring,
                    )
                )
                await writer.drain()
                if isinstance(s.request, UserMsg):
                    reply = None  # memberlist's receiver reads a user message and hangs up
                else:
                    reply = await self._read_one(reader)
                if isinstance(reply, ErrResp):
                    error, reply = f"peer error: {reply.error}", None
        except TimeoutError:
            error = "timeout"
        except DecodeError as e:
            self.counters.bad(str(e.kind))
            error = f"bad reply: {e}"
        except (OSError, EncodeError) as e:
            error = str(e) or type(e).__name__
        except Exception:  # a bug in the stream codec: the core still hears how it ended
            log.exception("internal error on a stream to %s:%d", s.addr[0], s.addr[1])
            self.counters.bad("internal-error")
            error = "internal error"
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        if self.core is not None:
            self.core.stream_result(s.id, reply, error, self._now())
            self._pump()

    async def _read_one(self, reader: asyncio.StreamReader) -> Message:
        dec = StreamDecoder(self.keyring)
        while True:
            msg = dec.next_message()
            if msg is not None:
                return msg
            chunk = await reader.read(65536)
            if not chunk:
                dec.feed_eof()
            else:
                dec.feed(chunk)

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.streams_in += 1
        peer = writer.get_extra_info("peername") or ("", 0)
        source = (str(peer[0]), int(peer[1]))
        try:
            async with asyncio.timeout(self.settings.tcp_timeout):
                try:
                    msg = await self._read_one(reader)
                except DecodeError as e:
                    self.counters.bad(str(e.kind))
                    log.debug("bad stream from %s: %s", source[0], e)
                    if str(e.kind) != "truncated":
                        writer.write(encode_stream(ErrResp(str(e)), keyring=self.keyring))
                        await writer.drain()
                    return
                except OSError:
                    raise  # the connection failed, not the decoder (handled below)
                except Exception:  # a decoder bug: logged, counted apart, no reply
                    log.exception("internal error decoding a stream from %s", source[0])
                    self.counters.bad("internal-error")
                    return
                core = self.core
                if core is None:
                    return
                try:
                    reply = core.handle_stream(msg, source, self._now())
                except Exception:
                    log.exception("membership failed on a stream from %s", source[0])
                    self.counters.bad("internal-error")
                    return
                finally:
                    self._pump()
                if reply is not None:
                    writer.write(
                        encode_stream(
                            reply,  # type: ignore[arg-type]
                            compress=self.settings.enable_compression,
                            keyring=self.keyring,
                        )
                    )
                    await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
