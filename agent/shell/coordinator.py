"""The coordinator: the node core (agent/node/core.py) wired to the store, the check
engine and the membership node. It is the thin shell around a pure core.

The core decides (catalogue, placement, handoff, verdicts, replication); this shell
carries its outputs out: records go to the store through group commit on one writer
thread (agent/shell/persistence.py), local deltas are **published only after the commit that
made them durable** (so a node that crashes and restarts can never reuse a dot a peer
already holds for a different write), the engine gets its origin set, verdict changes
go to the runtime's callbacks, and packets go to the membership node. While the disk
is failing nothing can be made durable: deltas are published at once and the node runs
from memory (health ``degraded``), as docs/design.md's failure modes say.

Time comes in as ``now`` (the loop's monotonic clock); unix time is read from ``wall``
here, once per input, and passed down, so the core never reads a clock.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.checks import Transition
from agent.crdt import HLC, CrdtDecodeError
from agent.domain import OriginSpec
from agent.membership import Event
from agent.membership import Member as GossipMember
from agent.node import (
    IDLE_TICK,
    UNKNOWN_SPEC_KEYS,
    CatalogueDiff,
    Conflict,
    Delta,
    Gossip,
    Handoff,
    LbStatus,
    NodeCore,
    Output,
    Placement,
    ReplicationDecodeError,
    ReplicationMessage,
    Replicator,
    State,
    VerdictChange,
    decode_delta,
)
from agent.shell.config import Config
from agent.shell.persistence import GroupCommit
from agent.store import REPLICA_META_KEY, FileOps, SnapshotBudget, Store, choose_replica_id

log = logging.getLogger(__name__)


class Engine(Protocol):
    """What the coordinator asks of the check engine (agent/checks/engine.py)."""

    def update(
        self,
        upsert: Iterable[OriginSpec],
        remove: Iterable[str] = (),
        immediate: Collection[str] = (),
    ) -> None: ...


class Coordinator:
    """See the module docstring. One per agent; lives in the event loop."""

    def __init__(
        self,
        name: str,
        config: Config,
        engine: Engine,
        *,
        wall: Callable[[], float] = time.time,
        fs: FileOps | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.engine = engine
        self.wall = wall
        self.bad_records = 0
        self.store = Store(
            config.node.data_dir / "store",
            snapshot_source=lambda: self.state.snapshot(),  # recovery's; then per commit
            budget=SnapshotBudget(max_log_bytes=max(config.store.max_bytes // 2, 1 << 20)),
            fs=fs,
        )
        self.state = self._recover()
        self.core = NodeCore(
            name,
            self.state,
            weight=config.node.weight,
            site=config.node.site,
            replicas=config.cluster.replicas,
            reap_after=config.cluster.reap_after,
            confirm_sites=config.cluster.confirm_sites,
            site_grace=config.cluster.site_grace,
            hlc_high_water=int(self.store.meta.get("hlc", 0) or 0),
            gossip=config.gossip,
        )
        self.commits = GroupCommit(
            self.store,
            config.store.commit_interval,
            publish=self._publish,
            copy_state=lambda: self.state.crdt.copy(),
        )
        self.commits.on_fault_change = self._fault_changed
        self.store.snapshot_source = None  # from here on each commit brings its own copy
        self.transport: Callable[[list[Output]], None] | None = None
        self.on_verdict: Callable[[VerdictChange], None] | None = None
        self.on_origins: Callable[[set[str]], None] | None = None  # changed ids, for events
        self.faults: dict[str, tuple[str, str]] = dict(self._recovery_faults)
        self.on_faults: Callable[[], None] | None = None  # the storage fault came or went
        # the state the node shows may have changed (a delta merged or made, owners,
        # verdicts, settling, the sites a "down" needs): the surfaces refresh on it
        self.on_change: Callable[[], None] | None = None

    # --- start-up ------------------------------------------------------------------------

    def _recover(self) -> State:
        """The State from the store, and the replica id its new dots are signed with.

        Anything unreadable is kept in the store's quarantine (never deleted), reported
        as the standing fault "store-recovery", and makes this node sign its new dots
        with a fresh replica id: a skipped record may have held our newest dots, which
        peers already hold, and reusing one would make a new write invisible to them
        (agent/store/replica_id.py; docs/store.md, "Recovery and the node's dots")."""
        rec = self.store.recovered
        lost = list(rec.problems)  # each already logged by the recovery (agent/store)
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
        state.dot_id = choose_replica_id(self.name, rec.meta, damaged=bool(lost), empty=empty)
        self.state = state  # the store's snapshot source, should this commit snapshot
        changed = self.store.set_meta({REPLICA_META_KEY: state.dot_id}) is not None
        if lost:  # a snapshot covers the damage: the next start does not meet it again
            self.store.snapshot(state.snapshot())
        elif changed:
            self.store.commit()  # the id is durable before the first dot signed with it
        self._recovery_faults: dict[str, tuple[str, str]] = {}
        if lost:
            n = len(lost)
            why = (
                f"store: damaged at start ({n} problem{'s' if n != 1 else ''}, "
                f"{len(rec.quarantined)} files kept in {self.store.dir}/quarantine); "
                f"writing as {state.dot_id}"
            )
            self._recovery_faults["store-recovery"] = ("degraded", why)
            log.error("%s (each problem is logged above)", why)
        if rec.state is not None or rec.deltas:
            log.info(
                "restored %d origins and %d records from %s",
                len(state.catalogue()),
                len(rec.deltas),
                self.store.dir,
            )
        return state

    def start(self, origins: Iterable[OriginSpec], now: float, *, alone: bool) -> None:
        """Declare the config's origins and place them (NodeCore.start)."""
        self.core.start(origins, now, self.wall(), alone=alone)
        self._drain()

    def settle(self, now: float) -> None:
        self.core.settle(now)
        self._drain()

    # --- inputs: each goes to the core, then its outputs are carried out -----------------

    def declare_config(self, origins: Iterable[OriginSpec], now: float) -> None:
        """Make this node's config declarations equal ``origins`` (start and SIGHUP)."""
        self.core.declare_config(origins, now, self.wall())
        self._drain()

    def put(self, spec: OriginSpec, now: float) -> bool:
        """Declare ``spec`` through the API; True if it is a new origin to the fleet."""
        try:
            return self.core.put(spec, now, self.wall())
        finally:
            self._drain()

    def apply_batch(
        self, specs: Sequence[OriginSpec], now: float, *, replace: bool, dry_run: bool
    ) -> CatalogueDiff:
        """Declare many origins through the API as one change (NodeCore.apply_batch)."""
        try:
            return self.core.apply_batch(specs, now, self.wall(), replace=replace, dry_run=dry_run)
        finally:
            self._drain()

    def api_spec(self, origin_id: str) -> OriginSpec | None:
        """The origin's newest API declaration's spec (None: not API-declared)."""
        return self.core.api_spec(origin_id)

    def delete(self, origin_id: str, now: float) -> bool:
        """Retract the origin's API declarations; Conflict if configs still declare it."""
        try:
            return self.core.delete(origin_id, now, self.wall())
        finally:
            self._drain()

    def on_event(
        self,
        ev: Event,
        now: float,
        members: Callable[[], list[GossipMember]],
        decoded: ReplicationMessage | ReplicationDecodeError | None = None,
    ) -> None:
        """Every membership event (the cluster's on_event chain); ``decoded``: a large
        replication message decoded off the loop (agent/shell/offloop_decode.py)."""
        self.core.on_event(ev, now, self.wall(), members, decoded)
        self._drain()

    def holds_all_of(self, payload: bytes) -> bool:
        """A replication message holds nothing new (Replicator.holds_all_of)."""
        return self.core.replicator.holds_all_of(payload)

    def on_transition(self, t: Transition) -> None:
        """The engine's status change for an origin this node checks: our observation."""
        self.core.on_transition(t, self.wall())
        self._drain()

    def tick(self, now: float, alive: set[str]) -> None:
        """Periodic work, at ``next_wakeup`` (or sooner, after ``on_work``): the core's
        deadlines, then a group commit if one is due (it runs on the writer thread)."""
        core = self.core
        before = (core.settled, core.verdicts.confirm)
        core.tick(now, self.wall(), alive)
        if (core.settled, core.verdicts.confirm) != before and self.on_change is not None:
            self.on_change()
        self._drain()
        self.commits.maybe_commit(now, self._meta())

    def next_wakeup(self, now: float) -> float:
        """When ``tick`` next has work: a commit falling due, or the core's next deadline
        (NodeCore.next_deadline); at most IDLE_TICK away, a safety net. Changes wake the
        loop at once (``on_work``), so an idle node sleeps until the next deadline."""
        at = [now + IDLE_TICK]
        for t in (self.commits.next_commit(), self.core.next_deadline()):
            if t is not None:
                at.append(t)
        return max(min(at), now)

    def commit(self, now: float) -> None:
        """Start a group commit now (it completes on the writer thread)."""
        self.commits.commit(now, self._meta())

    async def durable(self) -> bool:
        """Wait until every local change made so far is on disk (the next group commit,
        at most ``commit_interval``); False if the store is faulted (memory only)."""
        return await self.commits.durable()

    def close(self) -> None:
        """Clean shutdown: make everything durable (waits for the writer thread)."""
        self._drain()
        self.commits.close(self._meta())

    # --- outputs -------------------------------------------------------------------------

    def _drain(self) -> None:
        if self.core.rejudging and self.on_work is not None:
            self.on_work()  # a big move's verdicts: the next slice in the next loop pass
        out = self.core.drain()
        if (out.records or out.engine or out.verdicts or out.origins) and self.on_change:
            self.on_change()
        self.commits.add(out.records, out.local)
        if out.engine is not None:
            e = out.engine
            self.engine.update(e.upsert, e.remove, e.immediate)
        if self.on_verdict is not None:
            for change in out.verdicts:
                self.on_verdict(change)
        if out.origins and self.on_origins is not None:
            self.on_origins(out.origins)
        if out.sends and self.transport is not None:
            self.transport(out.sends)

    def _publish(self, delta: Delta) -> None:
        """A local delta is durable (or the store is faulted): spread it now."""
        self.core.publish(delta)
        self._drain()

    def _fault_changed(self, fault: str | None) -> None:
        before = self.faults.get("storage")
        if fault is None:
            self.faults.pop("storage", None)
        else:
            self.faults["storage"] = ("degraded", f"{fault}; running from memory")
        if self.faults.get("storage") != before and self.on_faults is not None:
            self.on_faults()  # the commit that found it ended off the tick: say so now

    def _meta(self) -> dict[str, Any]:
        return {"hlc": self.core.hlc.high_water}

    # --- views (the core's) --------------------------------------------------------------

    @property
    def on_work(self) -> Callable[[], None] | None:
        """Called when a commit can start (something to write, or one finished)."""
        return self.commits.on_work

    @on_work.setter
    def on_work(self, fn: Callable[[], None] | None) -> None:
        self.commits.on_work = fn

    @property
    def replicator(self) -> Replicator:
        return self.core.replicator

    @property
    def placement(self) -> Placement:
        return self.core.placement

    @property
    def handoff(self) -> Handoff:
        return self.core.handoff

    @property
    def transitions(self) -> deque[VerdictChange]:
        return self.core.transitions

    @property
    def hlc(self) -> HLC:
        return self.core.hlc

    @property
    def settled(self) -> bool:
        return self.core.settled

    def verdict(self, origin_id: str) -> str:
        return self.core.verdict(origin_id)

    def lb_status(self, origin_id: str) -> LbStatus | None:
        return self.core.lb_status(origin_id)

    def owners(self, origin_id: str) -> tuple[str, ...]:
        return self.core.owners(origin_id)

    def mine(self) -> set[str]:
        return self.core.mine()

    def checks(self, origin_id: str) -> bool:
        """Whether this node checks the origin (``in mine()``, without copying that set)."""
        return self.core.checks(origin_id)

    def counts(self) -> dict[str, int]:
        return self.core.counts()

    def pending_records(self) -> int:
        """Records not yet durable: in the store, or waiting on the loop for a commit."""
        return self.store.stats.pending_records + self.commits.buffered

    def mine_counts(self) -> dict[str, int]:
        return self.core.mine_counts()


