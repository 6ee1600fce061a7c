"""The replica id that signs this node's dots: born with its store, replaced on damage.

A dot (replica id, counter) must name one write, fleet-wide and forever. A node knows
which counters it has used only from its store: if the store comes back without some
of them (unreadable, damaged, wiped, a new SD card), the next counter may be one its
peers already hold for another write. They would take the new write for one they had
seen and drop it, and anti-entropy would then "repair" both sides into a state that
lacks both writes (tests/test_recovery_dots.py). So the id is the node name plus a
random suffix, ``name~1f2e3d4c``, chosen when a store is born and persisted in its
metadata (``replica``); a store that recovered with any damage, or none at all, gets
a fresh one. The counter of an id therefore never goes backwards: an id whose counter
we may have lost is never used again.

Why a random suffix, not an epoch counter: an epoch must be read from somewhere, and
the store it would be read from is the thing that was lost. With 32 random bits, two
incarnations of one node collide with odds of 1 in 4 billion per pair, and no state is
needed at all. Only the dots change: keys, observations, declarations and HLC
timestamps stay under the node name, so ownership and verdicts are unaffected, and the
old id's entries live on (the peers send them back) until they are overwritten.

A store written before ids were persisted (no ``replica`` key) that recovered
completely keeps signing with the bare node name, as it always did: its counters are
all there.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any

META_KEY = "replica"
SEPARATOR = "~"


def _suffix() -> str:
    return secrets.token_hex(4)


def belongs_to(replica_id: str, name: str) -> bool:
    """Whether ``replica_id`` is one of ``name``'s incarnations."""
    return replica_id == name or replica_id.startswith(name + SEPARATOR)


def choose_replica_id(
    name: str,
    meta: Mapping[str, Any],
    *,
    damaged: bool,
    empty: bool,
    suffix: Callable[[], str] = _suffix,
) -> str:
    """The id ``name`` signs its new dots with, given the store's metadata, whether
    its recovery lost anything (``damaged``) and whether it held nothing (``empty``:
    a new store, or one that was wiped). The caller persists it (``META_KEY``)
    durably before the first write."""
    current = meta.get(META_KEY)
    if damaged or empty:
        return f"{name}{SEPARATOR}{suffix()}"
    if isinstance(current, str) and belongs_to(current, name):
        return current
    if current is None:
        return name  # a complete store from before ids were recorded: its own counters
    return f"{name}{SEPARATOR}{suffix()}"  # another node's store (renamed): start afresh
