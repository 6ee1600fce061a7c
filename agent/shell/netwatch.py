"""The kernel's word that the network changed (rtnetlink), so that a derived advertise
address (agent/shell/readdress.py) is looked at when an address, a route or a link
changes, not every second.

One netlink socket subscribed to link, address and route changes (IPv4 and IPv6) of the
node's network namespace; whatever arrives, or an overflow (ENOBUFS: changes were lost),
calls ``on_change`` once per batch. Where there is no rtnetlink (not Linux, a sandbox
that refuses the socket) ``start`` returns False and the caller polls as before.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = (
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
)
READ_SIZE = 65536


class NetWatch:
    """Calls ``on_change`` when the kernel reports a link, address or route change."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self.changes = 0  # batches of notifications seen
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active(self) -> bool:
        return self._sock is not None

    def start(self) -> bool:
        """Subscribe (on the running loop); False when this system offers no rtnetlink."""
        if self._sock is not None:
            return True
        try:
            sock = socket.socket(
                socket.AF_NETLINK,  # type: ignore[attr-defined,unused-ignore]
                socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                socket.NETLINK_ROUTE,  # type: ignore[attr-defined,unused-ignore]
            )
        except (OSError, AttributeError) as e:
            log.debug("no rtnetlink (%s): the advertise address is polled", e)
            return False
        try:
            sock.bind((0, GROUPS))
            loop = asyncio.get_running_loop()
            loop.add_reader(sock.fileno(), self._readable)
        except (OSError, NotImplementedError) as e:
            sock.close()
            log.debug("cannot watch rtnetlink (%s): the advertise address is polled", e)
            return False
        self._sock, self._loop = sock, loop
        return True

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            while sock.recv(READ_SIZE):
                pass
        except BlockingIOError:
            pass
        except OSError as e:  # ENOBUFS: the kernel dropped some; look anyway
            log.debug("rtnetlink: %s", e)
        self.changes += 1
        self.on_change()
