"""SWIM with Lifeguard, as memberlist 0.2.2 runs it, with no I/O of its own.

Inputs: decoded messages with their source address, replies to streams we asked
for, timer expiries, and `now`. Outputs (drained by the adapter): packets to send
(lists of encoded messages; the wire layer makes compounds, CRCs, compression and
encryption), TCP streams to open (push/pull and the fallback ping), and events
(member changes, user messages, name conflicts). Time only moves when the caller
says so, which is what lets tests and the simulator run a thousand nodes in one
process, deterministically, from a seed.

The state rules follow memberlist's state.go (aliveNode, suspectNode, deadNode,
refute, mergeState), which is what a Serf agent in the same cluster expects.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import operator
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from agent.membership.awareness import Awareness
from agent.membership.broadcast_queue import Broadcast, BroadcastQueue
from agent.membership.codec import encode_message
from agent.membership.member import Member, host_of
from agent.membership.messages import (
    DEFAULT_VSN,
    AckResp,
    Alive,
    Dead,
    IndirectPingReq,
    Message,
    NackResp,
    NodeState,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    UserMsg,
    ip_to_wire,
    vsn_problem,
)
from agent.membership.settings import Settings, push_pull_scale, suspicion_timeout
from agent.membership.suspicion import Suspicion

log = logging.getLogger(__name__)

Address = tuple[str, int]

COMPOUND_HEADER_OVERHEAD = 2  # type byte + count
COMPOUND_OVERHEAD = 2  # uint16 length per part
USER_MSG_OVERHEAD = 1
ENCRYPTION_OVERHEAD = 29  # memberlist's encryptOverhead(1): version, nonce, GCM tag
MAX_INCARNATION = 2**32 - 1


def max_broadcast(udp_buffer_size: int, encryption_overhead: int, *, user: bool) -> int:
    """The longest broadcast a gossip packet carries, alone: udp_buffer_size less the
    compound header, the encryption and the part's length (and a user message's type
    byte), as memberlist's gossip computes it. A longer one is never sent."""
    budget = udp_buffer_size - COMPOUND_HEADER_OVERHEAD - encryption_overhead
    return budget - COMPOUND_OVERHEAD - (USER_MSG_OVERHEAD if user else 0)


# --- outputs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendPacket:
    """Send these encoded messages in one UDP packet (a compound when more than one).

    `member` is set when memberlist would know the node (gossip, buddy pings): the wire
    layer then adds a CRC if the member speaks protocol 5 or later.
    """

    addr: Address
    messages: tuple[bytes, ...]
    member: Member | None = None


@dataclass(frozen=True, slots=True)
class OpenStream:
    """Open a TCP stream to addr, send request, read one reply, report via stream_result."""

    id: int
    addr: Address
    request: Message
    deadline: float


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: str  # join | update | suspect | alive | dead | left
    member: Member


@dataclass(frozen=True, slots=True)
class UserMessage:
    payload: bytes
    source: Address | None


@dataclass(frozen=True, slots=True)
class RemoteState:
    """The delegate's part of a push/pull from a peer (Serf's user state, or ours)."""

    payload: bytes
    join: bool


@dataclass(frozen=True, slots=True)
class NameConflict:
    existing: Member
    other_addr: Address


@dataclass(frozen=True, slots=True)
class IncarnationChanged:
    """Persist it: a restarted node must start above its last incarnation."""

    incarnation: int


@dataclass(frozen=True, slots=True)
class JoinResult:
    stream_id: int
    addr: Address
    error: str | None


@dataclass(frozen=True, slots=True)
class LeaveDone:
    pass


@dataclass(frozen=True, slots=True)
class StreamDone:
    """A reliable (TCP) user message was delivered, or failed with `error`."""

    stream_id: int
    addr: Address
    error: str | None