def send_outputs(node: Any, outputs: list[Output]) -> None:
    """Hand the replicator's outputs to a MembershipNode."""
    if node is None or not node.running:
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
        counts = c.replicator.counters.as_dict()
        moved = CounterMetricFamily(
            "edge_agent_replication_bytes",
            "Replication payload bytes, by direction (in, out; a broadcast counted once).",
            labels=["direction"],
        )
        moved.add_metric(["in"], counts.pop("bytes_in"))
        moved.add_metric(["out"], counts.pop("bytes_out"))
        yield moved
        rep = CounterMetricFamily(
            "edge_agent_replication_events",
            "Replication events (messages, exchanges, drops), by kind: docs/replication.md.",
            labels=["kind"],
        )
        for kind, n in counts.items():
            rep.add_metric([kind], n)
        yield rep
        yield CounterMetricFamily(
            "edge_agent_peer_spec_unknown_keys",
            "Keys in origin specs from peers that this agent does not know (a newer "
            "agent's): ignored here, passed on unchanged.",
            value=UNKNOWN_SPEC_KEYS.count,
        )
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
                s.records_dropped + c.commits.records_dropped,
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
            "edge_agent_store_pending_records",
            "Records not yet durable.",
            value=c.pending_records(),
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
        flaps = c.core.flaps
        yield GaugeMetricFamily(
            "edge_agent_members_held",
            "Members kept out of placement for dying and coming back too often "
            "(docs/placement.md).",
            value=len(flaps.held_members()),
        )
        yield CounterMetricFamily(
            "edge_agent_member_holds", "Returns of a flapping member held.", value=flaps.holds
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
    "Engine",
    "VerdictChange",
    "send_outputs",
]
