"""Gossip membership: memberlist 0.2.2 / Serf 0.9.4 wire codecs, SWIM + Lifeguard.

The codecs are pure: bytes in, values out (and back). No sockets, clocks or sleeps,
so the gossip state machine can be tested deterministically and the same code
serves the UDP and TCP paths. Decoders raise only ``DecodeError``.

Import the modules themselves (``from agent.membership.codec import ...``): this
package imports nothing, so a process that does not gossip encrypted never loads
AES (the cryptography library costs ~7 MiB of RSS, on a Pi with 512 MB).
"""
