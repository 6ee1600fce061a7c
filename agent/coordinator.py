"""The coordinator: this node's share of the fleet's work and knowledge, in one place.

It ties the parts that were built to stand alone into the running agent's data flow
(DESIGN.md, "Data flow"; docs/replication.md, docs/placement.md, docs/store.md)::

    config / API ──declare──▶ State ◀──apply── Replicator ◀── membership events
                                │  ▲                │
             catalogue ─────────┘  └──observe──┐    └──▶ outputs (gossip, TCP)
                 ▼                             │
    members ─▶ Placement ─▶ Handoff ─▶ CheckEngine (only the origins this node checks)
                 │
                 └──▶ verdicts (State.verdict over the current owners) ─▶ events, webhooks

Every change to the State goes through ``_local`` (ours) or the replicator's
``on_apply`` (a peer's), so every change also reaches the store. Local deltas are
**published only after the store has made them durable** (group commit, at most every
``store.commit_interval``): a node that crashes and restarts can then never reuse a
dot (replica, counter) that a peer already holds for a different write, which would
make its next writes invisible to that peer. While the disk is failing, the store
cannot make anything durable: deltas are published at once and the node runs from
memory (health ``degraded``), as DESIGN.md's failure modes say.

The I/O it drives (the check engine, membership sends) is passed in as plain objects
and callbacks; time comes in as ``now`` (monotonic) and ``wall`` (unix seconds), so the
tests can drive it without a loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.checks.state import Status as CheckStatus
from agent.checks.state import Transition
from agent.config import Config, OriginSpec
from agent.crdt.codec import CrdtDecodeError
from agent.crdt.hlc import HLC, Timestamp
from agent.handoff import Handoff, HandoffResult
from agent.membership.member import Member as GossipMember
from agent.membership.meta import decode_tags
from agent.membership.protocol import Event, MemberEvent
from agent.placement import Member, OwnerChange, Placement, member_from_tags
from agent.replication import Gossip, Output, Replicator
from agent.state import Delta, State, canonical_spec, decode_delta, encode_delta, latency_band
from agent.store import SnapshotBudget, Store, incarnation

log = logging.getLogger(__name__)

SETTLE = 3.0  # at most this long after start before checking while looking for peers
IDLE_TICK = 1.0  # the longest the periodic work sleeps
REAP_EVERY = 60.0
TRANSITIONS_KEPT = 200


class Engine(Protocol):
    def set_origins(
        self, specs: Iterable[OriginSpec], *, immediate: bool | Collection[str] = False
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class VerdictChange:
    """A fleet verdict transition of one origin, as this node computed it."""

    origin: str
    old: str
    new: str
    at: float  # unix seconds
    reason: str
    owners: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "from": self.old,
            "to": self.new,
            "at": round(self.at, 3),
            "reason": self.reason,
            "owners": list(self.owners),
        }


class Conflict(Exception):
    """An API request the catalogue cannot honour (e.g. deleting a config origin)."""


class Coordinator:
    """See the module docstring. One per agent; lives in the event loop."""

    def __init__(
        self,
        name: str,
        config: Config,
        engine: Engine,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config
        self.engine = engine
        self.wall = wall
        self.k = config.cluster.replicas
        self.bad_records = 0
        self.store = Store(
            config.node.data_dir / "store",
            snapshot_source=lambda: self.state.snapshot(),
            budget=SnapshotBudget(max_log_bytes=max(config.store.max_bytes // 2, 1 << 20)),
        )
        self.state = self._recover()
        high_water = max(int(self.store.meta.get("hlc", 0) or 0), self.state.own_high_water())
        self.hlc = HLC(name, high_water or None)
        self.replicator = Replicator(
            self.state, gossip=config.gossip, on_apply=self._remote_applied
        )
        self.placement = Placement([Member(name, config.node.weight)], self.k)
        self.handoff = Handoff(name)
        self.transport: Callable[[list[Output]], None] | None = None
        self.on_verdict: Callable[[VerdictChange], None] | None = None
        self.on_origins: Callable[[set[str]], None] | None = None  # changed ids, for events
        self.on_work: Callable[[], None] | None = None  # something to commit: wake tick
        self.transitions: deque[VerdictChange] = deque(maxlen=TRANSITIONS_KEPT)
        self.faults: dict[str, tuple[str, str]] = dict(self._recovery_faults)
        self.verdicts: dict[str, str] = {}
        self.settled = False
        self._pending: Delta | None = None  # local deltas waiting for a commit to publish
        self._waiters: list[asyncio.Future[bool]] = []  # durable() calls awaiting a commit
        self._last_commit = 0.0
        self._drain_seen: dict[str, dict[str, Any]] = {}
        self._absent_since: dict[str, float] = {}
        self._alive: set[str] = {name}  # live members (alive or suspect), me included
        self._gained: set[str] = set()  # taken over, first result not yet written
        self._next_reap = 0.0
        self._started_at = 0.0
        self._engine_specs: dict[str, OriginSpec] = {}  # what the engine was last given

    # --- start-up ------------------------------------------------------------------------

    def _recover(self) -> State:
        """The State from the store, and the replica id its new dots are signed with.

        Anything unreadable is kept in the store's quarantine (never deleted), reported
        as the standing fault "store-recovery", and makes this node sign its new dots
        with a fresh replica id: a skipped record may have held our newest dots, which
        peers already hold, and reusing one would make a new write invisible to them
        (agent/store/incarnation.py; docs/store.md, "Recovery and the node's dots")."""
        rec = self.store.recovered
        for problem in rec.problems:
            log.warning("store: %s", problem)
        lost = list(rec.problems)
        state = State(self.name)
        if rec.state is not None:
            try:
                state = State.restore(self.name, rec.state)
            except CrdtDecodeError as e:
                self.bad_records += 1
                kept = self.store.quarantine("snapshot-state.bin", rec.state)
                lost.append(f"the snapshot does not decode ({e}); kept as {kept}")
                log.error("store: snapshot does not decode (%s); starting from the log only", e)
        for raw in rec.deltas:
            try:
                state.apply(decode_delta(raw))
            except CrdtDecodeError as e:
                self.bad_records += 1
                kept = self.store.quarantine("delta.bin", raw)
                lost.append(f"a logged delta does not decode ({e}); kept as {kept}")
                log.error("store: a logged delta does not decode (%s); skipped", e)
        empty = rec.state is None and not rec.deltas and not rec.meta
        state.dot_id = incarnation.replica_id(self.name, rec.meta, damaged=bool(lost), empty=empty)
        self.state = state  # the store's snapshot source, should this commit snapshot
        changed = self.store.set_meta({incarnation.META_KEY: state.dot_id}) is not None
        if lost:  # a snapshot covers the damage: the next start does not meet it again
            self.store.snapshot(state.snapshot())
        elif changed:
            self.store.commit()  # the id is durable before the first dot signed with it
        self._recovery_faults: dict[str, tuple[str, str]] = {}
        if lost:
            why = (
                f"store: damaged at start ({len(lost)} problems, {len(rec.quarantined)} "
                f"files kept in {self.store.dir}/quarantine); writing as {state.dot_id}"
            )
            self._recovery_faults["store-recovery"] = ("degraded", why)
            log.error("%s: %s", why, "; ".join(lost))
        if rec.state is not None or rec.deltas:
            log.info(
                "restored %d origins and %d records from %s",
                len(state.catalogue()),
                len(rec.deltas),
                self.store.dir,
            )
        return state

    def start(self, origins: Iterable[OriginSpec], now: float, *, alone: bool) -> None:
        """Declare the config's origins and place them. ``alone``: this node has no way
        to find peers (no seeds, no remembered peers, no mDNS), so it starts checking at
        once instead of waiting up to SETTLE seconds to learn the cluster."""
        self._started_at = now
        self._next_reap = now + REAP_EVERY
        restored = set(self.state.catalogue())  # from the store: place them too
        self.placement.set_origins(restored)
        self._recompute(restored)
        self.declare_config(origins, now)
        if alone:
            self.settle(now)

    def settle(self, now: float) -> None:
        """Begin checking. Until now ownership was computed but not acted on: a node that
        starts alone owns every origin for the second it takes to find its peers, and
        checking them all would hit every origin once per restart. From a fresh Handoff
        fed the current assignment, nothing is draining: only owned origins start."""
        if self.settled:
            return
        self.settled = True
        self.handoff = Handoff(self.name)
        assignment = self.placement.assignment()
        self.handoff.owners_changed(
            [OwnerChange(o, (), owners) for o, owners in assignment.items()],
            now,
            self._interval_of,
        )
        # my observations of origins I no longer own (from before a restart) go now
        mine = self.handoff.owned()
        for origin in list(self.state.origins()):
            if origin not in mine and self.state.observation(origin, self.name) is not None:
                self._local(self.state.remove_observation(origin, self.name))
        self._sync_engine(())
        log.info("checking %d of %d origins", len(mine), len(assignment))

    # --- the catalogue -------------------------------------------------------------------

    def _ts(self, origin_id: str) -> Timestamp:
        """A timestamp later than every declaration of the origin we know (LWW order)."""
        wall_ms = int(self.wall() * 1000)
        for _, _, decl in self.state.declarations(origin_id):
            self.hlc.update(decl.ts, wall_ms)
        return self.hlc.now(wall_ms)

    def declare_config(self, origins: Iterable[OriginSpec], now: float) -> None:
        """Make this node's config declarations equal ``origins`` (start and SIGHUP)."""
        wanted = {spec.id: spec for spec in origins}
        changed: set[str] = set()
        for origin_id in self.state.origins():
            for node, source, _ in self.state.declarations(origin_id):
                mine = node == self.name and source == "config"
                if (
                    mine
                    and origin_id not in wanted
                    and self._local(self.state.retract(origin_id, self.name, "config"))
                ):
                    changed.add(origin_id)
        for origin_id, spec in wanted.items():
            current = [
                d
                for n, s, d in self.state.declarations(origin_id)
                if n == self.name and s == "config"
            ]
            if current and _same_spec(current[0].spec, spec):
                continue
            if self._local(self.state.declare(spec, self.name, "config", self._ts(origin_id))):
                changed.add(origin_id)
        self._catalogue_changed(changed, now)

    def put(self, spec: OriginSpec, now: float) -> bool:
        """Declare ``spec`` through the API; True if it is a new origin to the fleet."""
        new = self.state.spec(spec.id) is None
        delta = self.state.declare(spec, self.name, "api", self._ts(spec.id))
        if self._local(delta):
            self._catalogue_changed({spec.id}, now)
        return new

    def delete(self, origin_id: str, now: float) -> bool:
        """Retract every API declaration of the origin (made through any node). False if
        there is no such origin; Conflict if node configs still declare it."""
        decls = self.state.declarations(origin_id)
        if not decls:
            return False
        for node, source, _ in decls:
            if source == "api":
                self._local(self.state.retract(origin_id, node, "api"))
        self._catalogue_changed({origin_id}, now)
        left = sorted({node for node, source, _ in decls if source == "config"})
        if left:
            raise Conflict(
                f"origin {origin_id!r} is declared in the config of {', '.join(left)}; "
                "remove it there (and reload)"
            )
        return True

    def _catalogue_changed(self, ids: set[str], now: float) -> None:
        if not ids:
            return
        changes: list[OwnerChange] = []
        result = HandoffResult()
        respec = False
        for origin_id in sorted(ids):
            spec = self.state.spec(origin_id)
            if spec is None:
                if origin_id in self.placement.origins:
                    changes += self.placement.remove_origin(origin_id)
                    if self.settled:
                        result = _merge(result, self.handoff.origin_removed(origin_id, now))
                self.verdicts.pop(origin_id, None)
            elif origin_id not in self.placement.origins:
                changes += self.placement.add_origin(origin_id)
            elif origin_id in self._engine_specs and spec != self._engine_specs[origin_id]:
                respec = True  # the effective spec changed (a newer declaration won)
        live = [c for c in changes if c.new]
        self._owners_changed(live, now, result, force_sync=respec)
        self._recompute(ids)

    # --- membership ----------------------------------------------------------------------

    def on_event(self, ev: Event, now: float, members: Callable[[], list[GossipMember]]) -> None:
        """Every membership event (the cluster's on_event chain)."""
        changed = self.replicator.handle_event(ev)
        self._flush()
        if isinstance(ev, MemberEvent):
            self._members_changed(members(), now)
        if changed:
            self._remote_changed(changed, now)

    def _members_changed(self, gossip_members: list[GossipMember], now: float) -> None:
        members = [Member(self.name, self.config.node.weight)]
        self._alive = {self.name} | {
            m.name for m in gossip_members if m.state_name in ("alive", "suspect")
        }
        for m in gossip_members:
            if m.name == self.name:
                continue
            try:
                tags = decode_tags(m.meta)
            except Exception:
                tags = {}
            members.append(member_from_tags(m.name, m.state_name, tags))
            if m.state_name in ("alive", "suspect"):
                self._absent_since.pop(m.name, None)
            else:
                self._absent_since.setdefault(m.name, now)
        changes = self.placement.set_members(members)
        if changes:
            self._owners_changed(changes, now, HandoffResult())
            self._recompute({c.origin for c in changes})

    def _owners_changed(
        self,
        changes: list[OwnerChange],
        now: float,
        result: HandoffResult,
        *,
        force_sync: bool = False,
    ) -> None:
        if self.settled and changes:
            result = _merge(result, self.handoff.owners_changed(changes, now, self._interval_of))
            for origin in list(self.handoff.draining()):
                if origin in self._drain_seen:
                    continue
                seen = self._drain_seen[origin] = dict(self.state.observations(origin))
                # A live new owner that already reports on the origin is checking it
                # (owners check; a node that loses an origin deletes its observation
                # once it stops): nothing to wait for from that one.
                for owner in self.placement.owners(origin):
                    if owner != self.name and owner in seen and owner in self._alive:
                        res = self.handoff.observation_arrived(origin, owner, now)
                        result = _merge(result, res)
        self._apply(result, force_sync=force_sync)

    def _apply(self, result: HandoffResult, *, force_sync: bool = False) -> None:
        self._gained.update(result.started)
        self._gained.difference_update(result.stopped)
        for origin in result.remove_observations:
            self._local(self.state.remove_observation(origin, self.name))
        for origin in result.stopped:
            self._drain_seen.pop(origin, None)
        if result.started or result.stopped or force_sync:
            self._sync_engine(result.started)

    def _sync_engine(self, immediate: Iterable[str]) -> None:
        if not self.settled:
            return
        specs = {}
        for origin in self.handoff.checking():
            spec = self.state.spec(origin)
            if spec is not None:
                specs[origin] = spec
        self._engine_specs = specs
        self.engine.set_origins(specs.values(), immediate=set(immediate))

    def _interval_of(self, origin_id: str) -> float:
        spec = self.state.spec(origin_id)
        return spec.interval if spec is not None else 10.0

    # --- observations --------------------------------------------------------------------

    def on_transition(self, t: Transition) -> None:
        """The engine's status change for an origin this node checks: our observation."""
        if t.new == CheckStatus.UNKNOWN or t.origin_id not in self.handoff.checking():
            return
        if self.state.spec(t.origin_id) is None:
            return
        band = latency_band(t.latency) if t.new == CheckStatus.UP else None
        delta = self.state.observe(
            t.origin_id,
            self.name,
            str(t.new),
            self.hlc.now(int(self.wall() * 1000)),
            band,
            t.reason,
            fresh=t.origin_id in self._gained,
        )
        self._gained.discard(t.origin_id)
        if self._local(delta):
            self._recompute({t.origin_id}, reason=t.reason)

    def _remote_changed(self, changed: set[str], now: float) -> None:
        catalogue = set()
        for o in changed:
            spec = self.state.spec(o)
            known = o in self.placement.origins
            if (spec is None) == known or (
                o in self._engine_specs and spec != self._engine_specs[o]
            ):
                catalogue.add(o)
        if catalogue:
            self._catalogue_changed(catalogue, now)
        draining = changed & self._drain_seen.keys()
        for origin in sorted(draining):
            seen = self._drain_seen.get(origin, {})
            for owner in self.placement.owners(origin) if origin in self.placement.origins else ():
                obs = self.state.observation(origin, owner)
                if obs is not None and obs != seen.get(owner):
                    self._apply(self.handoff.observation_arrived(origin, owner, now))
        self._recompute(changed - catalogue)

    # --- verdicts ------------------------------------------------------------------------

    def verdict(self, origin_id: str) -> str:
        if origin_id not in self.placement.origins:
            return "unknown"
        return self._judge(origin_id, self.placement.owners(origin_id))

    def _judge(self, origin_id: str, owners: tuple[str, ...]) -> str:
        """The owners' verdict; while no owner has reported yet (just after ownership
        moved), the live former owners that still drain it stand in, so a handoff does
        not blink the fleet's answer to "unknown"."""
        verdict = self.state.verdict(origin_id, owners)
        if verdict == "unknown":
            others = [
                o
                for o in self.state.observations(origin_id)
                if o in self._alive and o not in owners
            ]
            if others:
                verdict = self.state.verdict(origin_id, others)
        return verdict

    def owners(self, origin_id: str) -> tuple[str, ...]:
        if origin_id not in self.placement.origins:
            return ()
        return self.placement.owners(origin_id)

    def _recompute(self, ids: Iterable[str], reason: str = "") -> None:
        changed: set[str] = set()
        for origin in ids:
            changed.add(origin)
            if origin not in self.placement.origins:
                continue
            owners = self.placement.owners(origin)
            new = self._judge(origin, owners)
            old = self.verdicts.get(origin, "unknown")
            if new == old:
                continue
            self.verdicts[origin] = new
            why = reason or self._why(origin, owners, new)
            change = VerdictChange(origin, old, new, self.wall(), why, owners)
            self.transitions.append(change)
            if self.on_verdict is not None:
                self.on_verdict(change)
        if changed and self.on_origins is not None:
            self.on_origins(changed)

    def _why(self, origin: str, owners: tuple[str, ...], verdict: str) -> str:
        reasons = []
        for owner in owners:
            obs = self.state.observation(origin, owner)
            if obs is not None and (verdict == "disputed" or obs.status == verdict):
                reasons.append(f"{owner}: {obs.status} ({obs.reason})")
        return "; ".join(reasons)

    # --- local deltas, persistence, publication ------------------------------------------

    def _local(self, delta: Delta | None) -> bool:
        """A delta a local mutator returned: log it, and publish once durable."""
        if delta is None or delta.is_empty():
            return False
        self.store.append_delta(encode_delta(delta))
        if self.store.fault is not None:
            self.replicator.publish(delta)  # nothing can be made durable: run from memory
            self._flush()
        elif self._pending is None:
            self._pending = delta.copy()
            if self.on_work is not None:
                self.on_work()
        else:
            self._pending.join(delta)
        return True

    async def durable(self) -> bool:
        """Wait until every local change made so far is on disk (the next group commit,
        at most ``commit_interval``); False if the store is faulted (memory only)."""
        if self.store.fault is not None:
            return False
        if self._pending is None and not self.store.stats.pending_records:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return await fut

    def _remote_applied(self, raw: bytes) -> None:
        idle = self._pending is None and not self.store.stats.pending_records
        self.store.append_delta(raw)
        if idle and self.on_work is not None:
            self.on_work()

    def commit(self, now: float) -> None:
        """Group commit, then publish what it made durable."""
        self._last_commit = now
        self.store.set_meta({"hlc": self.hlc.high_water})
        self.store.commit()
        pending, self._pending = self._pending, None
        if pending is not None:
            self.replicator.publish(pending)
            self._flush()
        fault = self.store.fault
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(fault is None)
        if fault is None:
            self.faults.pop("storage", None)
        else:
            self.faults["storage"] = ("degraded", f"storage: {fault}; running from memory")

    def _flush(self) -> None:
        out = self.replicator.outputs()
        if out and self.transport is not None:
            self.transport(out)

    def next_wakeup(self, now: float) -> float:
        """When ``tick`` next has work: a commit falling due, a drain timing out, the
        settle time; at most IDLE_TICK away (reaping, disk retries). Idle nodes wake
        once a second instead of polling."""
        at = [now + IDLE_TICK]
        if self._pending is not None or self.store.stats.pending_records:
            at.append(self._last_commit + self.config.store.commit_interval)
        if not self.settled:
            at.append(self._started_at + SETTLE)
        else:
            deadline = self.handoff.next_deadline()
            if deadline is not None:
                at.append(deadline)
        return max(min(at), now)

    def tick(self, now: float, alive: set[str]) -> None:
        """Periodic work, at ``next_wakeup`` (or sooner, after ``on_work``)."""
        if not self.settled and now - self._started_at >= SETTLE:
            self.settle(now)
        if self.settled:
            deadline = self.handoff.next_deadline()
            if deadline is not None and now >= deadline:
                self._apply(self.handoff.tick(now))
        busy = self._pending is not None or self.store.stats.pending_records
        if busy and now - self._last_commit >= self.config.store.commit_interval:
            self.commit(now)
        elif self.store.fault is not None and now - self._last_commit >= 5.0:
            self.commit(now)  # retry the disk
        if now >= self._next_reap:
            self._next_reap = now + REAP_EVERY
            self.reap(now, alive)

    def reap(self, now: float, alive: set[str]) -> None:
        """Delete the observations of observers gone longer than ``reap_after``."""
        observers = {key[2] for key in self.state.crdt if key[1] == "o"}
        gone = []
        for observer in observers - alive - {self.name}:
            since = self._absent_since.setdefault(observer, max(now, self._started_at))
            if now - since >= self.config.cluster.reap_after:
                gone.append(observer)
        if gone:
            log.info("removing the observations of %s (gone)", ", ".join(sorted(gone)))
            affected = {key[0] for key in self.state.crdt if key[1] == "o" and key[2] in gone}
            if self._local(self.state.reap(gone)):
                self._recompute(affected)

    def close(self) -> None:
        """Clean shutdown: make everything durable."""
        self.store.set_meta({"hlc": self.hlc.high_water})
        ok = self.store.close()
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(ok)

    # --- views ---------------------------------------------------------------------------

    def mine(self) -> set[str]:
        return self.handoff.checking() if self.settled else set()

    def counts(self) -> dict[str, int]:
        c = {"up": 0, "down": 0, "disputed": 0, "unknown": 0}
        for origin in self.placement.origins:
            c[self.verdicts.get(origin, "unknown")] += 1
        return c

    def mine_counts(self) -> dict[str, int]:
        owned = self.handoff.owned() if self.settled else set()
        c = {"owned": len(owned), "up": 0, "down": 0, "disputed": 0, "unknown": 0}
        for origin in owned:
            c[self.verdicts.get(origin, "unknown")] += 1
        return c


