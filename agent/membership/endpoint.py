"""The membership front door: one gossip node with no I/O, in the style of aioquic.

``GossipEndpoint`` joins the SWIM/Lifeguard core (protocol.Membership) to the packet
layer and the stream exchanges, so what goes in and out is what crosses the network:
datagrams and stream bytes, never decoded messages. An adapter feeds it
``receive_datagram(data, addr, now)``, accepted connections (``accept_stream``) and
``handle_timer(now)`` when ``next_timer()`` is due; after each call it drains
``datagrams_to_send(now)``, ``streams_to_open(now)`` and ``events()``. The asyncio
transport does this over sockets; the simulator does it over a virtual network, so a
1,000-node simulation exercises the same compound, CRC, compression and encryption
path as a live node.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from agent.membership.broadcast_queue import Broadcast
from agent.membership.counters import Counters
from agent.membership.errors import EncodeError
from agent.membership.keyring import Keyring
from agent.membership.member import Member
from agent.membership.messages import ErrResp, Message, UserMsg
from agent.membership.packet import PacketLayer
from agent.membership.protocol import Event, Membership, Rejected
from agent.membership.refusals import Refusals
from agent.membership.settings import Settings
from agent.membership.stream import StreamDecoder, StreamMessage, encode_stream
from agent.membership.stream_exchange import InboundStream, OutboundStream

__all__ = ["GossipEndpoint"]

#: a user message longer than this goes on its stream uncompressed. Compression is
#: optional per message (memberlist reads both), and this LZW is pure Python: about 0.35 s
#: to compress and 0.25 s to expand a 1.4 MB batch of 10,000 origins, on the event loop,
#: at every hop, while the bytes it saves cost a LAN a few milliseconds. At 8 KiB a
#: message costs at most a few milliseconds; at 32 KiB, the observation batches (~25 KB)
#: a node sends while 60,000 new origins get their first check still cost 8 % of its
#: loop, compressing and expanding.
MAX_COMPRESSED_USER_MSG = 8 * 1024

log = logging.getLogger(__name__)

Address = tuple[str, int]


class GossipEndpoint:
    """One node's membership: bytes, timers and ``now`` in; bytes, timers and events out."""

    def __init__(
        self,
        name: str,
        addr: Address,
        *,
        meta: bytes = b"",
        settings: Settings | None = None,
        keyring: Keyring | None = None,
        incarnation: int = 0,
        rng: random.Random | None = None,
        local_state: Callable[[bool], bytes] | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.counters = counters or Counters()
        #: peers refused for their key, encryption or versions (the stream host's too)
        self.refusals = Refusals()
        self.packets = PacketLayer(
            self.counters,
            keyring=keyring,
            compress=self.settings.enable_compression,
            refusals=self.refusals,
        )
        #: the protocol state machine; views and tests may read it, adapters go through us
        self.core = Membership(
            name,
            addr[0],
            addr[1],
            meta=meta,
            settings=self.settings,
            rng=rng,
            incarnation=incarnation,
            encryption_overhead=self.packets.overhead,
            local_state=local_state,
        )

    # --- configuration -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def keyring(self) -> Keyring | None:
        return self.packets.keyring

    @keyring.setter
    def keyring(self, keyring: Keyring | None) -> None:
        """Rotate keys: packets and streams use the new keyring from now on."""
        self.packets.keyring = keyring
        self.core.encryption_overhead = self.packets.overhead

    # --- commands ------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.core.start(now)

    def join(self, addrs: list[Address], now: float, timeout: float | None = None) -> list[int]:
        """Push/pull with each seed; a JoinResult event per returned stream id."""
        return self.core.join(addrs, now, timeout)

    def leave(self, now: float) -> None:
        """Gossip our departure; LeaveDone once it has been sent enough times."""
        self.core.leave(now)

    def update_meta(self, meta: bytes, now: float) -> None:
        self.core.update_meta(meta, now)

    def readdress(self, addr: Address, now: float) -> None:
        self.core.readdress(addr[0], addr[1], now)

    def send_user(self, addr: Address, payload: bytes) -> None:
        """A delegate message in one UDP packet (best effort)."""
        self.core.send_user(addr, payload)

    def send_reliable(self, addr: Address, payload: bytes, now: float) -> int:
        """A delegate message over TCP; a StreamDone event with the returned id reports it."""
        return self.core.send_reliable(addr, payload, now)

    def broadcast(
        self,
        payload: bytes,
        name: str | None = None,
        exclude: str | None = None,
        on_finished: Callable[[], None] | None = None,
    ) -> Broadcast:
        """Gossip a delegate message, piggybacked on our packets (never to ``exclude``)."""
        return self.core.queue_user_broadcast(payload, name, on_finished, exclude)

    # --- inputs --------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """A UDP datagram arrived from ``addr``: decode it whole and hand its messages on."""
        core = self.core
        for msg in self.packets.decode(data, addr):
            try:
                core.handle_message(msg, addr, now)
            except Exception:  # a bug must not take the node down with it
                log.exception("membership failed on a %s from %s", type(msg).__name__, addr)
                self.counters.bad("internal-error")

    def accept_stream(self, source: Address, now: float) -> InboundStream:
        """A peer connected to us: feed the returned exchange what it sends."""
        return InboundStream(self, source)

    def next_timer(self) -> float | None:
        return self.core.next_timer()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    # --- outputs -------------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Every datagram the core wants sent, encoded and encrypted, with its address."""
        out: list[tuple[bytes, Address]] = []
        for p in self.core.packets_to_send():
            for data in self.packets.encode(p.messages, p.addr, p.member):
                out.append((data, p.addr))
        return out

    def streams_to_open(self, now: float) -> list[OutboundStream]:
        """Connections to open: write each one's ``request``, then feed it the reply."""
        out: list[OutboundStream] = []
        for s in self.core.streams_to_open():
            try:
                data = self._encode_stream(s.request)
            except EncodeError as e:
                log.error("cannot encode a stream for %s:%d: %s", s.addr[0], s.addr[1], e)
                self.core.stream_result(s.id, None, str(e), now)
                continue
            expects_reply = not isinstance(s.request, UserMsg)
            out.append(OutboundStream(self, s.id, s.addr, data, s.deadline, expects_reply))
        return out

    def events(self) -> list[Event]:
        """What happened since the last call; rejected input is counted here by kind. The
        peers refused on the wire come last (already counted where they were refused)."""
        evs = self.core.events()
        for ev in evs:
            if isinstance(ev, Rejected):
                self.counters.bad(ev.kind)
        evs.extend(Rejected(kind, detail, peer) for kind, detail, peer in self.refusals.drain())
        return evs

    # --- views ---------------------------------------------------------------------------

    def members(self) -> list[Member]:
        return self.core.members()

    @property
    def health_score(self) -> int:
        """Lifeguard's local health (0 = healthy)."""
        return self.core.health_score

    @property
    def incarnation(self) -> int:
        return self.core.incarnation

    @property
    def stale_views(self) -> int:
        """Push/pull views since a move that still hold us at a former address."""
        return self.core.stale_views

    def dropped_broadcasts(self) -> dict[tuple[str, str], int]:
        """Broadcasts dropped unsent, by (queue, reason): ``membership`` or ``user``,
        ``oversized`` (no packet could carry it) or ``pruned`` (the queue was full)."""
        out = {}
        for queue, q in (("membership", self.core.broadcasts), ("user", self.core.user_broadcasts)):
            out[(queue, "oversized")] = q.oversized
            out[(queue, "pruned")] = q.pruned
        return out

    # --- the stream exchanges' host (stream_exchange.StreamHost) -------------------------

    def new_stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self.packets.keyring)

    def answer_stream(self, msg: StreamMessage, source: Address, now: float) -> bytes | None:
        try:
            reply = self.core.handle_stream(msg, source, now)
        except Exception:  # a bug must not take the node down with it
            log.exception("membership failed on a stream from %s", source[0])
            self.counters.bad("internal-error")
            return None
        if reply is None:
            return None
        try:
            return self._encode_stream(reply)
        except EncodeError as e:
            log.error("cannot encode our reply to %s: %s", source[0], e)
            self.counters.stream_error("encode")
            return None

    def encode_error_reply(self, error: ErrResp) -> bytes | None:
        # always compressed, as the transport has always sent it (encode_stream's default)
        try:
            return encode_stream(error, keyring=self.packets.keyring)
        except EncodeError as e:  # pragma: no cover - an errResp always encodes
            log.error("cannot encode an error reply: %s", e)
            return None

    def finish_stream(
        self, stream_id: int, reply: Message | None, error: str | None, now: float
    ) -> None:
        self.core.stream_result(stream_id, reply, error, now)

    def _encode_stream(self, msg: Message) -> bytes:
        compress = self.settings.enable_compression and not (
            isinstance(msg, UserMsg) and len(msg.payload) > MAX_COMPRESSED_USER_MSG
        )
        return encode_stream(
            msg,  # type: ignore[arg-type]
            compress=compress,
            keyring=self.packets.keyring,
        )
