"""The node core: this node's share of the fleet's work and knowledge, without I/O.

It ties the parts that were built to stand alone into the agent's data flow
(docs/design.md, "Data flow"; docs/replication.md, docs/placement.md)::

    config / API ──declare──▶ State ◀──apply── Replicator ◀── membership events
                                │  ▲                │
             catalogue ─────────┘  └──observe──┐    └──▶ outputs (gossip, TCP)
                 ▼                             │
    members ─▶ Placement ─▶ Handoff ─▶ engine origin set (only the origins this node checks)
                 │
                 └──▶ Verdicts (State.verdict over the current owners) ─▶ events, webhooks

Events go in (membership events, check transitions, API puts and deletes), with the
monotonic ``now`` and the unix ``wall`` time passed by the caller; everything the node
must do comes out of ``drain()`` as an ``Outputs``: records to persist, the local delta
to publish **once those records are durable**, the engine's new origin set, verdict
changes and packets for the membership node. It opens no file, reads no clock and needs
no event loop, so a unit test drives it directly. The shell (agent/shell/coordinator.py)
owns the store and decides when a delta is durable; it calls ``publish`` then.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.checks import Status as CheckStatus
from agent.checks import Transition
from agent.crdt import HLC
from agent.domain import OriginSpec
from agent.membership import Event, MemberEvent, Settings, decode_tags
from agent.membership import Member as GossipMember
from agent.node.catalogue import Catalogue, CatalogueDiff, Conflict
from agent.node.flaps import FlapDamping
from agent.node.handoff import Handoff, HandoffResult
from agent.node.lb_answer import LbStatus
from agent.node.placement import Member, OwnerChange, Placement, claims_role, member_from_tags
from agent.node.proof import Proof
from agent.node.replication import (
    Output,
    ReplicationDecodeError,
    ReplicationMessage,
    Replicator,
)
from agent.node.state import Delta, State, encode_delta, latency_band
from agent.node.vantage import VantageTally
from agent.node.vantage import describe as describe_vantage
from agent.node.verdicts import VerdictChange, Verdicts

log = logging.getLogger(__name__)

SETTLE = 3.0  # at most this long after start before checking while looking for peers
#: the longest the periodic work sleeps: a safety net, since every piece of it with a time
#: of its own (settling, drains, flap holds, site grace, repeated asks, reaping) is in
#: ``next_deadline``, and changes wake it at once; an idle node wakes that rarely
IDLE_TICK = 10.0
REAP_EVERY = 60.0
#: a failed (not left) member's site still counts towards ``confirm_sites`` this long:
#: the other side of a partition must not confirm "down" alone while its own checks may be
#: failing for the same reason (docs/placement.md, "Verdicts across sites")
SITE_GRACE = 300.0
#: a change that adds at most this many origins checks them at once (an operator adding
#: one sees its verdict in seconds); a bigger one spreads their first checks over their
#: intervals, as a start does (docs/config.md)
CHECK_AT_ONCE_MAX = 100
#: verdicts judged again in one step after owners moved (their observations did not);
#: the rest of a bigger move waits for the next ticks, this many a tick. A member's
#: death at 100,000 origins over 5 nodes moves 40,000: ~0.35 s of one loop pass, during
#: which nothing answers a probe. The fleet's answer for one origin (``verdict``) is
#: always judged fresh; only the kept verdicts (counts, transitions) follow a tick later.
REJUDGE_SLICE = 2000


@dataclass(frozen=True, slots=True)
class EngineUpdate:
    """What changed in the set of origins the check engine must run, since the last
    update: ``upsert``, new or respecified origins; ``remove``, ids to stop;
    ``immediate``, ids to check at once (taken over in a handoff) instead of after their
    spread delay. A diff, not the whole set: at 40,000 checked origins, rebuilding and
    comparing the set on every batch that moves a few was most of a receiver's work."""

    upsert: tuple[OriginSpec, ...]
    remove: frozenset[str]
    immediate: frozenset[str]


