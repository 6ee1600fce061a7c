"""Following the network's address: a new DHCP lease, or a Pi that booted before it had
one, moves the node to its new address without a restart.

Only a derived advertise address is followed (a configured one is the operator's word),
and never to loopback: a pulled cable leaves the old address standing until there is a
better one. The move is announced as Serf expects (a leave intent first, so Serf shows
``left`` then ``alive`` at the new address, never ``failed``), then pushed to every live
peer until each one's answer shows the new address.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agent.shell.advertise import advertise_address, is_derived
from agent.shell.config import is_loopback

if TYPE_CHECKING:
    from agent.shell.cluster import Cluster

log = logging.getLogger(__name__)

# after we move to a new address, push/pull with every live peer: first after this long,
# then again every READDRESS_RETRY while a round's answers show a peer that still holds
# the old address (it missed our leave, and takes the new address once it has found the
# old one failed and the name may be reclaimed), for at most READDRESS_PUSH_FOR
READDRESS_FIRST, READDRESS_RETRY, READDRESS_PUSH_FOR = 1.0, 3.0, 90.0
SERF_HEAD_START = 0.1  # the Serf leave intent goes this long before the memberlist leave


class AddressFollower:
    """Moves the cluster's node when the derived advertise address changes."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.moves = 0  # times we moved to a new address (metrics)
        self._push: asyncio.Task[None] | None = None

    async def follow(self) -> bool:
        """Move to the network's address when it changed under us; True if we moved."""
        cluster = self.cluster
        node = cluster.node
        if node is None or not is_derived(cluster.config):
            return False
        host = advertise_address(cluster.config)[0]
        if is_loopback(host) or host == cluster.advertise[0]:
            return False
        old = cluster.advertise[0]
        cluster.advertise = (host, cluster.advertise[1])
        log.warning(
            "advertise address changed: %s -> %s; announcing the move to the cluster",
            old,
            host,
        )
        # A Serf leave intent first: Serf's member states follow its intents, and a
        # memberlist leave without one shows as `failed`
        if cluster.send_to_live_peers(cluster.serf_clock.leave_intent(cluster.node_name)):
            await asyncio.sleep(SERF_HEAD_START)
        node.readdress(cluster.advertise)
        cluster.faults.pop("advertise", None)
        self.moves += 1
        await cluster.finder.restart()
        if self._push is not None:
            self._push.cancel()
        self._push = cluster.spawn(self._push_after_move())
        cluster.changed()
        return True

    async def _push_after_move(self) -> None:
        """Push our state to every live peer until all of them show our new address."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + READDRESS_PUSH_FOR
        await asyncio.sleep(READDRESS_FIRST)
        cluster = self.cluster
        while loop.time() < give_up:
            node = cluster.node
            if node is None or not node.running:
                return
            peers = [m.address for m in cluster.alive_peers()]
            before = node.stale_views
            if peers:
                try:
                    await node.join(peers)
                except (TimeoutError, OSError) as e:
                    log.debug("push/pull after the move: %s", e)
                if node.stale_views == before:
                    return  # every peer that answered holds our new address
            await asyncio.sleep(READDRESS_RETRY)
