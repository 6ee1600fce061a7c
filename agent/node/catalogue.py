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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.crdt import HLC, Timestamp
from agent.domain import OriginSpec
from agent.node.state import Delta, State, canonical_spec


class Conflict(Exception):
    """An API request the catalogue cannot honour (e.g. deleting a config origin)."""


@dataclass(slots=True)
class CatalogueDiff:
    """What a batch does to the API-declared set: the ids added, changed and removed
    (sorted), how many were already as asked, and which removed origins stay in the
    fleet because a node's config declares them (id -> those nodes)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    still_declared: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ids(self) -> set[str]:
        """Every origin the batch writes."""
        return {*self.added, *self.changed, *self.removed}

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "still_declared": [
                {"id": o, "nodes": nodes} for o, nodes in sorted(self.still_declared.items())
            ],
        }


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
        gone = [
            origin_id
            for origin_id in self.state.origins()
            if origin_id not in wanted
            and any(
                node == self.name and source == "config"
                for node, source, _ in self.state.declarations(origin_id)
            )
        ]
        changed: set[str] = set()
        if gone and self.record(
            self.state.retract_many([(origin_id, self.name, "config") for origin_id in gone])
        ):
            changed.update(gone)
        self.config = wanted
        return changed | self.assert_config(wanted, wall)

    def assert_config(self, origin_ids: Iterable[str], wall: float) -> set[str]:
        """Make our config declaration of each origin the one value its key holds.

        After a lost store (a new replica id, docs/store.md) a peer can hand back our old
        declaration, concurrent with the one we made since, and with a later timestamp
        when the clock was behind: re-declaring at a timestamp past both supersedes it,
        so a node's config stays its word. Returns the origins declared anew."""
        decls: list[tuple[OriginSpec, Timestamp]] = []
        for origin_id in dict.fromkeys(origin_ids):
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
            decls.append((spec, self._ts(origin_id, wall)))
        # one delta for all of them: a config of 1,000 origins is one store record and one
        # change to replicate, not 1,000 (start-up time, bench/startup.py)
        if decls and self.record(self.state.declare_many(decls, self.name, "config")):
            return {spec.id for spec, _ in decls}
        return set()

    def put(self, spec: OriginSpec, wall: float) -> tuple[bool, bool]:
        """Declare ``spec`` through the API: (new to the fleet, anything changed)."""
        new = self.state.spec(spec.id) is None
        delta = self.state.declare(spec, self.name, "api", self._ts(spec.id, wall))
        return new, self.record(delta)

    def api_specs(self) -> dict[str, OriginSpec]:
        """The API-declared set: each origin with an API declaration (through any node),
        with the spec of the newest one. What a declarative apply replaces, and what
        an export prints."""
        out = {}
        for origin_id in self.state.origins():
            spec = self.api_spec(origin_id)
            if spec is not None:
                out[origin_id] = spec
        return out

    def api_spec(self, origin_id: str) -> OriginSpec | None:
        """The newest API declaration's spec of one origin, or None."""
        api = [d for _, source, d in self.state.declarations(origin_id) if source == "api"]
        return api[-1].spec if api else None  # declarations come oldest first

    def plan(self, specs: Sequence[OriginSpec], *, replace: bool) -> CatalogueDiff:
        """What ``apply_batch`` would do, doing nothing (a dry run). ``replace``: the
        batch is the whole API-declared set (origins not in it are removed)."""
        # an upsert looks up its own ids; only a replace needs the whole set
        current = self.api_specs() if replace else None
        diff = CatalogueDiff()
        for spec in specs:
            now = current.get(spec.id) if current is not None else self.api_spec(spec.id)
            if now is None:
                diff.added.append(spec.id)
            elif canonical_spec(spec) != now:
                diff.changed.append(spec.id)
            else:
                diff.unchanged += 1
        if current is not None:
            wanted = {spec.id for spec in specs}
            diff.removed = [o for o in current if o not in wanted]
            for origin_id in diff.removed:
                nodes = sorted(
                    {n for n, source, _ in self.state.declarations(origin_id) if source == "config"}
                )
                if nodes:
                    diff.still_declared[origin_id] = nodes
        diff.added.sort()
        diff.changed.sort()
        diff.removed.sort()
        return diff

    def apply_batch(
        self, specs: Sequence[OriginSpec], wall: float, *, replace: bool
    ) -> CatalogueDiff:
        """Declare many origins through the API (and with ``replace``, retract the API
        declarations of every origin not among them) as **one** delta: one record in the
        store, one change to replicate, however many origins it holds."""
        diff = self.plan(specs, replace=replace)
        writes = set(diff.added) | set(diff.changed)
        joined = self.state.declare_many(
            [(spec, self._ts(spec.id, wall)) for spec in specs if spec.id in writes],
            self.name,
            "api",
        )
        retract = [
            (origin_id, node, "api")
            for origin_id in diff.removed
            for node, source, _ in self.state.declarations(origin_id)
            if source == "api"
        ]
        if retract:
            joined = _join(joined, self.state.retract_many(retract))
        self.record(joined)
        return diff

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


def _join(into: Delta | None, delta: Delta | None) -> Delta | None:
    """``delta`` joined into ``into`` (a copy is taken first: a delta a mutator returned
    may share structure with the state it was applied to)."""
    if delta is None or delta.is_empty():
        return into
    if into is None:
        return delta.copy()
    into.join(delta)
    return into
