"""What the node knows about itself and the fleet, as the API, the dashboard, the LEDs
and systemd's STATUS line show it.

Read-only: every view is computed from the parts' own state on demand (cheap at
10,000 origins: the counts are kept incrementally by the coordinator), so no copy can
go stale. The places that *push* these views (LEDs, STATUS, SSE) are in
agent/shell/surfaces.py; the API's writes are in agent/shell/api/backend.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.checks import LatencyHistory
from agent.domain import Health
from agent.shell.leds import Condition, LedState, led_state_for, meaning
from agent.shell.origin_index import SortedIds

if TYPE_CHECKING:
    from agent.checks import CheckEngine
    from agent.shell.cluster import Cluster
    from agent.shell.config import Config
    from agent.shell.coordinator import Coordinator


#: the keys of an origin's view, in the order it has them (``?fields=`` picks among them)
ORIGIN_FIELDS = ("id", "spec", "verdict", "owners", "mine", "declared_by", "observations")


@dataclass
class Identify:
    """An identify request blinks this node's LEDs until ``until`` (monotonic seconds)."""

    until: float = 0.0

    def active(self, now: float) -> bool:
        return self.until > now

    def left(self, now: float) -> float:
        return round(self.until - now, 1) if self.until > now else 0.0


class NodeViews:
    """Read-only views over the running node's parts. ``now`` is the loop's clock and
    ``wall`` the unix clock: the engine's times are monotonic, the API speaks unix."""

    def __init__(
        self,
        *,
        config: Config,
        node_name: str,
        coordinator: Coordinator,
        engine: CheckEngine,
        cluster: Cluster,
        health: Health,
        identify: Identify,
        led_pins: Callable[[], dict[str, Any]],
        now: Callable[[], float],
        wall: Callable[[], float] = time.time,
        led_kind: Callable[[], str] = lambda: "none",
        history: LatencyHistory | None = None,
    ) -> None:
        """``led_kind``: what blinks here, Leds.kind ("gpio", "mock" or "none");
        ``history``: the latency of this node's checks, fed by the runtime."""
        self.config = config
        self.node_name = node_name
        self.coordinator = coordinator
        self.engine = engine
        self.cluster = cluster
        self.health = health
        self.identify = identify
        self.led_pins = led_pins
        self.led_kind = led_kind
        self.now = now
        self.wall = wall
        self.started_at = wall()
        self.latency_history = LatencyHistory() if history is None else history
        self.index = SortedIds(lambda: coordinator.placement.origins)

    def _wall(self, loop_time: float | None) -> float | None:
        if loop_time is None:
            return None
        return round(self.wall() - (self.now() - loop_time), 3)

    # --- origins ---------------------------------------------------------------------

    def origin(
        self, origin_id: str, fields: Collection[str] | None = None
    ) -> dict[str, Any] | None:
        """One origin's view (None if the fleet has no such origin); ``fields``: build
        only these keys (ORIGIN_FIELDS; None: all), so a compact listing skips the
        observations, declarations and spec it does not show."""
        co = self.coordinator
        if origin_id not in co.placement.origins:
            return None
        want = ORIGIN_FIELDS if fields is None else fields
        out: dict[str, Any] = {"id": origin_id}
        decls = co.state.declarations(origin_id) if "spec" in want or "declared_by" in want else []
        if "spec" in want:
            if not decls:
                return None
            out["spec"] = decls[-1][2].spec.to_dict()  # the newest wins (State.spec)
        if "verdict" in want:
            out["verdict"] = co.verdict(origin_id)
        if "owners" in want:
            out["owners"] = list(co.owners(origin_id))
        mine = co.checks(origin_id)
        if "mine" in want:
            out["mine"] = mine
        if "declared_by" in want:
            out["declared_by"] = [{"node": n, "source": src} for n, src, _ in decls]
        if "observations" in want:
            out["observations"] = self._observations(origin_id, mine)
        return out

    def _observations(self, origin_id: str, mine: bool) -> list[dict[str, Any]]:
        co = self.coordinator
        view = self.engine.view(origin_id) if mine else None
        observations = []
        for observer, obs in sorted(co.state.observations(origin_id).items()):
            entry: dict[str, Any] = {
                "observer": observer,
                "status": obs.status,
                "since": round(obs.since.wall_ms / 1000, 3),
                "latency_band": obs.latency_band,
                "latency_ms": None,
                "reason": obs.reason,
            }
            if observer == self.node_name and view is not None and view.last is not None:
                entry["latency_ms"] = round(view.last.latency * 1000, 1)
                entry["checked_at"] = self._wall(view.last.at)
                entry["tls_expiry_days"] = view.tls_expiry_days
            observations.append(entry)
        return observations

    def origin_ids(self) -> list[str]:
        """Every origin's id, sorted (kept, not sorted per call: origin_index.py)."""
        return self.index.ids()

    def origins_changed(self, ids: Iterable[str]) -> None:
        """Origins that may have joined or left the catalogue (Coordinator.on_origins)."""
        self.index.changed(ids)

    def iter_origins(
        self, ids: Iterable[str], fields: Collection[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The views of ``ids``, built one at a time as they are consumed (an origin
        removed meanwhile is skipped)."""
        for origin_id in ids:
            d = self.origin(origin_id, fields)
            if d is not None:
                yield d

    def origins(self) -> list[dict[str, Any]]:
        return list(self.iter_origins(self.origin_ids()))

    def history(self, ids: Iterable[str]) -> dict[str, Any]:
        """The last hour of latency of those of ``ids`` this node checks (``origins``:
        id -> {ms, failed}, see agent/checks/history.py), and for the others in the
        catalogue the nodes that check them (``elsewhere``: the fleet replicates a
        latency band, not a series, so their history is on their owners). An origin
        handed off keeps its points here until they age out, unshown: were it shown,
        this node's stale line would read as the origin's. ``end`` is the unix time the
        last point's bucket ends; the points are ``step`` s apart."""
        h, now, co = self.latency_history, self.now(), self.coordinator
        series: dict[str, Any] = {}
        elsewhere: dict[str, list[str]] = {}
        for origin_id in ids:
            if origin_id not in co.placement.origins:
                continue
            if not co.checks(origin_id):
                elsewhere[origin_id] = list(co.owners(origin_id))
            elif (s := h.series(origin_id, now)) is not None:
                series[origin_id] = s.as_dict()
        return {
            "node": self.node_name,
            "step": h.step,
            "points": h.points,
            "end": self._wall(h.window_end(now)),
            "origins": series,
            "elsewhere": elsewhere,
        }

    def counts(self) -> dict[str, int]:
        """Every origin in the fleet catalogue, by verdict (kept incrementally)."""
        return self.coordinator.counts()

    def mine_counts(self) -> dict[str, int]:
        """The origins this node owns, by verdict: a pass over them (10 ms at 100,000),
        so a caller that needs it for several views passes it on instead of asking again."""
        return self.coordinator.mine_counts()

    def summary(
        self, counts: dict[str, int] | None = None, mine_counts: dict[str, int] | None = None
    ) -> str:
        c = self.counts() if counts is None else counts
        total = sum(c.values())
        parts = [f"{c['up']} up", f"{c['down']} down"]
        for extra in ("disputed", "unknown"):
            if c[extra]:
                parts.append(f"{c[extra]} {extra}")
        word = "origin" if total == 1 else "origins"
        mine = (self.mine_counts() if mine_counts is None else mine_counts)["owned"]
        return f"{total} {word}: " + ", ".join(parts) + f"; checking {mine}"

    def transitions(self) -> list[dict[str, Any]]:
        return [t.as_dict() for t in self.coordinator.transitions]

    # --- the node ----------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        return self.cluster.members_view()

    def storage(self) -> dict[str, Any]:
        store = self.coordinator.store
        s = store.stats
        return {
            "status": "ok" if store.fault is None else "fault",
            "reason": store.fault,
            "bytes_written": s.bytes_written,
            "fsyncs": s.fsyncs,
            "snapshots": s.snapshots,
            "pending_records": self.coordinator.pending_records(),
        }

    def led_condition(self, mine_counts: dict[str, int] | None = None) -> Condition:
        """What the LEDs report, from the node's real state (docs/leds.md)."""
        mine = self.mine_counts() if mine_counts is None else mine_counts
        health = self.health
        # storage has its own pattern; a broken LED cannot show its own fault, and the
        # working ones should go on showing the node's state, so neither reads as suspected
        # an impaired vantage has a state of its own (docs/leds.md)
        others_degraded = [w for w in health.degraded if w not in ("storage", "leds", "vantage")]
        return Condition(
            starting=not health.ready,
            fault="; ".join(f"{k}: {v}" for k, v in health.failing.items()) or None,
            storage_fault=self.coordinator.store.fault,
            suspected=self.cluster.health_score() > 0 or bool(others_degraded),
            alone=self.cluster.peers() == 0 and self.cluster.may_find_peers(),
            impaired="vantage" in health.degraded,
            owned=mine["owned"],
            down=mine["down"],
            disputed=mine["disputed"],
            identify=self.identify.active(self.now()),
        )

    def vantage(self) -> dict[str, Any]:
        """This node as a vantage point (docs/placement.md, "Impaired vantage points")."""
        core = self.coordinator.core
        impaired, t = core.vantage()
        return {
            "impaired": impaired,
            "reason": core.vantage_reason(),
            "site": core.site_name(core.name),
            "observed": t.observed,
            "down": t.down,
            "contradicted": t.contradicted,
            "impaired_sites": core.impaired_sites(),
            "confirm_sites": core.verdicts.confirm,
        }

    def alone_by_design(self) -> bool:
        """No live peer and no way to find one: a cluster of one, not a node searching."""
        return self.cluster.peers() == 0 and not self.cluster.may_find_peers()

    def led_state(self, mine_counts: dict[str, int] | None = None) -> LedState:
        return led_state_for(self.led_condition(mine_counts))

    def health_view(self) -> dict[str, Any]:
        counts, mine = self.counts(), self.mine_counts()
        state = self.led_state(mine)
        return {
            "cluster": {"name": self.config.cluster.name, "peers": self.cluster.peers()},
            "status": str(self.health.status),
            "node": self.node_name,
            "version": __version__,
            "reasons": self.health.reasons(),
            "summary": self.summary(counts, mine),
            "origins": counts,
            "mine": mine,
            "led": {
                "state": str(state),
                "meaning": meaning(state, alone_by_design=self.alone_by_design()),
                "pins": self.led_pins(),
                "kind": self.led_kind(),
            },
            "storage": self.storage(),
            "vantage": self.vantage(),
            "identify_s": self.identify.left(self.now()),
            "uptime_s": round(self.wall() - self.started_at, 1),
        }
