"""The node's name: stable across reboots and unique per board.

Identity is the name, not the address (DHCP moves addresses). The default is the
hostname, but a factory-default hostname would give every fresh Pi the same name.
"""

from __future__ import annotations

import socket

from agent.config import Config


def node_name(config: Config) -> str:
    """[node] name, else the short hostname."""
    return config.node.name or socket.gethostname().split(".")[0]