@dataclass(slots=True)
class Outputs:
    """What the core asks of its shell since the last ``drain``, in the order to do it."""

    records: list[bytes] = field(default_factory=list)  # encoded deltas for the store
    local: Delta | None = None  # publish only once ``records`` are durable
    engine: EngineUpdate | None = None
    verdicts: list[VerdictChange] = field(default_factory=list)
    origins: set[str] = field(default_factory=set)  # ids whose view changed (events)
    sends: list[Output] = field(default_factory=list)  # for the membership node


class NodeCore:
    """See the module docstring. One per agent; every method returns at once."""

    def __init__(
        self,
        name: str,
        state: State,
        *,
        weight: float = 1.0,
        site: str | None = None,
        replicas: int = 2,
        confirm_sites: int = 0,
        site_grace: float = SITE_GRACE,
        reap_after: float = 3600.0,
        hlc_high_water: int = 0,
        gossip: Settings | None = None,
    ) -> None:
        """``gossip``: the membership settings, for the largest delta a packet carries."""
        self.name = name
        self.weight = weight
        self.site = site  # failure domain, as the "site" tag others read (docs/placement.md)
        self.reap_after = reap_after
        self.state = state
        high_water = max(hlc_high_water, state.own_high_water())
        self.hlc = HLC(name, high_water or None)
        self.replicator = Replicator(
            state, gossip=gossip, on_apply=self._remote_applied, on_heard=self._heard
        )
        # who has proven to be an edge-agent (placement's eligibility, agent/node/proof.py)
        self.proof = Proof()
        self.flaps = FlapDamping()  # members that keep dying are held out (flaps.py)
        self._gossip_members: list[GossipMember] = []  # the last list, for a hold's end
        self._claimants: set[str] = set()  # live members whose tags claim our role
        self._newly_proven = False
        self.placement = Placement([Member(name, weight, site=site)], replicas)
        self.handoff = Handoff(name)
        self.replicas = replicas
        self.confirm_sites = confirm_sites  # 0: automatic (site_count)
        self.site_grace = site_grace
        self._sites: dict[str, str] = {name: site} if site else {}  # name -> its last site
        self._states: dict[str, str] = {}  # listed member -> its state name
        # listed member -> ((state, meta, proven), its Member, claims the role)
        self._known: dict[str, tuple[tuple[str, bytes, bool], Member, bool]] = {}
        self.verdicts = Verdicts(state, self.placement, self.site_of)
        # the owned origins by verdict, kept as either changes (mine_counts is read at
        # every LED and STATUS refresh: a pass over 100,000 owned origins took 0.1 s)
        self._mine_tally = _no_verdicts()
        self.catalogue = Catalogue(name, state, self.hlc, self._local)
        self.settled = False
        self._out = Outputs()
        self._drain_seen: dict[str, dict[str, Any]] = {}
        self._absent_since: dict[str, float] = {}
        self._alive: set[str] = {name}  # live members (alive or suspect), me included
        self._gained: set[str] = set()  # taken over, first result not yet written
        self._next_reap = 0.0
        self._rejudge: set[str] = set()  # owners moved: verdicts to judge again (tick)
        self._started_at = 0.0
        self._engine_specs: dict[str, OriginSpec] = {}  # what the engine runs (once drained)
        # origins whose spec may differ from _engine_specs' since the last engine sync
        self._spec_dirty: set[str] = set()
        # the engine's diff not yet drained (EngineUpdate's fields)
        self._engine_upsert: dict[str, OriginSpec] = {}
        self._engine_remove: set[str] = set()
        self._engine_now: set[str] = set()

    # --- outputs -------------------------------------------------------------------------

    def drain(self) -> Outputs:
        """Everything asked of the shell since the last call (then forgotten here)."""
        out, self._out = self._out, Outputs()
        if self._engine_upsert or self._engine_remove or self._engine_now:
            out.engine = EngineUpdate(
                tuple(self._engine_upsert.values()),
                frozenset(self._engine_remove),
                frozenset(self._engine_now),
            )
            self._engine_upsert, self._engine_remove, self._engine_now = {}, set(), set()
        out.sends = self.replicator.outputs()
        return out

    def publish(self, delta: Delta | None) -> None:
        """The shell made ``delta``'s records durable (or cannot, and runs from memory):
        spread it. Its packets come out of the next ``drain``."""
        self.replicator.publish(delta)

    # --- start-up ------------------------------------------------------------------------

    def start(self, origins: Iterable[OriginSpec], now: float, wall: float, *, alone: bool) -> None:
        """Declare the config's origins and place them. ``alone``: this node has no way
        to find peers (no seeds, no remembered peers, no mDNS), so it starts checking at
        once instead of waiting up to SETTLE seconds to learn the cluster."""
        self._started_at = now
        self._next_reap = now + REAP_EVERY
        restored = set(self.state.catalogue())  # from the store: place them too
        self.placement.set_origins(restored)
        self._recompute(restored, wall)
        self.declare_config(origins, now, wall)
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
        self._mine_tally = _no_verdicts()
        self.handoff.on_owned = self._owned_changed
        assignment = self.placement.assignment()
        self.handoff.owners_changed(
            [OwnerChange(o, (), owners) for o, owners in assignment.items()],
            now,
            self._interval_of,
        )
        # my observations of origins I no longer own (from before a restart) go now
        mine = self.handoff.owned()
        stale = [
            origin
            for origin in self.state.origins()
            if origin not in mine and self.state.observation(origin, self.name) is not None
        ]
        if stale:
            self._local(self.state.remove_observations(stale, self.name))
        self._sync_engine((), None)
        log.info("checking %d of %d origins", len(mine), len(assignment))

    # --- the catalogue -------------------------------------------------------------------

    def declare_config(self, origins: Iterable[OriginSpec], now: float, wall: float) -> None:
        """Make this node's config declarations equal ``origins`` (start and SIGHUP)."""
        self._catalogue_changed(self.catalogue.declare_config(origins, wall), now, wall)

    def put(self, spec: OriginSpec, now: float, wall: float) -> bool:
        """Declare ``spec`` through the API; True if it is a new origin to the fleet."""
        new, changed = self.catalogue.put(spec, wall)
        if changed:
            self._catalogue_changed({spec.id}, now, wall)
        return new

    def apply_batch(
        self,
        specs: Sequence[OriginSpec],
        now: float,
        wall: float,
        *,
        replace: bool,
        dry_run: bool = False,
    ) -> CatalogueDiff:
        """Declare many origins through the API in one delta; ``replace``: the batch
        becomes the whole API-declared set (a declarative apply). ``dry_run``: only say
        what would change. Placement, handoff and verdicts move once, for all of them."""
        if dry_run:
            return self.catalogue.plan(specs, replace=replace)
        diff = self.catalogue.apply_batch(specs, wall, replace=replace)
        self._catalogue_changed(diff.ids, now, wall)
        return diff

    def api_specs(self) -> dict[str, OriginSpec]:
        """The API-declared set (Catalogue.api_specs)."""
        return self.catalogue.api_specs()

    def api_spec(self, origin_id: str) -> OriginSpec | None:
        """One origin's spec in the API-declared set, or None."""
        return self.catalogue.api_spec(origin_id)

    def delete(self, origin_id: str, now: float, wall: float) -> bool:
        """Retract every API declaration of the origin (made through any node). False if
        there is no such origin; Conflict if node configs still declare it."""
        left = self.catalogue.delete(origin_id)
        if left is None:
            return False
        self._catalogue_changed({origin_id}, now, wall)
        if left:
            raise Conflict(
                f"origin {origin_id!r} is declared in the config of {', '.join(left)}; "
                "remove it there (and reload)"
            )
        return True

    def _catalogue_changed(self, ids: set[str], now: float, wall: float) -> None:
        if not ids:
            return
        self._spec_dirty |= ids
        changes: list[OwnerChange] = []
        result = HandoffResult()
        respec = False
        gone: list[str] = []
        for origin_id in sorted(ids):
            spec = self.state.spec(origin_id)
            if spec is None:
                if origin_id in self.placement.origins:
                    changes += self.placement.remove_origin(origin_id)
                    gone.append(origin_id)
            elif origin_id not in self.placement.origins:
                changes += self.placement.add_origin(origin_id)
            elif origin_id in self._engine_specs and spec != self._engine_specs[origin_id]:
                respec = True  # the effective spec changed (a newer declaration won)
        if gone and self.settled:
            result = self.handoff.origins_removed(gone, now)  # one pass for a whole batch
        for origin_id in ids:  # after handoff, whose on_owned reads the verdict it had
            if origin_id not in self.placement.origins:
                self.verdicts.forget(origin_id)
        live = [c for c in changes if c.new]
        # a new origin is not taken over from anyone: in a big change its first check
        # keeps its phase in the interval, so a batch of 10,000 does not fire at once; a
        # small one (a PUT) is checked at once, so its verdict is there in seconds
        spread = {c.origin for c in live if not c.old}
        if len(spread) <= CHECK_AT_ONCE_MAX:
            spread = set()
        self._owners_changed(live, now, result, force_sync=respec, spread=spread)
        self._recompute(ids, wall)

    # --- membership ----------------------------------------------------------------------

    def on_event(
        self,
        ev: Event,
        now: float,
        wall: float,
        members: Callable[[], list[GossipMember]],
        decoded: ReplicationMessage | ReplicationDecodeError | None = None,
    ) -> None:
        """Every membership event; ``members`` (the current list) is read on member
        changes only; ``decoded``: see Replicator.handle_event."""
        changed = self.replicator.handle_event(ev, decoded)
        if isinstance(ev, MemberEvent) or self._newly_proven:
            self._newly_proven = False
            self.members_changed(members(), now, wall)
        if changed:
            self._remote_changed(changed, now, wall)

    def members_changed(self, gossip_members: list[GossipMember], now: float, wall: float) -> None:
        self._gossip_members = gossip_members
        members = [Member(self.name, self.weight, site=self.site)]
        self._alive = {self.name} | {
            m.name for m in gossip_members if m.state_name in ("alive", "suspect")
        }
        claimants = set()
        moved: list[str] = []  # members whose site changed
        self._states = {m.name: m.state_name for m in gossip_members if m.name != self.name}
        known, self._known = self._known, {}
        for m in gossip_members:
            if m.name == self.name:
                continue
            state = m.state_name
            live = state in ("alive", "suspect")
            if not live:
                self.proof.forget(m.name)  # back later: it proves itself again
            proven = m.name in self.proof.proven
            # Every member change re-reads the whole list: a member whose state, tags and
            # proof are as last time keeps its Member (decoding every member's tags at every
            # event made a 100-node join quadratic in tag decoding).
            key = (state, m.meta, proven)
            seen = known.get(m.name)
            if seen is not None and seen[0] == key:
                member, claims = seen[1], seen[2]
            else:
                # decode_tags never raises on damaged bytes (it keeps what it read, and logs
                # and counts the damage itself); anything it raises is a bug, and must surface
                tags = decode_tags(m.meta)
                claims = claims_role(tags)
                member = member_from_tags(m.name, state, tags, proven=proven)
            self._known[m.name] = (key, member, claims)
            if live:
                self._absent_since.pop(m.name, None)
                if claims:
                    claimants.add(m.name)
            else:
                self._absent_since.setdefault(m.name, now)
            if member.site and self._sites.get(m.name) != member.site:
                self._sites[m.name] = member.site
                moved.append(m.name)
            until = self.flaps.update(m.name, member.eligible, state == "dead", now)
            if until is not None:
                log.warning(
                    "member %s keeps dying and coming back: it owns no origins for %.0f s "
                    "(its origins stay with the owners that took them over)",
                    m.name,
                    until - now,
                )
            if member.eligible and self.flaps.held(m.name, now):
                member = replace(member, eligible=False)
            members.append(member)
        listed = {m.name for m in gossip_members}
        for name in self.proof.proven - listed:
            self.proof.forget(name)  # gone from the member list altogether
        self.flaps.forget(listed)
        self._claimants = claimants
        self._ask(now)
        changes = self.placement.set_members(members)
        if changes:
            self._owners_changed(changes, now, HandoffResult())
        if any(self.verdicts.vantages.observes(n) for n in moved):
            self.verdicts.vantages.rebuild(self.verdicts.statuses)
        if not self._confirm_changed(now, wall) and changes:
            # owners moved, observations did not (handoff's removals went to verdicts)
            self._rejudge_later({c.origin for c in changes}, wall)

    def _heard(self, sender: str) -> None:
        """The replicator heard ``sender`` speak our protocol: proof, if it claims the role
        (placement changes on the caller's next step: ``on_event`` re-reads the members)."""
        if sender in self._claimants and self.proof.heard(sender):
            self._newly_proven = True

    def _ask(self, now: float) -> None:
        """Hello, asking for an answer, to each claimant not yet proven whose turn it is."""
        reachable = self._claimants & self.replicator.peers().keys()  # its event came
        for name in self.proof.asks_due(reachable, now):
            self.replicator.greet(name, ask=True)

    def _owners_changed(
        self,
        changes: list[OwnerChange],
        now: float,
        result: HandoffResult,
        *,
        force_sync: bool = False,
        spread: Collection[str] = (),
    ) -> None:
        if self.settled and changes:
            result = _merge(result, self.handoff.owners_changed(changes, now, self._interval_of))
            arrived: list[tuple[str, str]] = []
            for origin in list(self.handoff.draining()):
                if origin in self._drain_seen:
                    continue
                seen = self._drain_seen[origin] = dict(self.state.observations(origin))
                # A live new owner that already reports on the origin is checking it
                # (owners check; a node that loses an origin deletes its observation
                # once it stops): nothing to wait for from that one.
                for owner in self.placement.owners(origin):
                    if owner != self.name and owner in seen and owner in self._alive:
                        arrived.append((origin, owner))
            if arrived:  # one pass for all: a member change can move thousands at once
                result = _merge(result, self.handoff.observations_arrived(arrived, now))
        self._apply(result, force_sync=force_sync, spread=spread)

    def _apply(
        self, result: HandoffResult, *, force_sync: bool = False, spread: Collection[str] = ()
    ) -> None:
        """Act on handoff's decisions; origins it started are checked at once when no
        other live owner reports on them (a takeover must answer now), except those in
        ``spread`` (new to the catalogue). One that another live owner reports on still
        has a verdict: it keeps its phase, so a node's death with 40,000 origins does not
        fire 40,000 checks at once on the survivors (docs/placement.md)."""
        self._gained.update(result.started)
        self._gained.difference_update(result.stopped)
        if result.remove_observations:
            self._local(self.state.remove_observations(result.remove_observations, self.name))
            self.verdicts.observed(result.remove_observations)
        for origin in result.stopped:
            self._drain_seen.pop(origin, None)
        if result.started or result.stopped or force_sync:
            self._sync_engine(
                [o for o in result.started if o not in spread and not self._covered(o)],
                result.started + result.stopped,
            )

    def _covered(self, origin: str) -> bool:
        """Another live owner reports on ``origin`` (owners check; a node that loses an
        origin deletes its observation once it stops): the verdict does not wait on us."""
        if origin not in self.placement.origins:
            return False
        state, alive = self.state, self._alive
        return any(
            owner != self.name and owner in alive and state.observation(origin, owner) is not None
            for owner in self.placement.owners(origin)
        )

    def _sync_engine(self, immediate: Iterable[str], touched: Iterable[str] | None) -> None:
        """Bring the engine's set up to date for the ``touched`` origins (None: all of
        them, once, at settle) and those whose declarations changed since the last sync;
        the difference goes out in the next drain's EngineUpdate."""
        if not self.settled:
            return
        engine, dirty = self._engine_specs, self._spec_dirty
        if touched is None:
            ids: set[str] = self.handoff.checking() | engine.keys()
        else:
            ids = set(touched)
            ids |= dirty
        self._spec_dirty = set()
        upsert, remove, now_ = self._engine_upsert, self._engine_remove, self._engine_now
        for origin in ids:
            old = engine.get(origin)
            want = None
            if self.handoff.is_checking(origin):
                # a spec is looked up again only when its declarations changed
                want = old if old is not None and origin not in dirty else self.state.spec(origin)
            if want is None:
                if old is not None:
                    del engine[origin]
                    upsert.pop(origin, None)
                    now_.discard(origin)
                    remove.add(origin)
            elif old is None or (want is not old and want != old):
                engine[origin] = want
                upsert[origin] = want
                remove.discard(origin)
        now_.update(o for o in immediate if o in engine)

    def checked_specs(self) -> dict[str, OriginSpec]:
        """The set the engine runs once the pending update is drained (a copy)."""
        return dict(self._engine_specs)

    def _interval_of(self, origin_id: str) -> float:
        spec = self.state.spec(origin_id)
        return spec.interval if spec is not None else 10.0

    # --- observations --------------------------------------------------------------------

    def on_transition(self, t: Transition, wall: float) -> None:
        """The engine's status change for an origin this node checks: our observation."""
        if t.new == CheckStatus.UNKNOWN or not self.handoff.is_checking(t.origin_id):
            return
        if self.state.spec(t.origin_id) is None:
            return
        band = latency_band(t.latency) if t.new == CheckStatus.UP else None
        delta = self.state.observe(
            t.origin_id,
            self.name,
            str(t.new),
            self.hlc.now(int(wall * 1000)),
            band,
            t.reason,
            fresh=t.origin_id in self._gained,
        )
        self._gained.discard(t.origin_id)
        if self._local(delta):
            self._recompute({t.origin_id}, wall, reason=t.reason)

    def _remote_changed(self, changed: set[str], now: float, wall: float) -> None:
        changed = changed | self.catalogue.assert_config(sorted(changed), wall)
        catalogue = set()
        for o in changed:
            spec = self.state.spec(o)
            known = o in self.placement.origins
            if (spec is None) == known or (
                o in self._engine_specs and spec != self._engine_specs[o]
            ):
                catalogue.add(o)
        if catalogue:
            self._catalogue_changed(catalogue, now, wall)
        draining = changed & self._drain_seen.keys()
        arrived: list[tuple[str, str]] = []
        for origin in sorted(draining):
            seen = self._drain_seen.get(origin, {})
            for owner in self.placement.owners(origin) if origin in self.placement.origins else ():
                obs = self.state.observation(origin, owner)
                if obs is not None and obs != seen.get(owner):
                    arrived.append((origin, owner))
        if arrived:
            self._apply(self.handoff.observations_arrived(arrived, now))
        self._recompute(changed - catalogue, wall)

    # --- verdicts ------------------------------------------------------------------------

    @property
    def transitions(self) -> deque[VerdictChange]:
        return self.verdicts.transitions

    def verdict(self, origin_id: str) -> str:
        return self.verdicts.verdict(origin_id, self._alive)

    def lb_status(self, origin_id: str) -> LbStatus | None:
        """What the load-balancer surfaces answer from (agent/node/lb_answer.py); None
        when the fleet has no such origin. A few dictionary lookups: cheap enough for
        thousands of agent-checks a second."""
        if origin_id not in self.placement.origins:
            return None
        spec = self.state.spec(origin_id)
        if spec is None:
            return None
        verdict = self.verdict(origin_id)
        reason = "" if verdict == "up" else self.verdicts.reason(origin_id, verdict, self._alive)
        return LbStatus(verdict, reason, spec.fail_open)

    def owners(self, origin_id: str) -> tuple[str, ...]:
        if origin_id not in self.placement.origins:
            return ()
        return self.placement.owners(origin_id)

    def _recompute(
        self, ids: Iterable[str], wall: float, reason: str = "", *, observed: bool = True
    ) -> None:
        """Judge ``ids`` again; ``observed``: their observations may have changed (the
        vantage tallies follow: agent/node/vantage.py)."""
        ids = set(ids)
        changes = self.verdicts.recompute(ids, self._alive, wall, reason, observed=observed)
        if self.settled:
            for change in changes:
                if self.handoff.is_owned(change.origin):
                    self._mine_tally[change.old] -= 1
                    self._mine_tally[change.new] += 1
        self._out.verdicts += changes
        self._out.origins |= ids

    def _rejudge_later(self, ids: Iterable[str], wall: float) -> None:
        """Owners moved for ``ids``, observations did not: judge them again, the first
        REJUDGE_SLICE now and the rest at the next ticks (``next_deadline`` says when)."""
        self._rejudge.update(ids)
        self._rejudge_some(wall)

    def _rejudge_some(self, wall: float) -> None:
        pending = self._rejudge
        if not pending:
            return
        if len(pending) <= REJUDGE_SLICE:
            chunk, self._rejudge = pending, set()
        else:
            chunk = {pending.pop() for _ in range(REJUDGE_SLICE)}
        self._recompute(chunk, wall, observed=False)

    @property
    def rejudging(self) -> int:
        """Verdicts still to judge again after a big move of owners (``tick`` does)."""
        return len(self._rejudge)

    # --- local and remote deltas ---------------------------------------------------------

    def _local(self, delta: Delta | None) -> bool:
        """A delta a local mutator returned: a record to persist, published once durable."""
        if delta is None or delta.is_empty():
            return False
        self._out.records.append(encode_delta(delta))
        if self._out.local is None:
            self._out.local = delta.copy()
        else:
            self._out.local.join(delta)
        return True

    def _remote_applied(self, raw: bytes) -> None:
        self._out.records.append(raw)  # a peer's delta: persisted, never re-published by us

    # --- periodic work -------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work of its own: settling, a drain timing out, a held
        member's return, a site's grace ending, a repeated ask, the next reap."""
        if self._rejudge:
            return 0.0  # due now: the next slice of a big move's verdicts
        asks = self.proof.next_ask()
        if not self.settled:
            return min(self._started_at + SETTLE, asks if asks is not None else math.inf)
        return min(
            (
                t
                for t in (
                    self.handoff.next_deadline(),
                    self.flaps.next_expiry(),
                    self._next_grace_end(),
                    asks,
                    self._next_reap,
                )
                if t is not None
            ),
            default=None,
        )

    def tick(self, now: float, wall: float, alive: set[str]) -> None:
        """Settle, time out drains, reap, ask unproven claimants, judge the next slice of
        a big move's verdicts: whatever falls due."""
        self._rejudge_some(wall)
        self._ask(now)
        if not self.settled and now - self._started_at >= SETTLE:
            self.settle(now)
        if self.settled:
            deadline = self.handoff.next_deadline()
            if deadline is not None and now >= deadline:
                self._apply(self.handoff.tick(now))
        if self.flaps.expire(now):  # a held member is taken back into placement
            self.members_changed(self._gossip_members, now, wall)
        if not self._confirm_changed(now, wall):
            self._recompute((), wall)  # an observer's impairment changed meanwhile
        if now >= self._next_reap:
            self._next_reap = now + REAP_EVERY
            self.reap(now, wall, alive)

    def reap(self, now: float, wall: float, alive: set[str]) -> None:
        """Delete the observations of observers gone longer than ``reap_after``."""
        observers = {key[2] for key in self.state.crdt if key[1] == "o"}
        gone = []
        for observer in observers - alive - {self.name}:
            since = self._absent_since.setdefault(observer, max(now, self._started_at))
            if now - since >= self.reap_after:
                gone.append(observer)
        if gone:
            log.info("removing the observations of %s (gone)", ", ".join(sorted(gone)))
            affected = {key[0] for key in self.state.crdt if key[1] == "o" and key[2] in gone}
            if self._local(self.state.reap(gone)):
                self._recompute(affected, wall)

    # --- views ---------------------------------------------------------------------------

    def mine(self) -> set[str]:
        return self.handoff.checking() if self.settled else set()

    def checks(self, origin_id: str) -> bool:
        """``origin_id in mine()``, in constant time."""
        return self.settled and self.handoff.is_checking(origin_id)

    def counts(self) -> dict[str, int]:
        """Every origin in the fleet catalogue, by verdict (O(1): kept as they change)."""
        return self.verdicts.fleet_counts(len(self.placement.origins))

    def mine_counts(self) -> dict[str, int]:
        """The origins this node owns, by verdict (O(1): kept as they change)."""
        if not self.settled:
            return {"owned": 0, **_no_verdicts()}
        return {"owned": self.handoff.owned_count(), **self._mine_tally}

    # --- sites and vantage points --------------------------------------------------------

    def site_of(self, name: str) -> str:
        """``name``'s failure domain, as verdicts compare them: its site, else a domain of
        its own (a key no site can spell: sites are printable)."""
        site = self._sites.get(name)
        return site if site else "\x00" + name

    def site_name(self, name: str) -> str:
        """``name``'s site for people: its site, else its own name."""
        return self._sites.get(name) or name

    def known_sites(self, now: float) -> set[str]:
        """The sites of live members, me, and members with a site that failed less than
        ``site_grace`` ago (left members, and failed ones without a site, do not count:
        a fleet that names no sites keeps judging with the nodes it has): what
        ``confirm_sites`` counts."""
        sites = {self.site_of(self.name)}
        for name, state in self._states.items():
            if state in ("alive", "suspect"):
                sites.add(self.site_of(name))
            elif state == "dead" and name in self._sites:
                since = self._absent_since.get(name, now)
                if now - since < self.site_grace:
                    sites.add(self.site_of(name))
        return sites

    def confirm(self, now: float) -> int:
        """Sites whose owners must agree on "down": ``confirm_sites`` (0: 2), at most the
        owners per origin and the sites known (docs/placement.md)."""
        wanted = self.confirm_sites or 2
        return max(1, min(wanted, self.replicas, len(self.known_sites(now))))

    def _confirm_changed(self, now: float, wall: float) -> bool:
        """Bring ``confirm`` up to date; when it changed, every verdict is judged again."""
        confirm = self.confirm(now)
        if confirm == self.verdicts.confirm:
            return False
        log.info(
            "a down verdict now needs owners in %d site(s) to agree (%d site(s) known)",
            confirm,
            len(self.known_sites(now)),
        )
        self.verdicts.confirm = confirm
        self._rejudge_later(self.placement.origins, wall)
        return True

    def _next_grace_end(self) -> float | None:
        ends = [
            self._absent_since[n] + self.site_grace
            for n, state in self._states.items()
            if state == "dead" and n in self._absent_since and n in self._sites
        ]
        return min(ends, default=None)

    def vantage(self, name: str | None = None) -> tuple[bool, VantageTally]:
        """Whether ``name`` (default: this node) is an impaired vantage point, and its
        tally (agent/node/vantage.py)."""
        name = self.name if name is None else name
        vantages = self.verdicts.vantages
        return name in vantages.impaired, vantages.tally(name)

    def vantage_reason(self) -> str:
        impaired, tally = self.vantage()
        return describe_vantage(tally) if impaired else ""

    def impaired_sites(self) -> dict[str, list[str]]:
        """Sites that cannot reach the origins: every live member of the site that reports
        on origins is an impaired vantage point (a node without a site is its own)."""
        vantages = self.verdicts.vantages
        by_site: dict[str, list[str]] = {}
        for name in sorted(self._alive):
            if vantages.observes(name):
                by_site.setdefault(self.site_of(name), []).append(name)
        return {
            self.site_name(names[0]): names
            for names in by_site.values()
            if all(n in vantages.impaired for n in names)
        }

    def alert_sender(self, site: str) -> str:
        """The member that sends the alerts about ``site`` (its impairment and recovery):
        the first live member by name outside that site that is not impaired, else the
        first live member outside it, else the first live member. Every node computes
        the same one from the same view, and it stays the same from the alert to the
        recovery (the site's own members are not in the running)."""
        impaired = self.verdicts.vantages.impaired
        alive = sorted(self._alive)
        outside = [n for n in alive if self.site_name(n) != site]
        return next((n for n in outside if n not in impaired), (outside or alive)[0])

    def _owned_changed(self, origin: str, owned: bool) -> None:
        """Handoff.on_owned: an origin joined or left the owned set, with its verdict."""
        self._mine_tally[self.verdicts.current.get(origin, "unknown")] += 1 if owned else -1


def _no_verdicts() -> dict[str, int]:
    return {"up": 0, "down": 0, "disputed": 0, "unknown": 0}


def _merge(a: HandoffResult, b: HandoffResult) -> HandoffResult:
    return HandoffResult(
        started=sorted(set(a.started) | set(b.started)),
        stopped=sorted(set(a.stopped) | set(b.stopped)),
        remove_observations=sorted(set(a.remove_observations) | set(b.remove_observations)),
    )


__all__ = ["Conflict", "EngineUpdate", "NodeCore", "Outputs", "VerdictChange"]
