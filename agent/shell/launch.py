"""The order a node comes up in: gossip first, then everything else.

Most of a start is Python importing the HTTP stack (aiohttp), the check engine, the
replicated model and the API: about half a second on a Pi-class core, before which the
node would send nothing. Membership needs none of it (asyncio, msgpack, AES-GCM), so
``launch`` binds the gossip port and starts joining the seeds first, and imports and
builds the rest while the join's packets are in flight. Peers see the node within a
few hundredths of a second of exec (bench/startup.py), as they see a Serf agent.

Until the rest is attached (``Cluster.attach``) membership events are held and replayed
in order, and a push/pull carries a plain Serf state instead of our replication digest
(there is no store to digest yet): peers send no repair on it, and once attached the
node pushes/pulls with a few live peers again, so the catalogue is exchanged as soon as
it can be. If the early start fails (the port is taken, a bad keyring), nothing is lost:
the agent's own start tries again and reports it (runtime.start_gossip).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path

from agent.shell.cluster import Cluster
from agent.shell.config import Config
from agent.shell.fleet_token import fingerprint
from agent.shell.keyring_file import KeyringError
from agent.shell.names import node_name

log = logging.getLogger(__name__)

#: imported one at a time after gossip starts, the loop free between them so the join's
#: answer is taken while the rest loads (each is a slice of agent.shell.runtime's imports)
HEAVY_IMPORTS = (
    "aiohttp",
    "prometheus_client",
    "agent.node",
    "agent.checks",
    "aiohttp.web",
    "agent.shell.api.server",
    "agent.shell.runtime",
)

#: loop passes given to the first join before importing: its task starts, then connects
SEND_PASSES = 4

__all__ = ["launch", "start_gossip_early"]


async def start_gossip_early(config: Config) -> Cluster:
    """Bind gossip and start joining, before the rest of the node exists. If that fails
    the cluster is returned unstarted: the agent's start retries it and shows why."""
    cluster = Cluster(config, node_name(config), api_port=config.api.listen.port)
    cluster.start_early()
    token = _read_token(config.api.token_file)
    if token:
        cluster.token_fingerprint = fingerprint(token)
    try:
        await cluster.start(discover=False)  # mDNS once the API's port is known
    except (OSError, KeyringError) as e:
        log.debug("early gossip start failed (%s); the agent's start retries it", e)
        return cluster
    cluster.rejoiner.seed_now(asyncio.get_running_loop().time())
    return cluster


async def launch(config: Config, config_path: Path | None) -> None:
    """Run a node until it is told to stop: gossip first, then the rest (module docstring)."""
    cluster = await start_gossip_early(config)
    for _ in range(SEND_PASSES):  # the join task resolves nothing, then connects
        await asyncio.sleep(0)
    for name in HEAVY_IMPORTS:
        importlib.import_module(name)
        await asyncio.sleep(0)  # the join's answer, or a probe, between two slices
    from agent.shell.runtime import Agent

    await Agent(config, config_path, cluster=cluster).run()


def _read_token(path: Path | None) -> str | None:
    """The API token, to advertise its fingerprint from the first packet; any problem
    with the file is the API's to report (ApiBackend.check_token), not ours."""
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None
