"""Replication: how the replicated state (agent.node.state) travels between nodes.

Sans-I/O, like the membership core it rides on: the runtime feeds it membership events
and local deltas, and drains the messages it wants sent (``outputs()``); it never
touches a socket or a clock. Three mechanisms (docs/replication.md):

- **Dissemination.** A delta a local mutator made is gossiped: queued as a memberlist
  user broadcast when it fits a UDP packet (of the ``[gossip]`` settings' buffer size:
  one that fits none would wait in the queue forever), else sent as a reliable (TCP)
  user message to ``fanout`` random peers. A node that receives a delta joins it, and
  passes on *only the part that was new to it* (the delta restricted to the dots its
  causal context lacked: Enes et al.'s redundant-state removal), never to the node it
  came from, in the same way (small: gossip excluding the sender; big: TCP to ``fanout``
  other peers). A dot is new to a node once, so each node passes each change on at
  most once, and memberlist's retransmit limit bounds the rest.
- **Anti-entropy.** Our push/pull user state carries our digest (the causal context:
  a counter per writer, plus rare outliers, plus a fingerprint of the live dots). On a
  peer's digest we send it ``state.delta_for(digest)``, what it lacks and nothing else
  (one UDP user message if it fits, else TCP); the peer does the same for us in the
  same exchange. Equal replicas exchange digests only.
- **Living with Serf.** Our messages start with 0x45 ('E'), outside Serf's message
  types 0..9: a Serf agent that gets one logs a warning and drops it. Our push/pull user
  state *is* a valid Serf messagePushPull with one extra map key (``EdgeAgent``) holding
  our digest: go-msgpack skips unknown keys, so Serf merges an empty push/pull and stays
  quiet, and our nodes read the extra key. We send direct messages only to members with
  the ``role=edge-agent`` tag.
- **Hello.** A delta with nothing in it is a hello: as ``KIND_DELTA`` it asks for an
  answer, as ``KIND_REPAIR`` it is one. It proves to the receiver that we speak this
  protocol (``on_heard`` reports every sender heard, for agent/node/proof.py); an older
  agent takes it for a redundant delta and drops it.

Malformed input (from a peer or a Serf agent) never raises out of ``handle_event``: it
is dropped and counted (``counters.bad_input``); the decoders raise
``ReplicationDecodeError`` and nothing else.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from agent.crdt import (
    CausalContext,
    CrdtDecodeError,
    Digest,
    Dot,
    KeyVV,
    ORMap,
    decode_digest,
    decode_ormap_context,
    encode_digest,
)
from agent.membership import (
    ENCRYPTION_OVERHEAD,
    DecodeError,
    Event,
    Member,
    MemberEvent,
    NodeState,
    RemoteState,
    SerfMessageType,
    SerfPushPull,
    Settings,
    StreamDone,
    UserMessage,
    decode_tags,
    encode_serf_message,
    max_broadcast,
    packb,
    unpack_one,
)
from agent.node.state import Delta, Key, State, Value, decode_delta, encode_delta

Address = tuple[str, int]

MAGIC = 0x45  # 'E': not a Serf message type (0..9), so Serf drops it with a warning
VERSION = 1
KIND_DELTA = 1  # a change spreading: the receiver passes on what was new to it
KIND_REPAIR = 2  # an anti-entropy answer: what the receiver lacked
KINDS = (KIND_DELTA, KIND_REPAIR)
STATE_KEY = b"EdgeAgent"  # our extra key in Serf's messagePushPull map
MAX_NAME = 255  # node names are length-prefixed with one byte
ROLE = "edge-agent"

DEFAULT_FANOUT = 3
#: bytes: a message this long is first checked for news from its causal context alone
#: (``holds_all_of``); shorter ones decode in well under a millisecond anyway
REDUNDANT_CHECK_MIN = 4096


def max_packet(gossip: Settings) -> int:
    """The longest replication message we gossip: what one packet of ``[gossip]
    udp_buffer_size`` carries as a user broadcast, counting encryption whether or not it
    is on (a keyring may come later; the cost is that a message within 29 bytes of the
    limit goes by TCP). Longer ones go by TCP: queued, they would never be sent."""
    return max_broadcast(gossip.udp_buffer_size, ENCRYPTION_OVERHEAD, user=True)


DEFAULT_MAX_PACKET = max_packet(Settings())


HELLO = encode_delta(ORMap())
"""A hello's delta: an empty one (no real delta is ever empty)."""


