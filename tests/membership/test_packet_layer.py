"""The sans-I/O packet layer: what a node's messages look like as whole datagrams."""

from __future__ import annotations

import itertools

from agent.membership.codec import MAX_COMPOUND_PARTS, decode_packet, encode_message, encode_packet
from agent.membership.counters import Counters
from agent.membership.keyring import Keyring
from agent.membership.member import Member
from agent.membership.messages import DEFAULT_VSN, Alive, Ping, Suspect, UserMsg
from agent.membership.packet import PacketLayer

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
ADDR = ("10.0.0.2", 7946)
PING = encode_message(Ping(seq_no=9, node="b", source_addr=bytes([10, 0, 0, 1]), source_port=1))
SUS = encode_message(Suspect(incarnation=3, node="c", from_node="a"))


def fixed_nonces() -> Keyring:
    counter = itertools.count()
    return Keyring([KEY], random_bytes=lambda n: next(counter).to_bytes(n, "big"))


def member(pmax: int) -> Member:
    return Member("b", bytes([10, 0, 0, 2]), 7946, vsn=bytes([1, pmax, 2, 2, 5, 5]))


def test_encode_is_what_the_transport_always_sent() -> None:
    """Byte for byte: compound, compression, CRC for PMax >= 5 peers, encryption."""
    layer = PacketLayer(Counters(), keyring=fixed_nonces(), compress=True)
    got = layer.encode((PING, SUS), ADDR, member(5))
    want = encode_packet([PING, SUS], compress=True, crc=True, keyring=fixed_nonces())
    assert got == [want]
    # an unknown peer (an ack to an address) or an old one gets no CRC
    for peer in (None, member(4)):
        (data,) = layer.encode((PING,), ADDR, peer)
        assert not decode_packet(data, Keyring([KEY])).crc
    plain = PacketLayer(Counters(), compress=False)
    assert plain.encode((PING,), ADDR, member(4)) == [PING]


def test_round_trip_with_encryption_counts_both_ways() -> None:
    tx, rx = Counters(), Counters()
    a = PacketLayer(tx, keyring=Keyring([KEY]))
    b = PacketLayer(rx, keyring=Keyring([OTHER, KEY]))  # KEY as a secondary still decrypts
    big = encode_message(
        Alive(1, "n" * 200, bytes([10, 0, 0, 9]), 7946, b"x" * 300, DEFAULT_VSN)
    )  # compressible: the LZW form is kept
    (data,) = a.encode((PING, big, SUS), ADDR, member(5))
    assert decode_packet(data, Keyring([KEY])).crc
    msgs = b.decode(data, ("10.0.0.1", 7946))
    assert [type(m).__name__ for m in msgs] == ["Ping", "Alive", "Suspect"]
    assert (tx.packets_out, tx.bytes_out) == (1, len(data))
    assert (rx.packets_in, rx.bytes_in, rx.bad_input) == (1, len(data), {})


def test_what_cannot_be_read_is_counted_by_kind() -> None:
    rx = Counters()
    layer = PacketLayer(rx, keyring=Keyring([KEY]))
    (foreign,) = PacketLayer(Counters(), keyring=Keyring([OTHER])).encode((PING,), ADDR, None)
    assert layer.decode(foreign, ADDR) == ()
    assert layer.decode(PING, ADDR) == ()  # plaintext while we require encryption
    assert layer.decode(b"\xf4\x03abc" + PING, ADDR) == ()  # a memberlist >= 0.3 label
    open_layer = PacketLayer(rx)
    assert open_layer.decode(b"\xf4\x03abc" + PING, ADDR) == ()
    assert open_layer.decode(b"", ADDR) == ()
    # a label is refused by name before decryption is even tried
    assert rx.bad_input == {"decrypt_failed": 2, "label_unsupported": 2, "empty": 1}
    assert rx.packets_in == 5


def test_more_parts_than_a_compound_holds_go_in_several_packets() -> None:
    """memberlist 0.2.2 counts parts in one byte: 300 tiny messages are two packets,
    each decodable, instead of one packet that cannot be encoded at all."""
    parts = tuple(encode_message(UserMsg(bytes([i % 256]))) for i in range(300))
    tx = Counters()
    layer = PacketLayer(tx, keyring=Keyring([KEY]))
    datagrams = layer.encode(parts, ADDR, None)
    assert len(datagrams) == 2 and tx.packets_out == 2
    rx = PacketLayer(Counters(), keyring=Keyring([KEY]))
    got = [m for d in datagrams for m in rx.decode(d, ADDR)]
    assert len(got) == 300
    assert len(rx.decode(datagrams[0], ADDR)) == MAX_COMPOUND_PARTS


def test_overhead_is_what_encryption_adds() -> None:
    layer = PacketLayer(Counters(), keyring=Keyring([KEY]), compress=False)
    (data,) = layer.encode((PING,), ADDR, None)
    assert len(data) - len(PING) == layer.overhead == 29
    layer.keyring = None
    assert layer.overhead == 0 and layer.encode((PING,), ADDR, None) == [PING]