def _same_spec(a: OriginSpec, b: OriginSpec) -> bool:
    return canonical_spec(a) == canonical_spec(b)


def _merge(a: HandoffResult, b: HandoffResult) -> HandoffResult:
    return HandoffResult(
        started=sorted(set(a.started) | set(b.started)),
        stopped=sorted(set(a.stopped) | set(b.stopped)),
        remove_observations=sorted(set(a.remove_observations) | set(b.remove_observations)),
    )


def send_outputs(node: Any, outputs: list[Output]) -> None:
    """Hand the replicator's outputs to a MembershipNode."""
    if node is None or node.core is None:
        return
    for out in outputs:
        if isinstance(out, Gossip):
            node.broadcast(out.payload, exclude=out.exclude)
        elif out.reliable:
            node.send_reliable(out.addr, out.payload)
        else:
            node.send_user(out.addr, out.payload)


class CoordinatorCollector(Collector):
    """Replication, store (wear) and placement figures, read at scrape time."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator

    def collect(self) -> Iterable[Any]:
        c = self.c
        rep = CounterMetricFamily(
            "edge_agent_replication", "Replication events, by kind.", labels=["kind"]
        )
        for kind, n in c.replicator.counters.as_dict().items():
            rep.add_metric([kind], n)
        yield rep
        s = c.store.stats
        for name, help_, value in (
            ("edge_agent_store_bytes_written", "Bytes written to the SD card.", s.bytes_written),
            ("edge_agent_store_fsyncs", "fsync/fdatasync calls.", s.fsyncs),
            ("edge_agent_store_snapshots", "Snapshots written.", s.snapshots),
            ("edge_agent_store_commits", "Group commits.", s.commits),
            ("edge_agent_store_write_errors", "Failed commits or snapshots.", s.write_errors),
            (
                "edge_agent_store_records_dropped",
                "Records dropped while faulted.",
                s.records_dropped,
            ),
            (
                "edge_agent_store_unlink_errors",
                "Files the store could not delete.",
                s.unlink_errors,
            ),
        ):
            yield CounterMetricFamily(name, help_, value=value)
        yield GaugeMetricFamily(
            "edge_agent_store_fault",
            "1 while the store cannot write.",
            value=1 if c.store.fault else 0,
        )
        yield GaugeMetricFamily(
            "edge_agent_store_pending_records", "Records not yet durable.", value=s.pending_records
        )
        yield GaugeMetricFamily(
            "edge_agent_store_quarantined_files",
            "Damaged store files set aside at start (kept in the store's quarantine/).",
            value=s.quarantined_files,
        )
        yield GaugeMetricFamily(
            "edge_agent_origins_checked",
            "Origins this node checks (owned or draining).",
            value=len(c.mine()),
        )
        yield GaugeMetricFamily(
            "edge_agent_state_dots",
            "Live entries in the replicated state.",
            value=c.state.crdt.dot_count(),
        )


__all__ = [
    "Conflict",
    "Coordinator",
    "CoordinatorCollector",
    "VerdictChange",
    "send_outputs",
]
