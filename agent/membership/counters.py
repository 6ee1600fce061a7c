"""What one gossip node counts, for /metrics.

Plain integers bumped by the sans-I/O layers (packet, stream exchanges, endpoint) and
read at scrape time by the owner's collector: no per-packet metric calls on the hot
path, and the same counters whether the node runs on sockets or in the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Counters"]


@dataclass
class Counters:
    """Traffic, malformed input by kind, and inbound streams that broke, by kind."""

    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    streams_in: int = 0
    streams_out: int = 0
    #: input dropped as malformed or unacceptable (a DecodeError kind, a core rejection)
    bad_input: dict[str, int] = field(default_factory=dict)
    #: accepted TCP streams that ended without a complete exchange, by why: timeout,
    #: reset, broken_pipe, os_error (the socket) or encode (our reply could not be built)
    stream_errors: dict[str, int] = field(default_factory=dict)

    def bad(self, kind: str) -> None:
        self.bad_input[kind] = self.bad_input.get(kind, 0) + 1

    def stream_error(self, kind: str) -> None:
        self.stream_errors[kind] = self.stream_errors.get(kind, 0) + 1
