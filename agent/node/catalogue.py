"""This node's declarations in the fleet's origin catalogue: its config, and API writes.

An origin exists while some declaration of it survives (docs/replicated-state.md). Each
node declares the origins of its own config and retracts those it drops; the API on any
node may add or retract API declarations. Every declaration takes a timestamp past all
the declarations of the origin it knows (LWW order), and a node's config is its word:
a concurrent older value of its own config key (handed back by a peer after a lost
store) is superseded at once.

Pure: it turns requests into deltas, handed to ``record`` (the node core's publication
path), and says which origins changed; the core moves ownership and verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from agent.crdt import HLC, Timestamp
from agent.domain import OriginSpec
from agent.node.state import Delta, State, canonical_spec


class Conflict(Exception):
    """An API request the catalogue cannot honour (e.g. deleting a config origin)."""


class Catalogue:
    """Declares and retracts this node's origins in ``state``; see the module docstring."""

    def __init__(
        self, name: str, state: State, hlc: HLC, record: Callable[[Delta | None], bool]
    ) -> None:
        self.name = name
        self.state = state
        self.hlc = hlc
        self.record = record  # a local delta: True if it changed anything
        self.config: dict[str, OriginSpec] = {}  # this node's config origins: its word

    def _ts(self, origin_id: str, wall: float) -> Timestamp:
        """A timestamp later than every declaration of the origin we know (LWW order)."""
        wall_ms = int(wall * 1000)
        for _, _, decl in self.state.declarations(origin_id):
            self.hlc.update(decl.ts, wall_ms)
        return self.hlc.now(wall_ms)

    def declare_config(self, origins: Iterable[OriginSpec], wall: float) -> set[str]:
        """Make this node's config declarations equal ``origins`` (start and SIGHUP);
        the origins that changed."""
        wanted = {spec.id: spec for spec in origins}
        changed: set[str] = set()
        for origin_id in self.state.origins():
            for node, source, _ in self.state.declarations(origin_id):
                mine = node == self.name and source == "config"
                if (
                    mine
                    and origin_id not in wanted
                    and self.record(self.state.retract(origin_id, self.name, "config"))
                ):
                    changed.add(origin_id)
        self.config = wanted
        return changed | self.assert_config(wanted, wall)

    def assert_config(self, origin_ids: Iterable[str], wall: float) -> set[str]:
        """Make our config declaration of each origin the one value its key holds.

        After a lost store (a new replica id, docs/store.md) a peer can hand back our old
        declaration, concurrent with the one we made since, and with a later timestamp
        when the clock was behind: re-declaring at a timestamp past both supersedes it,
        so a node's config stays its word. Returns the origins declared anew."""
        changed = set()
        for origin_id in origin_ids:
            spec = self.config.get(origin_id)
            if spec is None:
                continue
            current = [
                d
                for n, s, d in self.state.declarations(origin_id)
                if n == self.name and s == "config"
            ]
            if len(current) == 1 and canonical_spec(current[0].spec) == canonical_spec(spec):
                continue
            ts = self._ts(origin_id, wall)
            if self.record(self.state.declare(spec, self.name, "config", ts)):
                changed.add(origin_id)
        return changed

    def put(self, spec: OriginSpec, wall: float) -> tuple[bool, bool]:
        """Declare ``spec`` through the API: (new to the fleet, anything changed)."""
        new = self.state.spec(spec.id) is None
        delta = self.state.declare(spec, self.name, "api", self._ts(spec.id, wall))
        return new, self.record(delta)

    def delete(self, origin_id: str) -> list[str] | None:
        """Retract every API declaration of the origin (made through any node). None if
        there is no such origin, else the nodes whose configs still declare it."""
        decls = self.state.declarations(origin_id)
        if not decls:
            return None
        for node, source, _ in decls:
            if source == "api":
                self.record(self.state.retract(origin_id, node, "api"))
        return sorted({node for node, source, _ in decls if source == "config"})