class ReplicationDecodeError(ValueError):
    """A replication message or push/pull state that is malformed: the only exception the
    decoders raise, so the caller can count it and drop the input."""


# --- wire format -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplicationMessage:
    """``0x45 version kind len(sender) sender delta``: ``sender`` is the node that sent
    this copy (the previous hop), so the receiver never passes it back there."""

    kind: int
    sender: str
    delta: Delta
    raw_delta: bytes  # the encoded delta, forwarded as is when all of it was new


def _name_bytes(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not raw or len(raw) > MAX_NAME:
        raise ValueError(f"node name must be 1..{MAX_NAME} bytes of UTF-8: {name!r}")
    return raw


def _read_name(data: bytes, at: int) -> tuple[str, int]:
    if len(data) <= at:
        raise ReplicationDecodeError("truncated before the sender name")
    n = data[at]
    raw = data[at + 1 : at + 1 + n]
    if n == 0 or len(raw) != n:
        raise ReplicationDecodeError("empty or truncated sender name")
    try:
        return raw.decode("utf-8"), at + 1 + n
    except UnicodeDecodeError:
        raise ReplicationDecodeError("sender name is not UTF-8") from None


def encode_message(kind: int, sender: str, raw_delta: bytes) -> bytes:
    """A replication user message around an already encoded delta."""
    if kind not in KINDS:
        raise ValueError(f"unknown replication message kind {kind}")
    name = _name_bytes(sender)
    return bytes((MAGIC, VERSION, kind, len(name))) + name + raw_delta


def is_replication(payload: bytes) -> bool:
    """Whether a user-message payload is ours (anything else is Serf's or unknown)."""
    return bool(payload) and payload[0] == MAGIC


def message_context(payload: bytes) -> tuple[str, CausalContext]:
    """The sender and the delta's causal context of a replication message, without
    decoding its entries; ReplicationDecodeError if malformed."""
    data = bytes(payload)
    if len(data) < 4 or data[0] != MAGIC or data[1] != VERSION or data[2] not in KINDS:
        raise ReplicationDecodeError("not a replication message this node reads")
    sender, at = _read_name(data, 3)
    try:
        return sender, decode_ormap_context(data[at:])
    except CrdtDecodeError as e:
        raise ReplicationDecodeError(f"bad delta: {e}") from None


def decode_message(payload: bytes) -> ReplicationMessage:
    """Parse and validate a replication user message; ReplicationDecodeError if malformed."""
    data = bytes(payload)
    if len(data) < 4 or data[0] != MAGIC:
        raise ReplicationDecodeError("not a replication message")
    if data[1] != VERSION:
        raise ReplicationDecodeError(f"unsupported replication version {data[1]}")
    if data[2] not in KINDS:
        raise ReplicationDecodeError(f"unknown replication message kind {data[2]}")
    sender, at = _read_name(data, 3)
    raw = data[at:]
    try:
        delta = decode_delta(raw)
    except CrdtDecodeError as e:
        raise ReplicationDecodeError(f"bad delta: {e}") from None
    return ReplicationMessage(data[2], sender, delta, raw)


def encode_local_state(sender: str, digest: Digest, serf: SerfPushPull | None = None) -> bytes:
    """Our push/pull user state: a valid Serf messagePushPull (``serf``, empty by default)
    whose map has one more key, ``EdgeAgent`` = ``0x45 version len(sender) sender digest``."""
    base = encode_serf_message(serf or SerfPushPull())
    fields = unpack_one(base[1:])
    assert isinstance(fields, dict)
    name = _name_bytes(sender)
    fields[STATE_KEY] = bytes((MAGIC, VERSION, len(name))) + name + encode_digest(digest)
    # go-msgpack writes struct fields sorted by name; keep that shape
    ordered = {k: fields[k] for k in sorted(fields)}
    return bytes((SerfMessageType.PUSH_PULL,)) + packb(ordered)


def decode_remote_state(payload: bytes) -> tuple[str, Digest] | None:
    """(sender, digest) from a peer's push/pull user state; None when it carries none
    (a Serf agent's state, or an empty one); ReplicationDecodeError when ours is broken."""
    if not payload or payload[0] != SerfMessageType.PUSH_PULL:
        return None
    try:
        fields = unpack_one(bytes(payload[1:]))
    except DecodeError:
        return None  # not even msgpack: not ours to judge (Serf would log it)
    if not isinstance(fields, dict) or STATE_KEY not in fields:
        return None
    blob = fields[STATE_KEY]
    if not isinstance(blob, bytes) or len(blob) < 3 or blob[0] != MAGIC:
        raise ReplicationDecodeError("EdgeAgent state is not ours")
    if blob[1] != VERSION:
        raise ReplicationDecodeError(f"unsupported replication version {blob[1]}")
    sender, at = _read_name(blob, 2)
    try:
        return sender, decode_digest(blob[at:])
    except CrdtDecodeError as e:
        raise ReplicationDecodeError(f"bad digest: {e}") from None


def restrict(delta: Delta, dots: CausalContext) -> Delta:
    """``delta`` cut down to the events in ``dots``: its live entries and removal records
    with those dots, and ``dots`` as its context. With ``dots`` = what the receiver had
    not seen, this is exactly what was new to it; the map's per-key dominance and removal
    records carry what the dropped context implied (as for ``delta_for``)."""
    entries: dict[Key, dict[Dot, Value]] = {}
    covers: dict[Dot, KeyVV] = {}
    for key, ents in delta.entries.items():
        kept = {d: v for d, v in ents.items() if dots.contains(d)}
        if kept:
            entries[key] = kept
            for d in kept:
                c = delta.covers.get(d)
                if c:
                    covers[d] = c
    records = {r: rec for r, rec in delta.records.items() if dots.contains(r)}
    return ORMap.from_parts(entries, covers, dots, records, delta.horizon, delta.record_limit)


# --- outputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gossip:
    """Queue as a user broadcast: ``Membership.queue_user_broadcast(payload, exclude=...)``."""

    payload: bytes
    exclude: str | None


@dataclass(frozen=True, slots=True)
class Send:
    """Send to one peer: ``send_reliable(addr, payload)`` (TCP) when ``reliable``, else
    ``send_user(addr, payload)`` (one UDP packet)."""

    node: str
    addr: Address
    payload: bytes
    reliable: bool


Output = Gossip | Send


@dataclass(slots=True)
class ReplicationCounters:
    """Monotonic counts for /metrics (``as_dict`` gives name -> value)."""

    deltas_published: int = 0  # local deltas handed to publish()
    gossiped: int = 0  # messages queued as user broadcasts (local and passed-on)
    sent_tcp: int = 0  # reliable user messages (big deltas and big repairs)
    sent_udp: int = 0  # direct UDP user messages (small repairs)
    bytes_out: int = 0  # payload bytes of the above (a broadcast counted once)
    received: int = 0  # replication messages received and applied
    bytes_in: int = 0
    redundant: int = 0  # received messages that held nothing new
    passed_on: int = 0  # received messages whose new part we passed on
    repairs_sent: int = 0  # anti-entropy answers (the peer lacked something)
    in_sync: int = 0  # anti-entropy exchanges where the peer lacked nothing
    states_sent: int = 0  # push/pull user states we produced
    bad_input: int = 0  # malformed messages or push/pull states, dropped
    unknown_peer: int = 0  # a digest from a node we cannot address (not yet a member)
    tcp_failed: int = 0  # reliable user messages that failed (anti-entropy repairs them)
    hellos_sent: int = 0  # hellos asking or answering (agent/node/proof.py)
    no_peer: int = 0  # changes not spread: no other peer (anti-entropy serves later joiners)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# --- the replicator ----------------------------------------------------------------------------


class Replicator:
    """Spreads one node's ``State`` and repairs it from peers; see the module docstring.

    Wiring (the runtime's job): construct it with the membership core's ``Settings``
    (the packet size), pass ``local_state`` to the membership core, feed every
    membership event to ``handle_event``, hand every local delta to ``publish``, and
    after each of those calls drain ``outputs()`` into the membership node.
    """

    def __init__(
        self,
        state: State,
        *,
        gossip: Settings | None = None,
        fanout: int = DEFAULT_FANOUT,
        rng: random.Random | None = None,
        role: str = ROLE,
        serf_state: Callable[[], SerfPushPull] | None = None,
        on_apply: Callable[[bytes], None] | None = None,
        on_heard: Callable[[str], None] | None = None,
    ) -> None:
        self.state = state
        self.name = state.replica
        _name_bytes(self.name)
        self.max_packet = max_packet(gossip or Settings())  # longer: TCP, never queued
        self.fanout = fanout
        self.rng = rng or random.Random()
        self.role = role
        self.serf_state = serf_state
        self.on_apply = on_apply  # gets the encoded new part of every delta applied (the store)
        self.on_heard = on_heard  # the name of every node heard speaking this protocol
        self.counters = ReplicationCounters()
        self._peers: dict[str, Address] = {}  # live members that run replication
        self._out: list[Output] = []

    # --- inputs ----------------------------------------------------------------------------

    def publish(self, delta: Delta | None) -> None:
        """Spread a delta a local ``State`` mutator returned (None: nothing changed)."""
        if delta is None or delta.is_empty():
            return
        self.counters.deltas_published += 1
        self._spread(encode_delta(delta), exclude=None)

    def handle_event(
        self, ev: Event, decoded: ReplicationMessage | ReplicationDecodeError | None = None
    ) -> set[str]:
        """One membership event; returns the origin ids whose state changed (for the
        runtime's verdict events). Events that are not for us are ignored. ``decoded``:
        the user message's payload already decoded (or found malformed) by the caller,
        who may do that slow part off its event loop for a large delta."""
        if isinstance(ev, UserMessage):
            if is_replication(ev.payload):
                return self._on_message(ev.payload, decoded)
        elif isinstance(ev, RemoteState):
            self._on_remote_state(ev.payload)
        elif isinstance(ev, MemberEvent):
            self._on_member(ev.kind, ev.member)
        elif isinstance(ev, StreamDone) and ev.error is not None:
            self.counters.tcp_failed += 1
        return set()

    def holds_all_of(self, payload: bytes) -> bool:
        """Whether a (large) replication message holds nothing this replica lacks, told
        from its causal context alone. If so it is taken as a redundant copy (counted,
        its sender heard) and need not be decoded: a batch of 10,000 origins reaches a
        node several times, and validating each copy costs a second of CPU."""
        try:
            sender, ctx = message_context(payload)
        except ReplicationDecodeError:
            return False  # the full decode says what is wrong, and counts it
        mine = self.state.crdt.ctx
        if ctx.dot_count() == 0 or not ctx.missing_from(mine).is_empty():
            return False
        self.counters.received += 1
        self.counters.bytes_in += len(payload)
        self.counters.redundant += 1
        self._heard(sender)
        return True

    def set_members(self, members: Iterable[Member]) -> None:
        """Seed the peer table from a member list (when created after membership)."""
        for m in members:
            alive = m.state in (NodeState.ALIVE, NodeState.SUSPECT)
            self._on_member("alive" if alive else "dead", m)

    def local_state(self, join: bool) -> bytes:
        """Membership's ``local_state`` callback: our push/pull user state (a Serf
        push/pull carrying our digest)."""
        self.counters.states_sent += 1
        serf = self.serf_state() if self.serf_state is not None else None
        return encode_local_state(self.name, self.state.state_digest(), serf)

    def greet(self, name: str, *, ask: bool) -> bool:
        """Send a live peer with our role a hello (one datagram): ``ask`` for an answer,
        which proves the peer to us, or answer one. False if it is not such a peer."""
        if name not in self._peers:
            return False
        self.counters.hellos_sent += 1
        self._send(
            name, encode_message(KIND_DELTA if ask else KIND_REPAIR, self.name, HELLO), False
        )
        return True

    # --- outputs and views -----------------------------------------------------------------

    def outputs(self) -> list[Output]:
        """What to hand to membership now (and forget here)."""
        out, self._out = self._out, []
        return out

    def peers(self) -> dict[str, Address]:
        """Live members running replication, by name (a copy)."""
        return dict(self._peers)

    # --- internals -------------------------------------------------------------------------

    def _on_member(self, kind: str, m: Member) -> None:
        if m.name == self.name:
            return
        if kind in ("dead", "left"):
            self._peers.pop(m.name, None)
        elif kind in ("join", "alive", "update"):
            if decode_tags(m.meta).get("role") == self.role:
                self._peers[m.name] = m.address
            else:
                self._peers.pop(m.name, None)  # a Serf agent: it cannot use our messages

    def _heard(self, sender: str) -> None:
        if self.on_heard is not None and sender != self.name:
            self.on_heard(sender)

    def _spread(self, raw_delta: bytes, exclude: str | None, tcp: bool = True) -> bool:
        """Small: one user broadcast. Big: TCP to ``fanout`` random peers (not ``exclude``)
        if ``tcp``, else nothing. Nothing either when no peer but ``exclude`` runs
        replication: no packet would carry the broadcast, which would wait in the queue.
        Whether it was sent."""
        names = sorted(n for n in self._peers if n != exclude)
        if not names:
            self.counters.no_peer += 1
            return False
        msg = encode_message(KIND_DELTA, self.name, raw_delta)
        if len(msg) <= self.max_packet:
            self._out.append(Gossip(msg, exclude))
            self.counters.gossiped += 1
            self.counters.bytes_out += len(msg)
            return True
        if not tcp:
            return False
        for name in self.rng.sample(names, min(self.fanout, len(names))):
            self._send(name, msg, reliable=True)
        return True

    def _send(self, name: str, msg: bytes, reliable: bool) -> None:
        self._out.append(Send(name, self._peers[name], msg, reliable))
        if reliable:
            self.counters.sent_tcp += 1
        else:
            self.counters.sent_udp += 1
        self.counters.bytes_out += len(msg)

    def _on_message(
        self, payload: bytes, decoded: ReplicationMessage | ReplicationDecodeError | None
    ) -> set[str]:
        if decoded is None:
            # every delta reaches a node once per peer passing it on: a copy whose dots
            # are all held is told from its context, not decoded (validating each spec)
            if len(payload) >= REDUNDANT_CHECK_MIN and self.holds_all_of(payload):
                return set()
            try:
                decoded = decode_message(payload)
            except ReplicationDecodeError as e:
                decoded = e
        if isinstance(decoded, ReplicationDecodeError):
            self.counters.bad_input += 1
            return set()
        msg = decoded
        self.counters.received += 1
        self.counters.bytes_in += len(payload)
        self._heard(msg.sender)
        if msg.delta.is_empty():  # a hello (nothing else is ever sent empty)
            if msg.kind == KIND_DELTA and msg.sender != self.name:
                self.greet(msg.sender, ask=False)
            return set()
        ctx = self.state.crdt.ctx
        # the events of this delta we had not seen: computed before the join changes ctx
        new = msg.delta.ctx.missing_from(ctx)
        changed = self.state.apply(msg.delta)
        if new.is_empty():
            self.counters.redundant += 1
            return changed
        # all of it new (a first write, or an overwrite whose predecessor we missed too):
        # pass on the bytes as they came; else cut it down to the new events
        whole = new == msg.delta.ctx
        raw = msg.raw_delta if whole else encode_delta(restrict(msg.delta, new))
        if self.on_apply is not None:
            self.on_apply(raw)
        # a big catch-up stays pairwise (a node back from a long absence would otherwise
        # push all it missed to peers that have it): anti-entropy spreads it further
        if self._spread(raw, exclude=msg.sender, tcp=msg.kind == KIND_DELTA):
            self.counters.passed_on += 1
        return changed

    def _on_remote_state(self, payload: bytes) -> None:
        try:
            remote = decode_remote_state(payload)
        except ReplicationDecodeError:
            self.counters.bad_input += 1
            return
        if remote is None:
            return  # a Serf agent's state: nothing for us
        sender, digest = remote
        if sender == self.name:
            return
        self._heard(sender)
        if sender not in self._peers:
            self.counters.unknown_peer += 1
            return
        delta = self.state.delta_for(digest)
        if delta.is_empty():
            self.counters.in_sync += 1
            return
        self.counters.repairs_sent += 1
        msg = encode_message(KIND_REPAIR, self.name, encode_delta(delta))
        self._send(sender, msg, reliable=len(msg) > self.max_packet)


__all__ = [
    "DEFAULT_FANOUT",
    "DEFAULT_MAX_PACKET",
    "HELLO",
    "KIND_DELTA",
    "KIND_REPAIR",
    "MAGIC",
    "STATE_KEY",
    "VERSION",
    "Gossip",
    "Output",
    "ReplicationCounters",
    "ReplicationDecodeError",
    "ReplicationMessage",
    "Replicator",
    "Send",
    "decode_message",
    "decode_remote_state",
    "encode_local_state",
    "encode_message",
    "is_replication",
    "max_packet",
    "restrict",
]