@dataclass(frozen=True, slots=True)
class HealthScore:
    """Lifeguard's local health score changed (0 = healthy): what a node shows of its
    own health (a suspected node's LEDs) follows it without polling."""

    score: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that was dropped, with a short kind for the metrics label; ``peer``: the
    address it came from, when it names a peer to tell the operator about
    (membership/refusals.py)."""

    kind: str
    detail: str
    peer: Address | None = None


Event = (
    MemberEvent
    | UserMessage
    | RemoteState
    | NameConflict
    | IncarnationChanged
    | JoinResult
    | LeaveDone
    | StreamDone
    | HealthScore
    | Rejected
)


# --- internal bookkeeping ------------------------------------------------------------------


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    sent: float
    deadline: float
    acked: bool = False
    nacks: int = 0
    expected_nacks: int = 0
    fallback: int | None = None  # stream id of the TCP fallback ping
    fallback_ok: bool = False


@dataclass(slots=True)
class _Forward:
    """An indirect ping we run for a peer: relay the ack, or a nack on timeout."""

    their_seq: int
    requester: Address
    want_nack: bool
    done: bool = False


@dataclass(slots=True)
class _Stream:
    kind: str  # "pushpull" | "join" | "ping"
    addr: Address
    probe_seq: int = 0


@dataclass(order=True, slots=True)
class _Timer:
    when: float
    seq: int
    key: Hashable = field(compare=False)


class Membership:
    """The protocol core for one node. Drive it with now; drain its outputs after each call."""

    def __init__(
        self,
        name: str,
        addr: str,
        port: int,
        *,
        meta: bytes = b"",
        settings: Settings | None = None,
        rng: random.Random | None = None,
        incarnation: int = 0,
        encryption_overhead: int = 0,
        local_state: Callable[[bool], bytes] | None = None,
        ack_payload: bytes = b"",
    ) -> None:
        self.name = name
        self.addr = ip_to_wire(addr)
        self.port = port
        self.meta = meta
        self.settings = settings or Settings()
        self.rng = rng or random.Random()
        self.incarnation = incarnation
        self.encryption_overhead = encryption_overhead
        self.local_state = local_state or (lambda join: b"")
        self.ack_payload = ack_payload

        self.nodes: list[Member] = []  # probe order
        self.node_map: dict[str, Member] = {}
        self.addr_names: dict[Address, str] = {}  # (host, port) -> node name
        self._conflicts_logged: dict[tuple[str, Address], float] = {}
        self._former: set[Address] = set()  # addresses we moved away from (readdress)
        # push/pull states seen since a move that still hold us at a former address or
        # not alive: the adapter pushes again until a round sees none
        self.stale_views = 0
        self.suspicions: dict[str, Suspicion] = {}
        self._suspicion_keys: dict[str, Hashable] = {}
        self.awareness = Awareness(self.settings.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue(
            self.settings.retransmit_mult,
            self.num_nodes,
            max_message=lambda: self._max_broadcast(user=False),
            label="membership broadcast",
        )
        self.user_broadcasts = BroadcastQueue(
            self.settings.retransmit_mult,
            self.num_nodes,
            max_message=lambda: self._max_broadcast(user=True),
            max_depth=self.settings.max_queue_depth,
            label="user broadcast",
        )
        self.probe_index = 0
        self.left = False
        self.running = False
        self.udp_fallbacks = 0  # probes answered over TCP only: UDP may be blocked

        self._seq = itertools.count(self.rng.randrange(1, 1 << 16))
        self._stream_ids = itertools.count(1)
        self._timers: list[_Timer] = []
        self._timer_seq = itertools.count()
        self._armed: dict[Hashable, int] = {}  # key -> timer seq that is current
        self._probes: dict[int, _Probe] = {}
        self._forwards: dict[int, _Forward] = {}
        self._streams: dict[int, _Stream] = {}
        self._packets: list[SendPacket] = []
        self._open: list[OpenStream] = []
        self._events: list[Event] = []
        # the gossip tick parks while nothing waits to be gossiped (a tick would send
        # nothing) and resumes when something is queued, no sooner than one interval after
        # the last tick: the same packets at the same rate, without 5 idle wakeups a second
        self._gossip_parked = False
        self._last_gossip = 0.0

    # --- public: lifecycle ---------------------------------------------------------------

    def start(self, now: float) -> None:
        """Announce ourselves (incarnation above any we used before) and start the timers."""
        self.running = True
        self.incarnation = min(self.incarnation + 1, MAX_INCARNATION)
        self._events.append(IncarnationChanged(self.incarnation))
        a = Alive(self.incarnation, self.name, self.addr, self.port, self.meta, DEFAULT_VSN)
        self._alive_node(a, now, bootstrap=True)
        s = self.settings
        if s.probe_interval > 0:
            self._arm(("probe",), now + self.rng.random() * s.probe_interval)
        if s.gossip_interval > 0 and s.gossip_nodes > 0:
            self._arm(("gossip",), now + self.rng.random() * s.gossip_interval)
        if s.push_pull_interval > 0:
            self._arm(("pushpull",), now + self.rng.random() * s.push_pull_interval)

    def join(self, addrs: list[Address], now: float, timeout: float | None = None) -> list[int]:
        """Push/pull (join=True) with each seed; JoinResult events report each outcome.
        ``timeout`` (at most tcp_timeout) gives up sooner: a reconnect attempt to a member
        that may still be unreachable must not hold a socket for the whole tcp_timeout."""
        ids = []
        for a in addrs:
            sid = self._open_stream(a, self._local_push_pull(join=True), "join", now, timeout)
            ids.append(sid)
        return ids

    def leave(self, now: float) -> None:
        """Tell the cluster we are leaving (dead with From == us); LeaveDone when gossiped."""
        if self.left:
            return
        self.left = True
        me = self.node_map.get(self.name)
        if me is None:
            self._events.append(LeaveDone())
            return
        d = Dead(me.incarnation, self.name, self.name)
        self._dead_node(d, now, on_finished=lambda: self._events.append(LeaveDone()))
        alive = [n for n in self.nodes if n.state == NodeState.ALIVE and n.name != self.name]
        if not alive:
            self.broadcasts.reset()
        # Gossip alone may spend the few transmissions a message gets on recently dead
        # nodes, and a peer that misses our leave would later call us dead, not left:
        # tell every live peer directly as well (memberlist only gossips it).
        for n in alive:
            self._send(n.address, d, target=n.name)

    def update_meta(self, meta: bytes, now: float) -> None:
        """New tags: re-announce ourselves with a higher incarnation."""
        self.meta = meta
        me = self.node_map.get(self.name)
        if me is None:
            return
        self.incarnation = min(self.incarnation + 1, MAX_INCARNATION)
        self._events.append(IncarnationChanged(self.incarnation))
        a = Alive(self.incarnation, self.name, self.addr, self.port, meta, DEFAULT_VSN)
        self._alive_node(a, now, bootstrap=True)

    def readdress(self, addr: str, port: int, now: float) -> None:
        """Our address changed under us (a new DHCP lease, a network that came up after
        we started): move to it without a restart.

        memberlist cannot do this: a peer that holds a name alive at one address calls
        an alive message at another a conflict, and ignores it until the old entry has
        been dead for dead_node_reclaim_time. So first leave under the old incarnation
        (dead with From == us, sent straight to every live peer, which frees the name as
        a graceful leave does), then announce ourselves alive at the new address with a
        higher incarnation. Peers see a leave and a join. A peer that misses the leave
        takes the new address once it has found the old one failed and the name may be
        reclaimed; gossip and push/pull carry it there. Stale news of us at a former
        address is not a name conflict.
        """
        wire = ip_to_wire(addr)
        me = self.node_map.get(self.name)
        if (wire, port) == (self.addr, self.port) or me is None or self.left:
            self.addr, self.port = wire, port
            return
        old = Dead(me.incarnation, self.name, self.name)
        for n in self.nodes:
            if n.state in (NodeState.ALIVE, NodeState.SUSPECT) and n.name != self.name:
                self._send(n.address, old, target=n.name)
        if self.addr_names.get(me.address) == self.name:
            del self.addr_names[me.address]
        self._former.add(me.address)
        self._former.discard((addr, port))
        self.addr, self.port = wire, port
        me.addr, me.port = wire, port
        self.addr_names[me.address] = self.name
        self.incarnation = min(max(self.incarnation, me.incarnation) + 1, MAX_INCARNATION)
        me.incarnation = self.incarnation
        self._events.append(IncarnationChanged(self.incarnation))
        a = Alive(self.incarnation, self.name, wire, port, self.meta, me.vsn)
        self.broadcasts.queue(Broadcast(encode_message(a), self.name))

    def queue_user_broadcast(
        self,
        payload: bytes,
        name: str | None = None,
        on_finished: Callable[[], None] | None = None,
        exclude: str | None = None,
    ) -> Broadcast:
        """Gossip a delegate (Serf or replication) message, piggybacked on our packets.

        `exclude` names a node never to send it to (where the message came from).
        """
        b = Broadcast(payload, name, on_finished, exclude)
        self.user_broadcasts.queue(b)
        return b

    def send_user(self, addr: Address, payload: bytes) -> None:
        """Send a delegate message straight to one node (best effort, one UDP packet)."""
        self._send(addr, UserMsg(payload))

    def send_reliable(self, addr: Address, payload: bytes, now: float) -> int:
        """Send a delegate message over TCP (memberlist's SendReliable), for payloads too
        big for a packet. The result arrives as a StreamDone event with the stream id."""
        return self._open_stream(addr, UserMsg(payload), "user", now)

    # --- public: outputs -----------------------------------------------------------------

    def packets_to_send(self) -> list[SendPacket]:
        out, self._packets = self._packets, []
        return out

    def streams_to_open(self) -> list[OpenStream]:
        out, self._open = self._open, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def next_timer(self) -> float | None:
        if (
            self._gossip_parked
            and (len(self.broadcasts) or len(self.user_broadcasts))
            and self._gossip_target(self._last_gossip)
        ):
            self._gossip_parked = False
            self._arm(("gossip",), self._last_gossip + self.settings.gossip_interval)
        while self._timers:
            t = self._timers[0]
            if self._armed.get(t.key) == t.seq:
                return t.when
            heapq.heappop(self._timers)
        return None

    def handle_timer(self, now: float) -> None:
        """Run every timer due at or before now."""
        while self._timers and self._timers[0].when <= now:
            t = heapq.heappop(self._timers)
            if self._armed.get(t.key) != t.seq:
                continue
            del self._armed[t.key]
            self._fire(t.key, now)

    # --- public: views -------------------------------------------------------------------

    def num_nodes(self) -> int:
        return len(self.nodes)

    def members(self) -> list[Member]:
        return sorted(self.nodes, key=lambda m: m.name)

    def alive_members(self) -> list[Member]:
        return [m for m in self.nodes if m.state == NodeState.ALIVE]

    @property
    def health_score(self) -> int:
        return self.awareness.score

    # --- public: inputs ------------------------------------------------------------------

    def handle_message(self, msg: Message, source: Address, now: float) -> None:
        """One message from a UDP packet (the wire layer has already split compounds)."""
        if isinstance(msg, Ping):
            self._handle_ping(msg, source)
        elif isinstance(msg, IndirectPingReq):
            self._handle_indirect_ping(msg, source, now)
        elif isinstance(msg, AckResp):
            self._handle_ack(msg, now)
        elif isinstance(msg, NackResp):
            p = self._probes.get(msg.seq_no)
            if p is not None:
                p.nacks += 1
        elif isinstance(msg, Suspect):
            self._suspect_node(msg, now)
        elif isinstance(msg, Alive):
            if msg.port == 0:
                msg = Alive(msg.incarnation, msg.node, msg.addr, self.port, msg.meta, msg.vsn)
            self._alive_node(msg, now)
        elif isinstance(msg, Dead):
            self._dead_node(msg, now)
        elif isinstance(msg, UserMsg):
            self._events.append(UserMessage(msg.payload, source))
        else:
            self._reject("unexpected_packet", f"{type(msg).__name__} in a UDP packet")

    def handle_stream(self, msg: Message, source: Address, now: float) -> Message | None:
        """A message read from an incoming TCP stream; returns the reply to write, if any."""
        if isinstance(msg, PushPull):
            reply = self._local_push_pull(join=msg.join)
            self._merge_remote(msg, now, source)
            return reply
        if isinstance(msg, Ping):
            if msg.node and msg.node != self.name:
                self._reject("wrong_node", f"TCP ping for {msg.node!r}")
                return None
            return AckResp(msg.seq_no, self.ack_payload)
        if isinstance(msg, UserMsg):
            self._events.append(UserMessage(msg.payload, source))
            return None
        self._reject("unexpected_stream", f"{type(msg).__name__} on a TCP stream")
        return None

    def stream_result(
        self, stream_id: int, reply: Message | None, error: str | None, now: float
    ) -> None:
        """The outcome of a stream we asked for: its reply, or why it failed."""
        st = self._streams.pop(stream_id, None)
        if st is None:
            return
        if st.kind == "user":
            self._events.append(StreamDone(stream_id, st.addr, error))
            return
        if st.kind == "ping":
            p = self._probes.get(st.probe_seq)
            if p is not None and isinstance(reply, AckResp) and reply.seq_no == p.seq:
                p.fallback_ok = True
            return
        if error is None and not isinstance(reply, PushPull):
            error = f"unexpected reply {type(reply).__name__}"
        if error is None and isinstance(reply, PushPull):
            self._merge_remote(reply, now, st.addr)
        if st.kind == "join":
            self._events.append(JoinResult(stream_id, st.addr, error))
        elif error is not None:
            log.debug("push/pull with %s:%d failed: %s", st.addr[0], st.addr[1], error)

    # --- timers --------------------------------------------------------------------------

    def _arm(self, key: Hashable, when: float) -> None:
        seq = next(self._timer_seq)
        self._armed[key] = seq
        heapq.heappush(self._timers, _Timer(when, seq, key))

    def _disarm(self, key: Hashable) -> None:
        self._armed.pop(key, None)

    def _fire(self, key: Hashable, now: float) -> None:
        assert isinstance(key, tuple)
        kind = key[0]
        if kind == "probe":
            self._probe(now)
        elif kind == "gossip":
            self._gossip(now)
            self._last_gossip = now
            queued = len(self.broadcasts) or len(self.user_broadcasts)
            if (queued and self._gossip_target(now)) or not self.settings.gossip_park:
                self._arm(("gossip",), now + self.settings.gossip_interval)
            else:
                # nothing queued, or nobody to send it to (a node alone): a tick would send
                # nothing; next_timer resumes it when both are there again
                self._gossip_parked = True
        elif kind == "pushpull":
            self._push_pull_random(now)
            interval = push_pull_scale(self.settings.push_pull_interval, self.num_nodes())
            self._arm(("pushpull",), now + interval)
        elif kind == "probe_timeout":
            self._probe_indirect(key[1], now)
        elif kind == "probe_deadline":
            self._probe_finish(key[1], now)
        elif kind == "suspicion":
            self._suspicion_expired(key[1], key[2], now)
        elif kind == "forward_expire":
            self._forward_expired(key[1])
        elif kind == "stream_expire":
            self.stream_result(key[1], None, "timeout", now)

    # --- sending -------------------------------------------------------------------------

    def _max_broadcast(self, *, user: bool) -> int:
        return max_broadcast(self.settings.udp_buffer_size, self.encryption_overhead, user=user)

    def _piggyback(self, used: int, target: str | None = None) -> list[bytes]:
        limit = (
            self.settings.udp_buffer_size
            - used
            - COMPOUND_HEADER_OVERHEAD
            - self.encryption_overhead
        )
        msgs = self.broadcasts.get(COMPOUND_OVERHEAD, limit, target)
        left = limit - sum(len(m) + COMPOUND_OVERHEAD for m in msgs)
        if left > COMPOUND_OVERHEAD + USER_MSG_OVERHEAD and len(self.user_broadcasts):
            user = self.user_broadcasts.get(COMPOUND_OVERHEAD + USER_MSG_OVERHEAD, left, target)
            for payload in user:
                msgs.append(bytes([UserMsg.TYPE]) + payload)
        return msgs

    def _send(
        self, addr: Address, msg: Message, member: Member | None = None, target: str | None = None
    ) -> None:
        data = encode_message(msg)
        if target is None:
            # acks, nacks and direct messages know only an address: find whose it is, so
            # a broadcast that must not go back to its source is not piggybacked on them
            target = member.name if member is not None else self.addr_names.get(addr)
        extra = self._piggyback(len(data) + COMPOUND_OVERHEAD, target)
        self._packets.append(SendPacket(addr, (data, *extra), member))

    def _open_stream(
        self, addr: Address, request: Message, kind: str, now: float, timeout: float | None = None
    ) -> int:
        sid = next(self._stream_ids)
        limit = self.settings.tcp_timeout
        deadline = now + (limit if timeout is None else min(timeout, limit))
        self._streams[sid] = _Stream(kind, addr)
        self._open.append(OpenStream(sid, addr, request, deadline))
        self._arm(("stream_expire", sid), deadline + 0.001)
        return sid

    def _ping_for(self, target: str, seq: int) -> Ping:
        return Ping(seq, target, self.addr, self.port, self.name)

    # --- probing -------------------------------------------------------------------------

    def _probe(self, now: float) -> None:
        """One probe per interval, as memberlist's ticker does.

        Lifeguard's awareness stretches a probe's timeout and deadline by the health
        score; a probe still waiting for its deadline holds the next one back (Go's
        probe blocks its ticker), so a struggling node probes less often, while a
        healthy one whose probes are acked keeps the base interval.
        """
        base = self.settings.probe_interval
        busy = [p.deadline for p in self._probes.values() if not p.acked]
        if busy and max(busy) > now:
            self._arm(("probe",), max(busy))
            return
        self._arm(("probe",), now + base)
        interval = self.awareness.scale(base)
        if self.left:
            return
        checked = 0
        while checked < len(self.nodes):
            if self.probe_index >= len(self.nodes):
                self._reset_nodes(now)
                self.probe_index = 0
                checked += 1
                continue
            node = self.nodes[self.probe_index]
            self.probe_index += 1
            if node.name == self.name or node.dead_or_left:
                checked += 1
                continue
            self._probe_node(node, now, interval)
            return

    def _probe_node(self, node: Member, now: float, interval: float) -> None:
        seq = next(self._seq) & 0xFFFFFFFF
        probe = _Probe(seq, node.name, now, now + interval)
        self._probes[seq] = probe
        ping = self._ping_for(node.name, seq)
        if node.state == NodeState.ALIVE:
            self._send(node.address, ping, target=node.name)
        else:
            # the buddy system: tell a suspect it is suspected, so it can refute at once
            sus = Suspect(node.incarnation, node.name, self.name)
            self._packets.append(
                SendPacket(node.address, (encode_message(ping), encode_message(sus)), node)
            )
        timeout = self.awareness.scale(self.settings.probe_timeout)
        self._arm(("probe_timeout", seq), now + timeout)
        self._arm(("probe_deadline", seq), probe.deadline)

    def _probe_indirect(self, seq: int, now: float) -> None:
        p = self._probes.get(seq)
        if p is None or p.acked:
            return
        target = self.node_map.get(p.target)
        if target is None:
            return
        peers = self._k_random(
            self.settings.indirect_checks,
            lambda n: n.name in (self.name, target.name) or n.state != NodeState.ALIVE,
        )
        for peer in peers:
            want_nack = peer.pmax >= 4
            p.expected_nacks += want_nack
            ind = IndirectPingReq(
                seq,
                target.addr,
                target.port,
                target.name,
                want_nack,
                self.addr,
                self.port,
                self.name,
            )
            self._send(peer.address, ind, target=peer.name)
        if not self.settings.disable_tcp_pings and target.pmax >= 3:
            sid = next(self._stream_ids)
            self._streams[sid] = _Stream("ping", target.address, seq)
            p.fallback = sid
            self._open.append(
                OpenStream(sid, target.address, self._ping_for(target.name, seq), p.deadline)
            )

    def _probe_finish(self, seq: int, now: float) -> None:
        p = self._probes.pop(seq, None)
        self._disarm(("probe_timeout", seq))
        if p is None or p.acked:
            return
        if p.fallback is not None:
            self._streams.pop(p.fallback, None)
        if p.fallback_ok:
            # memberlist logs this at WARN on every probe; under packet loss that floods
            # the journal, so count it (udp_fallbacks) and keep the log at debug
            self.udp_fallbacks += 1
            log.debug("reached %s over TCP but not over UDP", p.target)
            self._awareness(-1)
            return
        # missing nacks mean our own network or CPU is the problem: raise our health score
        delta = max(p.expected_nacks - p.nacks, 0) if p.expected_nacks > 0 else 1
        self._awareness(delta)
        node = self.node_map.get(p.target)
        if node is None:
            return
        log.info("suspect %s has failed, no acks received", node.name)
        self._suspect_node(Suspect(node.incarnation, node.name, self.name), now)

    def _handle_ack(self, ack: AckResp, now: float) -> None:
        p = self._probes.pop(ack.seq_no, None)
        if p is not None:
            p.acked = True
            self._disarm(("probe_timeout", p.seq))
            self._disarm(("probe_deadline", p.seq))
            if p.fallback is not None:
                self._streams.pop(p.fallback, None)
            self._awareness(-1)
            return
        f = self._forwards.pop(ack.seq_no, None)
        if f is not None and not f.done:
            f.done = True
            self._disarm(("forward_expire", ack.seq_no))
            self._send(f.requester, AckResp(f.their_seq, b""))

    def _handle_ping(self, ping: Ping, source: Address) -> None:
        if ping.node and ping.node != self.name:
            self._reject("wrong_node", f"ping for {ping.node!r}")
            return
        dest = source
        if ping.source_addr and ping.source_port:
            host = _host(ping.source_addr)
            if host:
                dest = (host, ping.source_port)
        self._send(dest, AckResp(ping.seq_no, self.ack_payload))

    def _handle_indirect_ping(self, ind: IndirectPingReq, source: Address, now: float) -> None:
        host = _host(ind.target)
        if not host:
            self._reject("bad_address", "indirect ping with an unusable target address")
            return
        port = ind.port or self.port
        requester = source
        if ind.source_addr and ind.source_port:
            h = _host(ind.source_addr)
            if h:
                requester = (h, ind.source_port)
        local = next(self._seq) & 0xFFFFFFFF
        self._forwards[local] = _Forward(ind.seq_no, requester, ind.nack)
        self._arm(("forward_expire", local), now + self.settings.probe_timeout)
        self._send((host, port), self._ping_for(ind.node, local))

    def _forward_expired(self, local: int) -> None:
        f = self._forwards.pop(local, None)
        if f is not None and not f.done and f.want_nack:
            self._send(f.requester, NackResp(f.their_seq))

    # --- gossip and anti-entropy ---------------------------------------------------------

    def _gossip(self, now: float) -> None:
        dead_time = self.settings.gossip_to_the_dead_time

        def skip(n: Member) -> bool:
            if n.name == self.name:
                return True
            if n.state in (NodeState.ALIVE, NodeState.SUSPECT):
                return False
            if n.state == NodeState.DEAD:  # gossip to the recently dead: they may be back
                return now - n.state_change > dead_time
            return True

        if not len(self.broadcasts) and not len(self.user_broadcasts):
            return
        for node in self._k_random(self.settings.gossip_nodes, skip):
            msgs = self._piggyback(0, node.name)
            if not msgs:
                return
            self._packets.append(SendPacket(node.address, tuple(msgs), node))

    def _gossip_target(self, now: float) -> bool:
        """Whether a gossip tick at ``now`` would have anyone to send to (``_gossip``'s
        skip rule: a live or suspect peer, or one dead less than gossip_to_the_dead_time).
        A node's state_change moves only when its state does, so a parked tick asked with
        the time it parked sees every later death as recent."""
        dead_time = self.settings.gossip_to_the_dead_time
        for n in self.nodes:
            if n.name == self.name:
                continue
            if n.state in (NodeState.ALIVE, NodeState.SUSPECT):
                return True
            if n.state == NodeState.DEAD and now - n.state_change <= dead_time:
                return True
        return False

    def _push_pull_random(self, now: float) -> None:
        nodes = self._k_random(1, lambda n: n.name == self.name or n.state != NodeState.ALIVE)
        if nodes:
            self._open_stream(nodes[0].address, self._local_push_pull(False), "pushpull", now)

    def _local_push_pull(self, join: bool) -> PushPull:
        states = tuple(
            PushNodeState(n.name, n.addr, n.port, n.meta, n.incarnation, n.state, n.vsn)
            for n in self.nodes
        )
        return PushPull(states, self.local_state(join), join)

    def _merge_remote(self, pp: PushPull, now: float, peer: Address | None = None) -> None:
        problem = self._verify_protocol(pp)
        if problem is not None:
            self._reject("incompatible", problem, peer)
            return
        for r in pp.nodes:
            # since we moved: a peer that still holds our old address, or us not alive
            if (
                r.name == self.name
                and self._former
                and ((r.addr, r.port) != (self.addr, self.port) or r.state != NodeState.ALIVE)
            ):
                self.stale_views += 1
            if r.state == NodeState.ALIVE:
                self._alive_node(Alive(r.incarnation, r.name, r.addr, r.port, r.meta, r.vsn), now)
            elif r.state == NodeState.LEFT:
                self._dead_node(Dead(r.incarnation, r.name, r.name), now)
            elif r.state in (NodeState.DEAD, NodeState.SUSPECT):
                # we only believe what we can check: treat it as a suspicion
                self._suspect_node(Suspect(r.incarnation, r.name, self.name), now)
        if pp.user_state:
            self._events.append(RemoteState(pp.user_state, pp.join))

    def _verify_protocol(self, pp: PushPull) -> str | None:
        """memberlist's verifyProtocol: every version in use fits every live node's range."""
        ranges: list[bytes] = [r.vsn for r in pp.nodes if r.state == NodeState.ALIVE]
        ranges += [n.vsn for n in self.nodes if n.state == NodeState.ALIVE]
        ranges = [v for v in ranges if len(v) >= 6]
        if not ranges:
            return None
        pmin = max(v[0] for v in ranges)
        pmax = min(v[1] for v in ranges)
        dmin = max(v[3] for v in ranges)
        dmax = min(v[4] for v in ranges)
        for name, v in [(r.name, r.vsn) for r in pp.nodes] + [(n.name, n.vsn) for n in self.nodes]:
            if len(v) < 6:
                continue  # flagged by _alive_node; never crash on it here
            if not pmin <= v[2] <= pmax:
                return f"node {name!r} protocol version {v[2]} is incompatible: [{pmin}, {pmax}]"
            if not dmin <= v[5] <= dmax:
                return f"node {name!r} delegate version {v[5]} is incompatible: [{dmin}, {dmax}]"
        return None

    # --- the state rules (memberlist state.go) -------------------------------------------

    def _alive_node(self, a: Alive, now: float, bootstrap: bool = False) -> None:
        if self.left and a.node == self.name:
            return
        problem = vsn_problem(a.vsn)
        if problem is not None:
            # a short Vsn crashes serf 0.9.4: never accept or relay one
            self._reject(problem, f"alive for {a.node!r} with a {len(a.vsn)}-byte Vsn")
            return
        if a.vsn[0] == 0 or a.vsn[1] == 0 or a.vsn[0] > a.vsn[1]:
            self._reject(
                "bad_vsn", f"alive for {a.node!r} with protocol range {a.vsn[0]}..{a.vsn[1]}"
            )
            return
        if not _host(a.addr):
            self._reject("bad_address", f"alive for {a.node!r} with a {len(a.addr)}-byte address")
            return
        if not a.node:
            self._reject("no_name", "alive without a node name")
            return
        state = self.node_map.get(a.node)
        updates_node = False
        if state is None:
            state = Member(a.node, a.addr, a.port, a.meta, a.vsn, 0, NodeState.DEAD, now)
            self.node_map[a.node] = state
            n = len(self.nodes)
            offset = self.rng.randrange(n + 1) if n else 0
            self.nodes.append(state)
            self.nodes[offset], self.nodes[n] = self.nodes[n], self.nodes[offset]
        elif state.addr != a.addr or state.port != a.port:
            if (
                state.name == self.name
                and (_host(a.addr), a.port) in self._former
                and a.incarnation < state.incarnation
            ):
                return  # stale news of us from before we moved: not a rival
            reclaim = self.settings.dead_node_reclaim_time
            can_reclaim = reclaim > 0 and now - state.state_change > reclaim
            if state.state == NodeState.LEFT or (state.state == NodeState.DEAD and can_reclaim):
                log.info(
                    "updating address for left or failed node %s to %s:%d",
                    state.name,
                    _host(a.addr),
                    a.port,
                )
                updates_node = True
            else:
                other = (_host(a.addr), a.port)
                # a newcomer with a clashing name keeps announcing itself: say it once a
                # minute per claimant, not once per alive message
                last = self._conflicts_logged.get((state.name, other))
                if last is None or now - last >= 60.0:
                    self._conflicts_logged[(state.name, other)] = now
                    log.error(
                        "conflicting address for %s: we have %s:%d, it claims %s:%d (state %s)",
                        state.name,
                        state.host,
                        state.port,
                        other[0],
                        other[1],
                        state.state_name,
                    )
                self._events.append(NameConflict(_copy(state), other))
                return
        is_local = state.name == self.name
        if a.incarnation <= state.incarnation and not is_local and not updates_node:
            return
        if a.incarnation < state.incarnation and is_local:
            return
        self._clear_suspicion(a.node)
        old_state, old_meta = state.state, state.meta
        if not bootstrap and is_local:
            if a.incarnation == state.incarnation and a.meta == state.meta and a.vsn == state.vsn:
                return
            self._refute(state, a.incarnation, now)
            log.warning("refuting an alive message for ourselves (%s)", a.node)
        else:
            self.broadcasts.queue(Broadcast(encode_message(a), a.node))
            state = self._own(state)
            state.vsn = a.vsn
            state.incarnation = a.incarnation
            state.meta = a.meta
            state.addr = a.addr
            state.port = a.port
            self.addr_names[state.address] = state.name
            if state.state != NodeState.ALIVE:
                state.state = NodeState.ALIVE
                state.state_change = now
        if old_state in (NodeState.DEAD, NodeState.LEFT):
            self._events.append(MemberEvent("join", _copy(state)))
        elif old_state == NodeState.SUSPECT and state.state == NodeState.ALIVE:
            self._events.append(MemberEvent("alive", _copy(state)))
        elif old_meta != state.meta:
            self._events.append(MemberEvent("update", _copy(state)))

    def _suspect_node(self, s: Suspect, now: float) -> None:
        state = self.node_map.get(s.node)
        if state is None or s.incarnation < state.incarnation:
            return
        sus = self.suspicions.get(s.node)
        if sus is not None:
            if sus.confirm(s.from_node, now):
                self.broadcasts.queue(Broadcast(encode_message(s), s.node))
                self._arm(("suspicion", s.node, state.state_change), sus.deadline)
            return
        if state.state != NodeState.ALIVE:
            return
        if state.name == self.name:
            self._refute(state, s.incarnation, now)
            log.warning("refuting a suspect message (from %s)", s.from_node)
            return
        self.broadcasts.queue(Broadcast(encode_message(s), s.node))
        state = self._own(state)
        state.incarnation = s.incarnation
        state.state = NodeState.SUSPECT
        state.state_change = now
        k = self.settings.suspicion_mult - 2
        n = self.num_nodes()
        if n - 2 < k:
            k = 0
        min_t = suspicion_timeout(self.settings.suspicion_mult, n, self.settings.probe_interval)
        max_t = self.settings.suspicion_max_timeout_mult * min_t
        sus = Suspicion(s.from_node, k, min_t, max_t, now)
        self.suspicions[s.node] = sus
        self._arm(("suspicion", s.node, now), sus.deadline)
        self._suspicion_keys[s.node] = ("suspicion", s.node, now)
        self._events.append(MemberEvent("suspect", _copy(state)))

    def _suspicion_expired(self, name: str, change_time: float, now: float) -> None:
        state = self.node_map.get(name)
        if state is None or state.state != NodeState.SUSPECT or state.state_change != change_time:
            return
        sus = self.suspicions.get(name)
        log.info(
            "marking %s as failed, suspect timeout reached (%d peer confirmations)",
            name,
            sus.n if sus else 0,
        )
        self._dead_node(Dead(state.incarnation, name, self.name), now)

    def _clear_suspicion(self, name: str) -> None:
        self.suspicions.pop(name, None)
        key = self._suspicion_keys.pop(name, None)
        if key is not None:
            self._disarm(key)

    def _dead_node(
        self, d: Dead, now: float, on_finished: Callable[[], None] | None = None
    ) -> None:
        state = self.node_map.get(d.node)
        if state is None or d.incarnation < state.incarnation:
            return
        self._clear_suspicion(d.node)
        if state.dead_or_left:
            return
        if state.name == self.name and not self.left:
            self._refute(state, d.incarnation, now)
            log.warning("refuting a dead message (from %s)", d.from_node)
            return
        self.broadcasts.queue(Broadcast(encode_message(d), d.node, on_finished))
        state = self._own(state)
        state.incarnation = d.incarnation
        state.state = NodeState.LEFT if d.node == d.from_node else NodeState.DEAD
        state.state_change = now
        self._events.append(
            MemberEvent("left" if state.state == NodeState.LEFT else "dead", _copy(state))
        )

    def _awareness(self, delta: int) -> None:
        if self.awareness.apply_delta(delta):
            self._events.append(HealthScore(self.awareness.score))

    def _refute(self, me: Member, accused_inc: int, now: float) -> None:
        # incarnations are uint32 on the wire: an accusation at the very top cannot be
        # out-bid (Go would wrap around to 0); clamp rather than overflow, and count it
        if accused_inc >= MAX_INCARNATION - 1:
            self._reject("incarnation_exhausted", f"accused at incarnation {accused_inc}")
        self.incarnation = min(max(self.incarnation + 1, accused_inc + 1), MAX_INCARNATION)
        me.incarnation = self.incarnation
        self._events.append(IncarnationChanged(self.incarnation))
        self._awareness(1)
        a = Alive(self.incarnation, me.name, me.addr, me.port, me.meta, me.vsn)
        self.broadcasts.queue(Broadcast(encode_message(a), me.name))

    # --- helpers -------------------------------------------------------------------------

    def adopt_members(
        self, nodes: list[Member], node_map: dict[str, Member], addr_names: dict[Address, str]
    ) -> None:
        """Take a converged member table built once for many cores (the simulator's
        converged start: 10,000 protocol joins, each merging up to 10,000 members, would
        take hours). The records are ``shared``: each is copied by the first core that
        changes it (_own), so 10,000 tables of 10,000 members hold 10,000 records, not
        10^8. The containers are copied here; our own record stays ours; the probe order
        is shuffled with our rng, as joins in a random order would leave it."""
        me = self.node_map[self.name]
        self.node_map = dict(node_map)
        self.node_map[self.name] = me
        self.addr_names = dict(addr_names)
        self.addr_names[me.address] = self.name
        self.nodes = [n for n in nodes if n.name != self.name]
        self.nodes.append(me)
        self.rng.shuffle(self.nodes)
        self.probe_index = 0

    def _own(self, m: Member) -> Member:
        """This core's own copy of a record it is about to change (see adopt_members)."""
        if not m.shared:
            return m
        mine = _copy(m)
        self.node_map[m.name] = mine
        # by identity, at C speed (Member's == compares every field in Python): at 10,000
        # nodes each core owns a record of every node the run suspects
        same = map(operator.is_, self.nodes, itertools.repeat(m))
        i = next(itertools.compress(itertools.count(), same))
        self.nodes[i] = mine
        return mine

    def _reset_nodes(self, now: float) -> None:
        """Forget nodes dead or left longer than gossip_to_the_dead_time; reshuffle."""
        keep = []
        for n in self.nodes:
            if n.dead_or_left and now - n.state_change > self.settings.gossip_to_the_dead_time:
                self.node_map.pop(n.name, None)
                if self.addr_names.get(n.address) == n.name:
                    del self.addr_names[n.address]
            else:
                keep.append(n)
        self.nodes = keep
        self.rng.shuffle(self.nodes)

    def _k_random(self, k: int, skip: Callable[[Member], bool]) -> list[Member]:
        n = len(self.nodes)
        out: list[Member] = []
        for _ in range(3 * n):
            if len(out) >= k:
                break
            node = self.nodes[self.rng.randrange(n)]
            if skip(node) or node in out:
                continue
            out.append(node)
        return out

    def _reject(self, kind: str, detail: str, peer: Address | None = None) -> None:
        self._events.append(Rejected(kind, detail, peer))


_host = host_of


def _copy(m: Member) -> Member:
    return Member(m.name, m.addr, m.port, m.meta, m.vsn, m.incarnation, m.state, m.state_change)


__all__ = [
    "ENCRYPTION_OVERHEAD",
    "Event",
    "JoinResult",
    "LeaveDone",
    "MemberEvent",
    "Membership",
    "NameConflict",
    "OpenStream",
    "Rejected",
    "RemoteState",
    "SendPacket",
    "StreamDone",
    "UserMessage",
    "max_broadcast",
]
