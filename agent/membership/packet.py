"""The UDP packet layer: a node's messages <-> whole datagrams, as memberlist 0.2.2 frames them.

Sans-I/O policy that used to sit in the asyncio transport, so the simulator and the live
node run the same bytes. Outbound, one core ``SendPacket`` becomes datagrams: a compound
of its messages (at most 255 parts each, as memberlist's one-byte count allows), LZW
compression kept only when smaller, a CRC for peers speaking protocol 5 or later, then
AES-GCM with the keyring's primary key. No label is written: memberlist 0.2.2 has none.
Inbound, the reverse with every check of ``codec.decode_packet``: decryption (required
when a keyring is set), CRC, bounded decompression and nesting, and a label header is
refused by name. Whatever is wrong is counted by kind, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agent.membership.codec import MAX_COMPOUND_PARTS, decode_packet, encode_packet
from agent.membership.counters import Counters
from agent.membership.errors import DecodeError, EncodeError
from agent.membership.keyring import ENCRYPTION_VERSION, Keyring, encrypted_length
from agent.membership.member import Member
from agent.membership.messages import Message
from agent.membership.refusals import Refusals

__all__ = ["MAX_UDP", "PacketLayer"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
#: The most a datagram can hold; anything longer was cut by the socket anyway.
MAX_UDP = 65536


class PacketLayer:
    """Encodes and decodes whole UDP packets for one node, counting into its Counters."""

    __slots__ = ("_keyring", "compress", "counters", "refusals", "verify_incoming")

    def __init__(
        self,
        counters: Counters,
        *,
        keyring: Keyring | None = None,
        compress: bool = True,
        verify_incoming: bool = True,
        refusals: Refusals | None = None,
    ) -> None:
        self.counters = counters
        self.refusals = refusals if refusals is not None else Refusals()
        self._keyring = keyring
        self.compress = compress
        self.verify_incoming = verify_incoming

    @property
    def keyring(self) -> Keyring | None:
        return self._keyring

    @keyring.setter
    def keyring(self, keyring: Keyring | None) -> None:
        """A rotated keyring takes effect from the next packet either way."""
        self._keyring = keyring

    @property
    def overhead(self) -> int:
        """Bytes encryption adds to a packet: the core leaves them out of its piggyback
        budget so an encrypted packet still fits udp_buffer_size (memberlist does the same)."""
        return encrypted_length(ENCRYPTION_VERSION, 0) if self._keyring is not None else 0

    def encode(
        self, messages: Sequence[bytes], addr: Address, member: Member | None
    ) -> list[bytes]:
        """The datagrams for one packet's encoded messages (usually one; an empty list if
        they cannot be encoded, which is logged). ``member`` is the peer if known: its
        protocol version decides the CRC, as memberlist's rawSendMsgPacket does."""
        crc = member is not None and member.pmax >= 5
        out: list[bytes] = []
        for i in range(0, len(messages), MAX_COMPOUND_PARTS):
            chunk = messages[i : i + MAX_COMPOUND_PARTS]
            try:
                data = encode_packet(chunk, compress=self.compress, crc=crc, keyring=self._keyring)
            except EncodeError as e:
                log.error("cannot encode a packet for %s:%d: %s", addr[0], addr[1], e)
                continue
            self.counters.packets_out += 1
            self.counters.bytes_out += len(data)
            out.append(data)
        return out

    def decode(self, data: bytes, addr: Address) -> tuple[Message, ...]:
        """The messages a received datagram holds; damage is counted, never raised."""
        self.counters.packets_in += 1
        self.counters.bytes_in += len(data)
        try:
            result = decode_packet(
                data[:MAX_UDP], self._keyring, verify_incoming=self.verify_incoming
            )
        except DecodeError as e:
            self.counters.bad(str(e.kind))
            self.refusals.note(str(e.kind), e.reason, addr)
            log.debug("dropped packet from %s:%d: %s", addr[0], addr[1], e)
            return ()
        except Exception:  # a decoder bug, not the peer's garbage: never fatal, never hidden
            log.exception("internal error decoding a packet from %s:%d", addr[0], addr[1])
            self.counters.bad("internal-error")
            return ()
        for problem in result.problems:
            self.counters.bad(str(problem.kind))
        return result.messages
