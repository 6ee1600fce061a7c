"""One TCP exchange each way, sans-I/O: bytes in, the bytes to write and the outcome out.

memberlist opens a connection per exchange: the initiator writes one message (push/pull,
fallback ping, reliable user message) and, except for a user message, reads one reply;
the acceptor reads one message, answers it, and closes. These objects hold that policy
(framing, compression, encryption, the errResp a bad request gets, what is counted) so
an adapter only moves bytes: the asyncio transport over sockets, the simulator over its
virtual network. Feed what arrives with ``receive``; ``receive_eof`` when the peer closed;
``abort``/``fail`` when the socket broke.
"""

from __future__ import annotations

import errno
import logging
from typing import Protocol

from agent.membership.counters import Counters
from agent.membership.errors import DecodeError
from agent.membership.messages import ErrResp, Message
from agent.membership.refusals import Refusals
from agent.membership.stream import StreamDecoder, StreamMessage

__all__ = ["InboundStream", "OutboundStream", "stream_error_kind"]

log = logging.getLogger(__name__)

Address = tuple[str, int]


class StreamHost(Protocol):
    """What an exchange needs from its endpoint (the facade implements it)."""

    counters: Counters
    refusals: Refusals

    def new_stream_decoder(self) -> StreamDecoder: ...

    def answer_stream(self, msg: StreamMessage, source: Address, now: float) -> bytes | None: ...

    def encode_error_reply(self, error: ErrResp) -> bytes | None: ...

    def finish_stream(
        self, stream_id: int, reply: Message | None, error: str | None, now: float
    ) -> None: ...


def stream_error_kind(exc: BaseException) -> str:
    """A stable metrics label for why a socket exchange broke."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError) or getattr(exc, "errno", None) == errno.ECONNRESET:
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken_pipe"
    if isinstance(exc, ConnectionAbortedError):
        return "aborted"
    return "os_error"


class InboundStream:
    """A connection a peer opened to us: its request in, our reply (if any) out.

    ``done`` once the request was handled (or refused); then write ``reply`` if it is not
    None and close. A request we cannot decode is counted by kind and answered with an
    errResp, as memberlist's handleConn does, unless it was merely cut short.
    """

    __slots__ = ("_decoder", "_host", "done", "reply", "source")

    def __init__(self, host: StreamHost, source: Address) -> None:
        self._host = host
        self._decoder = host.new_stream_decoder()
        self.source = source
        self.done = False
        self.reply: bytes | None = None
        host.counters.streams_in += 1

    def receive(self, data: bytes, now: float) -> None:
        if not self.done:
            self._decoder.feed(data)
            self._poll(now)

    def receive_eof(self, now: float) -> None:
        if not self.done:
            self._decoder.feed_eof()
            self._poll(now)

    def abort(self, exc: BaseException) -> None:
        """The socket failed (timeout, reset...) before the exchange completed: count it."""
        kind = stream_error_kind(exc)
        self._host.counters.stream_error(kind)
        log.debug("stream from %s:%d broke: %s", self.source[0], self.source[1], kind)
        self.done = True

    def _poll(self, now: float) -> None:
        try:
            msg = self._decoder.next_message()
        except DecodeError as e:
            self.done = True
            self._host.counters.bad(str(e.kind))
            self._host.refusals.note(str(e.kind), e.reason, self.source)
            log.debug("bad stream from %s: %s", self.source[0], e)
            if str(e.kind) != "truncated":
                self.reply = self._host.encode_error_reply(ErrResp(str(e)))
            return
        except Exception:  # a decoder bug: logged, counted apart, no reply
            self.done = True
            log.exception("internal error decoding a stream from %s", self.source[0])
            self._host.counters.bad("internal-error")
            return
        if msg is None:
            return
        self.done = True
        self.reply = self._host.answer_stream(msg, self.source, now)


class OutboundStream:
    """A connection we open: write ``request``, then (if ``expects_reply``) feed the reply.

    The outcome goes to the core exactly once: the reply, an errResp as a "peer error",
    a reply we could not decode (counted by kind), or the failure the adapter reports.
    """

    __slots__ = ("_decoder", "_host", "addr", "deadline", "done", "expects_reply", "id", "request")

    def __init__(
        self,
        host: StreamHost,
        stream_id: int,
        addr: Address,
        request: bytes,
        deadline: float,
        expects_reply: bool,
    ) -> None:
        self._host = host
        self._decoder: StreamDecoder | None = None
        self.id = stream_id
        self.addr = addr
        self.request = request
        self.deadline = deadline
        self.expects_reply = expects_reply
        self.done = False
        host.counters.streams_out += 1

    def sent(self, now: float) -> None:
        """The request is written; a user message expects nothing more (memberlist's
        receiver reads it and hangs up), so it is delivered."""
        if not self.expects_reply:
            self._finish(None, None, now)

    def receive(self, data: bytes, now: float) -> None:
        if not self.done:
            self._decoder_().feed(data)
            self._poll(now)

    def receive_eof(self, now: float) -> None:
        if not self.done:
            self._decoder_().feed_eof()
            self._poll(now)

    def fail(self, error: BaseException | str, now: float) -> None:
        """Connecting, writing or reading failed (or timed out): tell the core."""
        if isinstance(error, TimeoutError):
            text = "timeout"
        elif isinstance(error, BaseException):
            text = str(error) or type(error).__name__
        else:
            text = error
        self._finish(None, text, now)

    def _decoder_(self) -> StreamDecoder:
        if self._decoder is None:
            self._decoder = self._host.new_stream_decoder()
        return self._decoder

    def _poll(self, now: float) -> None:
        try:
            reply = self._decoder_().next_message()
        except DecodeError as e:
            self._host.counters.bad(str(e.kind))
            self._host.refusals.note(str(e.kind), e.reason, self.addr)
            self._finish(None, f"bad reply: {e}", now)
            return
        except Exception:  # a bug in the stream codec: the core still hears how it ended
            log.exception("internal error on a stream to %s:%d", *self.addr)
            self._host.counters.bad("internal-error")
            self._finish(None, "internal error", now)
            return
        if reply is None:
            return
        if isinstance(reply, ErrResp):
            self._finish(None, f"peer error: {reply.error}", now)
        else:
            self._finish(reply, None, now)

    def _finish(self, reply: Message | None, error: str | None, now: float) -> None:
        if self.done:
            return
        self.done = True
        self._host.finish_stream(self.id, reply, error, now)
