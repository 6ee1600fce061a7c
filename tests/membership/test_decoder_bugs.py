"""A bug in a decoder is a bug, never "malformed input".

The decoders convert only the exceptions that malformed bytes cause (msgpack's, bad
lengths, bad fields) into DecodeError. Anything else (a TypeError from our own code,
a caller passing the wrong type) propagates, so the fuzz tests fail on it; the live
node logs it with its traceback and counts it as ``internal-error``, apart from the
kinds that mean a peer sent garbage, and keeps running.

The planted bug is a monkeypatched internal helper: the one way to make correct code
misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from agent.membership import codec
from agent.membership.codec import decode_packet, encode_packet
from agent.membership.errors import DecodeError
from agent.membership.gostruct import unpack_one
from agent.membership.messages import AckResp, NodeState, Ping, PushNodeState, PushPull
from agent.membership.settings import Settings
from agent.membership.stream import StreamDecoder, encode_stream
from agent.membership.transport import MembershipNode
from tests.conftest import async_wait_for

PP = PushPull(
    nodes=(PushNodeState("peer", b"\x7f\0\0\1", 1, b"", 1, NodeState.ALIVE),),
    user_state=b"",
    join=True,
)


class PlantedBug(TypeError):
    """What a slip in our own decoding code raises (the type the old code disguised)."""


def plant_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every memberlist struct decode (packets, both stream directions) hits the bug."""

    def broken(cls: type, schema: Any, raw: object) -> Any:
        raise PlantedBug("planted decoder bug")

    monkeypatch.setattr(codec, "_decode_struct", broken)


# --- the decoders themselves --------------------------------------------------------------


def test_packet_decoder_bug_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    packet = encode_packet([Ping(1, "a")])
    plant_bug(monkeypatch)
    with pytest.raises(PlantedBug):
        decode_packet(packet)


def test_stream_decoder_bug_propagates_and_stays_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode_stream(PP, compress=False)
    plant_bug(monkeypatch)
    dec = StreamDecoder()
    dec.feed(data)
    with pytest.raises(PlantedBug):
        dec.next_message()
    # done, and asking again raises again: a reader loop can never spin on a dead decoder
    assert dec.done
    with pytest.raises(PlantedBug):
        dec.next_message()


def test_compressed_stream_decoder_bug_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode_stream(PP, compress=True)
    plant_bug(monkeypatch)
    dec = StreamDecoder()
    dec.feed(data)
    with pytest.raises(PlantedBug):
        dec.next_message()


def test_wrong_argument_types_are_caller_bugs_not_malformed_input() -> None:
    # No monkeypatching: real calls with what a buggy caller might pass.
    with pytest.raises(TypeError):
        decode_packet(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        unpack_one("\x81\xa1a\x01")  # type: ignore[arg-type]


def test_malformed_input_is_still_a_decode_error() -> None:
    with pytest.raises(DecodeError) as err:
        unpack_one(b"\xc1")
    assert err.value.kind == "bad_msgpack" and not err.value.reason.startswith("internal")
    with pytest.raises(DecodeError):
        decode_packet(b"\x0c\x00")
    assert decode_packet(b"\x00\xc1").problems[0].kind == "bad_msgpack"


# --- the live node: logged with a traceback, counted apart, still running ----------------


def _internal_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return any(
        r.levelno >= logging.ERROR and r.exc_info is not None and r.exc_info[0] is PlantedBug
        for r in caplog.records
    )


async def test_live_node_counts_a_packet_decoder_bug_apart(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    node = MembershipNode("victim", ("127.0.0.1", 0))
    await node.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        plant_bug(monkeypatch)
        with caplog.at_level(logging.ERROR, logger="agent.membership.transport"):
            sock.sendto(encode_packet([Ping(5, "victim")]), ("127.0.0.1", node.port))
            await async_wait_for(lambda: node.counters.packets_in >= 1, 5, "the packet to arrive")
        assert node.counters.bad_input == {"internal-error": 1}
        assert _internal_logged(caplog)
        # the bug gone, the node answers as before
        monkeypatch.undo()
        sock.sendto(encode_packet([Ping(6, "victim")]), ("127.0.0.1", node.port))
        reply = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        assert any(isinstance(m, AckResp) and m.seq_no == 6 for m in decode_packet(reply).messages)
    finally:
        sock.close()
        await node.stop()


async def test_live_node_counts_an_inbound_stream_decoder_bug_apart(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    node = MembershipNode("victim", ("127.0.0.1", 0))
    await node.start()
    try:
        plant_bug(monkeypatch)
        with caplog.at_level(logging.ERROR, logger="agent.membership.transport"):
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            writer.write(encode_stream(PP, compress=False))
            await writer.drain()
            # the node hangs up without an answer: it has nothing true to say to the peer
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()
        assert node.counters.bad_input == {"internal-error": 1}
        assert _internal_logged(caplog)
    finally:
        await node.stop()


async def test_live_node_counts_a_reply_decoder_bug_apart_and_finishes_the_join(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the joiner's push/pull is on its way; answer with ours
        writer.write(encode_stream(PP, compress=False))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    node = MembershipNode("joiner", ("127.0.0.1", 0), settings=Settings(tcp_timeout=30.0))
    await node.start()
    try:
        plant_bug(monkeypatch)
        with caplog.at_level(logging.ERROR, logger="agent.membership.transport"):
            # the join ends with the stream's failure, long before the 30 s stream timeout
            assert await node.join([("127.0.0.1", port)], timeout=5) == 0
        assert node.counters.bad_input == {"internal-error": 1}
        assert _internal_logged(caplog)
    finally:
        await node.stop()
        server.close()
        await server.wait_closed()
