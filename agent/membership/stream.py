"""TCP stream framing as an incremental sans-I/O parser, plus the matching encoder.

memberlist opens one connection per exchange and never length-prefixes plaintext:
the reader decodes msgpack straight off the socket and the initiator keeps its side
open waiting for the reply, so we must recognise the end of a message from its
content, never from EOF. Feed bytes as they arrive and poll for the message::

    dec = StreamDecoder(keyring)
    dec.feed(chunk)            # any chunk size, even 1 byte
    msg = dec.next_message()   # None until complete; raises DecodeError on bad input

Layering (readStream, net.go): optional ``[0x0a][len BE32][encrypted blob]`` (AAD is
that 5-byte header, len capped at 20 MiB), then optional ``[0x09] compress{}``, then
one of ping (0x00), ack (0x02), push/pull (0x06), user message (0x08), err (0x0d).
Bytes after the message are ignored, as Go ignores them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import msgpack

from .codec import COMPRESS as _COMPRESS_SCHEMA
from .codec import (
    MAX_PUSH_NODES,
    _decode_struct,
    compress_message,
    decode_message,
    decode_push_pull_body,
    decode_user_msg_body,
    decompress_buffer,
    encode_message,
    encode_push_pull_body,
    encode_user_msg_body,
    message_from_wire,
    push_node_state,
    push_pull_header,
    user_msg_header,
)
from .errors import DecodeError, EncodeError, ErrorKind
from .gostruct import MAX_CONTAINER, MSGPACK_ERRORS
from .keyring import ENCRYPTION_VERSION, Keyring, encrypted_length
from .messages import (
    MAX_PUSH_STATE_BYTES,
    AckResp,
    Compress,
    ErrResp,
    MessageType,
    Ping,
    PushPull,
    UserMsg,
)

__all__ = ["StreamDecoder", "StreamMessage", "decode_stream", "encode_stream"]

#: What can arrive on (or be sent over) a memberlist stream.
StreamMessage = Ping | AckResp | ErrResp | PushPull | UserMsg

_Steps = Generator[None, None, Any]
_KNOWN = frozenset(int(t) for t in MessageType)
_STREAM_TYPES = frozenset(
    {
        MessageType.PING,
        MessageType.ACK_RESP,
        MessageType.ERR,
        MessageType.PUSH_PULL,
        MessageType.USER,
    }
)


class StreamDecoder:
    """Incremental decoder for the one message a memberlist stream carries.

    ``require_encryption`` defaults to "a keyring is set", matching Go's
    GossipVerifyIncoming=true: a plaintext stream is then refused (Go replies with
    an errResp saying so). All limits are enforced before allocation.
    """

    def __init__(
        self,
        keyring: Keyring | None = None,
        *,
        require_encryption: bool | None = None,
        max_size: int = MAX_PUSH_STATE_BYTES,
        max_decompressed: int = MAX_PUSH_STATE_BYTES,
        max_nodes: int = MAX_PUSH_NODES,
    ) -> None:
        self._keyring = keyring
        self._require = keyring is not None if require_encryption is None else require_encryption
        self._max_size = max_size
        self._max_decompressed = max_decompressed
        self._max_nodes = max_nodes
        self._limit = max_size + 5  # encryption header on top of the body cap
        self._up = msgpack.Unpacker(
            raw=True,
            max_buffer_size=self._limit,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=MAX_CONTAINER,
            max_map_len=MAX_CONTAINER,
            max_ext_len=max_size,
        )
        self._received = 0
        self._eof = False
        self._result: StreamMessage | None = None
        #: Malformed input (DecodeError) or, after a bug in this decoder, the exception
        #: it raised: re-raised on every later call, so a reader loop cannot spin on it.
        self._error: Exception | None = None
        self._steps: _Steps = self._run()
        #: Set once known: did the message arrive encrypted / compressed?
        self.encrypted = False
        self.compressed = False
        #: The message type byte inside any envelope, once known (for replies / metrics).
        self.message_type: int | None = None

    # -- public API ---------------------------------------------------------------
    @property
    def done(self) -> bool:
        """A message was decoded (or decoding failed); no more input is needed."""
        return self._result is not None or self._error is not None

    def feed(self, data: bytes) -> None:
        """Buffer received bytes. Never raises; errors surface in :meth:`next_message`."""
        if self.done or not data:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._fail(DecodeError(ErrorKind.TOO_LARGE, f"stream exceeds {self._limit} bytes"))
            return
        try:
            self._up.feed(data)
        except msgpack.BufferFull:
            self._fail(DecodeError(ErrorKind.TOO_LARGE, "stream buffer full"))

    def feed_eof(self) -> None:
        """The peer closed its side; an incomplete message becomes a 'truncated' error."""
        self._eof = True

    def next_message(self) -> StreamMessage | None:
        """The message once complete, else None (need more data).

        Raises DecodeError for malformed input. Anything else it raises is a bug here,
        not the peer's fault: it propagates as itself (and again on every later call).
        """
        if self._error is not None:
            raise self._error
        if self._result is not None:
            return self._result
        try:
            next(self._steps)
        except StopIteration as stop:
            self._result = stop.value
            return self._result
        except Exception as err:  # recorded and re-raised as is, never converted
            self._fail(err)
            raise
        return None

    # -- internals ----------------------------------------------------------------
    def _fail(self, err: Exception) -> None:
        self._error = err
        self._steps.close()

    def _need(self, what: str) -> None:
        if self._eof:
            raise DecodeError(ErrorKind.TRUNCATED, f"stream ended inside {what}")

    def _raw(self, n: int, what: str) -> _Steps:
        """Exactly ``n`` raw bytes (n is already bounded by the caller)."""
        got = bytearray()
        while len(got) < n:
            chunk = self._up.read_bytes(n - len(got))
            if chunk:
                got += chunk
                continue
            self._need(what)
            yield
        return bytes(got)

    def _obj(self, what: str) -> _Steps:
        """One msgpack object; resumes mid-object as more bytes arrive."""
        while True:
            try:
                return self._up.unpack()
            except msgpack.OutOfData:
                self._need(what)
                yield
            except MSGPACK_ERRORS as exc:
                raise DecodeError(ErrorKind.BAD_MSGPACK, f"{what}: {type(exc).__name__}") from None

    def _run(self) -> _Steps:
        t = (yield from self._raw(1, "message type"))[0]
        if t == MessageType.ENCRYPT:
            if self._keyring is None:
                raise DecodeError(
                    ErrorKind.ENCRYPTED_NO_KEY,
                    "Remote state is encrypted and encryption is not configured",
                )
            size_bytes = yield from self._raw(4, "encryption header")
            size = int.from_bytes(size_bytes, "big")
            if size > self._max_size:
                raise DecodeError(ErrorKind.TOO_LARGE, f"encrypted stream of {size} bytes")
            blob = yield from self._raw(size, "encrypted stream")
            plain = self._keyring.decrypt(blob, bytes((MessageType.ENCRYPT,)) + size_bytes)
            self.encrypted = True
            return self._complete(plain, allow_compress=True)
        if self._require:
            raise DecodeError(
                ErrorKind.NOT_ENCRYPTED,
                "Encryption is configured but remote state is not encrypted",
            )
        if t == MessageType.COMPRESS:
            raw = yield from self._obj("compress")
            msg: Compress = _decode_struct(Compress, _COMPRESS_SCHEMA, raw)
            self.compressed = True
            inner = decompress_buffer(msg, self._max_decompressed)
            return self._complete(inner, allow_compress=False)
        self._check_type(t)
        if t == MessageType.PUSH_PULL:
            header = push_pull_header((yield from self._obj("pushPullHeader")), self._max_nodes)
            if header.user_state_len > self._max_size:
                raise DecodeError(ErrorKind.TOO_LARGE, f"user state {header.user_state_len}")
            nodes = []
            for _ in range(header.nodes):
                nodes.append(push_node_state((yield from self._obj("pushNodeState"))))
            state = yield from self._raw(header.user_state_len, "user state")
            return PushPull(nodes=tuple(nodes), user_state=state, join=header.join)
        if t == MessageType.USER:
            uh = user_msg_header((yield from self._obj("userMsgHeader")))
            if uh.user_msg_len > self._max_size:
                raise DecodeError(ErrorKind.TOO_LARGE, f"user message {uh.user_msg_len}")
            payload = yield from self._raw(uh.user_msg_len, "user message")
            return UserMsg(payload)
        # ping, ack, err: a single struct.
        raw = yield from self._obj(MessageType(t).name.lower())
        result = message_from_wire(t, raw)
        assert isinstance(result, (Ping, AckResp, ErrResp))
        return result

    def _check_type(self, t: int) -> None:
        self.message_type = t
        if t in _STREAM_TYPES:
            return
        if t == MessageType.HAS_LABEL:
            raise DecodeError(ErrorKind.LABEL_UNSUPPORTED, "label header (memberlist >= 0.3)")
        if t in _KNOWN:
            raise DecodeError(ErrorKind.UNEXPECTED_TYPE, f"type {t} is not valid on a stream")
        raise DecodeError(ErrorKind.UNKNOWN_TYPE, f"Received invalid msgType ({t})")

    def _complete(self, data: bytes, *, allow_compress: bool) -> StreamMessage:
        """Decode a fully buffered (decrypted and/or decompressed) stream body."""
        if not data:
            # Go 0.2.2 indexes plain[0] / decomp[0] here and panics; we refuse.
            raise DecodeError(ErrorKind.EMPTY, "empty stream body")
        t = data[0]
        if t == MessageType.COMPRESS and allow_compress:
            msg = decode_message(data)
            assert isinstance(msg, Compress)
            self.compressed = True
            return self._complete(
                decompress_buffer(msg, self._max_decompressed), allow_compress=False
            )
        self._check_type(t)
        if t == MessageType.PUSH_PULL:
            return decode_push_pull_body(data[1:], max_nodes=self._max_nodes)
        if t == MessageType.USER:
            return decode_user_msg_body(data[1:])
        result = decode_message(data)
        assert isinstance(result, (Ping, AckResp, ErrResp))
        return result


def decode_stream(data: bytes, keyring: Keyring | None = None, **kwargs: Any) -> StreamMessage:
    """Decode a complete stream capture in one go (tests, tools)."""
    dec = StreamDecoder(keyring, **kwargs)
    dec.feed(data)
    dec.feed_eof()
    msg = dec.next_message()
    assert msg is not None  # with EOF set, incomplete input raised instead
    return msg


def encode_stream(
    msg: StreamMessage,
    *,
    compress: bool = True,
    keyring: Keyring | None = None,
    encryption_version: int = ENCRYPTION_VERSION,
) -> bytes:
    """Bytes to write for one stream message, as rawSendMsgStream does.

    ``compress`` always compresses (no size check, unlike packets), matching Go's
    EnableCompression default; with a keyring the result is wrapped in the encrypted
    envelope whose 5-byte header is the AAD.
    """
    if isinstance(msg, UserMsg):
        body = encode_user_msg_body(msg.payload)
    elif isinstance(msg, PushPull):
        body = encode_push_pull_body(msg)
    elif isinstance(msg, (Ping, AckResp, ErrResp)):
        body = encode_message(msg)
    else:
        raise EncodeError(f"{type(msg).__name__} cannot be sent on a stream")
    if compress:
        body = compress_message(body)
    if keyring is not None:
        size = encrypted_length(encryption_version, len(body))
        if size > MAX_PUSH_STATE_BYTES:
            raise EncodeError(f"encrypted stream of {size} bytes exceeds the 20 MiB limit")
        header = bytes((MessageType.ENCRYPT,)) + size.to_bytes(4, "big")
        body = header + keyring.encrypt(body, header, version=encryption_version)
    return body
