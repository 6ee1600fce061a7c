"""The API's backend: the reads the HTTP handlers serve and the writes they make.

agent/shell/api/app.py speaks HTTP and JSON and knows only the ``Backend`` protocol; this is
the running node's implementation of it. Reads come from agent/shell/views.py; writes go to
the coordinator and answer only once the change is durable (the store's group commit),
so a 2xx promises the change survives a power cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from agent.domain import BatchError, ConfigError, parse_batch, parse_origin
from agent.membership import NodeState
from agent.node import LbAnswer, lb_answer_for
from agent.shell.api.app import TokenUnavailable
from agent.shell.coordinator import Conflict
from agent.shell.fleet_token import Agreement, agreement, fingerprint
from agent.shell.identify import IdentifyRequest, encode_identify

if TYPE_CHECKING:
    from agent.shell.api.events import EventHub
    from agent.shell.cluster import Cluster
    from agent.shell.config import ApiConfig
    from agent.shell.coordinator import Coordinator
    from agent.shell.metrics import Metrics
    from agent.shell.views import NodeViews

log = logging.getLogger(__name__)


class ApiBackend:
    """Implements agent.shell.api.app.Backend for a running node."""

    def __init__(
        self,
        views: NodeViews,
        *,
        api: ApiConfig,
        coordinator: Coordinator,
        cluster: Cluster,
        metrics: Metrics,
        events: EventHub,
        start_identify: Callable[[float, str], None],
        now: Callable[[], float],
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.views = views
        self.api = api
        self.coordinator = coordinator
        self.cluster = cluster
        self.metrics = metrics
        self.events = events
        self.start_identify = start_identify
        self.now = now
        self.changed = changed  # a fault came or went: refresh the surfaces
        # standing problems shown in /v1/health: {what: (level, reason)}
        self.faults: dict[str, tuple[str, str]] = {}

    # --- reads -----------------------------------------------------------------------

    def health_view(self) -> dict[str, Any]:
        view = self.views.health_view()
        # whether this node takes fleet-wide writes: a node without the fleet token is a
        # read-only node by design (agent/shell/api/app.py authorize), not a fault
        view["writes"] = "fleet token" if self.api.token_file is not None else "refused: no token"
        return view

    def origin_ids(self) -> Sequence[str]:
        return self.views.origin_ids()

    def origins_of(
        self, ids: Iterable[str], fields: Collection[str] | None
    ) -> Iterable[dict[str, Any]]:
        return self.views.iter_origins(ids, fields)

    def origin_view(self, origin_id: str) -> dict[str, Any] | None:
        return self.views.origin(origin_id)

    def lb_answer_for(self, origin_id: str) -> LbAnswer | None:
        status = self.coordinator.lb_status(origin_id)
        return None if status is None else lb_answer_for(status)

    def members_view(self) -> list[dict[str, Any]]:
        return self.views.members()

    def transitions_view(self) -> list[dict[str, Any]]:
        return self.views.transitions()

    def history_view(self, ids: Sequence[str]) -> dict[str, Any]:
        return self.views.history(ids)

    def api_token(self) -> str | None:
        """The bearer token writes need, read per request so a rotated file takes effect
        at once. An unreadable or empty file refuses every write with that reason
        (TokenUnavailable), and is a standing fault in /v1/health until it is fixed."""
        path = self.api.token_file
        if path is None:
            self.cluster.advertise_token(None)
            return None
        try:
            token = path.read_text().strip()
        except OSError as e:
            problem = f"the API token file {path} cannot be read ({e.strerror or e})"
        else:
            if token:
                self._fault("api-token", None)
                self.cluster.advertise_token(fingerprint(token))
                return token
            problem = f"the API token file {path} is empty"
        self.cluster.advertise_token(None)
        self._fault("api-token", f"{problem}; writes are refused until [api] token_file is fixed")
        raise TokenUnavailable(f"{problem}; fix [api] token_file on this node")

    def token_agreement(self) -> Agreement | None:
        """Our fleet token against the live peers' (None: we have no usable token)."""
        mine = self.cluster.token_fingerprint
        if mine is None:
            return None
        return agreement(mine, self.cluster.peer_token_fingerprints())

    def fleet_write_refusal(self) -> str | None:
        """Why this node must not take a fleet-wide write now, or None (fleet_token.py)."""
        agreed = self.token_agreement()
        if agreed is None or agreed.may_write:
            return None
        return agreed.reason()

    def check_token(self) -> None:
        """At start, then whenever the token file changes (runtime): re-read it so a
        rotated token is advertised without a restart, say now (not at the first write)
        that writes will fail, and show a token that differs between nodes as a fault."""
        with contextlib.suppress(TokenUnavailable):
            self.api_token()
        self.check_token_agreement()

    def check_token_agreement(self) -> None:
        """Show a token that differs between nodes as a fault (or clear it): at every
        member change, since a peer's token comes with its tags."""
        agreed = self.token_agreement()
        self._fault("fleet-token", agreed.reason() if agreed is not None else None)

    def _fault(self, what: str, reason: str | None) -> None:
        """Set or clear a standing fault; log it once when it starts or changes."""
        before = self.faults.get(what)
        if reason is None:
            self.faults.pop(what, None)
        else:
            self.faults[what] = ("degraded", reason)
        if self.faults.get(what) != before:
            if reason is not None:
                log.error("%s", reason)
            elif before is not None:
                log.info("%s: cleared", what)
            self.changed()

    # --- writes ----------------------------------------------------------------------

    async def put_origin(self, origin_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = dict(body)
        if data.setdefault("id", origin_id) != origin_id:
            return 400, {"error": f"id: {data['id']!r} does not match the URL's {origin_id!r}"}
        try:
            spec = parse_origin(data, where="body")
        except ConfigError as e:
            return 400, {"error": "; ".join(e.problems)}
        new = self.coordinator.put(spec, self.now())
        log.info("origin %s %s through the API", origin_id, "added" if new else "updated")
        durable = await self.coordinator.durable()  # the answer promises it survives a crash
        view = self.views.origin(origin_id) or {}
        return (201 if new else 200), {**view, "durable": durable}

    async def delete_origin(self, origin_id: str) -> tuple[int, dict[str, Any]]:
        try:
            found = self.coordinator.delete(origin_id, self.now())
        except Conflict as e:
            return 409, {"error": str(e)}
        if not found:
            return 404, {"error": f"no origin with id {origin_id!r}"}
        log.info("origin %s removed through the API", origin_id)
        durable = await self.coordinator.durable()
        return 200, {"id": origin_id, "removed": True, "durable": durable}

    async def apply_origins(
        self, items: Any, *, replace: bool, dry_run: bool
    ) -> tuple[int, dict[str, Any]]:
        """A batch (POST: upsert; PUT: the whole API-declared set), validated in full
        before anything is applied, then applied as one change and answered once it is
        durable. Validation runs off the loop: 10,000 specs take a good part of a second."""
        try:
            specs = await asyncio.to_thread(parse_batch, items)
        except BatchError as e:
            return 400, e.as_dict()
        diff = self.coordinator.apply_batch(specs, self.now(), replace=replace, dry_run=dry_run)
        answer: dict[str, Any] = {**diff.as_dict(), "dry_run": dry_run}
        if dry_run:
            return 200, answer
        if diff.ids:
            log.info(
                "origins %s through the API: %d added, %d changed, %d removed, %d unchanged",
                "applied" if replace else "upserted",
                len(diff.added),
                len(diff.changed),
                len(diff.removed),
                diff.unchanged,
            )
        answer["durable"] = await self.coordinator.durable()
        return 200, answer

    def catalogue_page(
        self, after: str | None, limit: int | None
    ) -> tuple[Iterable[dict[str, Any]], str | None]:
        """The API-declared set as PUT /v1/origins takes it, sorted by id, after
        ``after``: with ``limit``, a page of at most that many specs and the id to
        continue after (None: nothing is left); without, every one, built lazily as it
        is written. Walks the listing's sorted id index, so a page costs what it holds
        (and the origins it skips that only configs declare), not the whole catalogue."""
        ids = self.views.origin_ids()
        start = 0 if after is None else bisect_right(ids, after)
        if limit is None:
            rest = list(ids[start:])  # a copy: the listing holds still while it is written
            api_spec = self.coordinator.api_spec
            return (s.to_dict() for s in map(api_spec, rest) if s is not None), None
        page: list[dict[str, Any]] = []
        i = start
        while i < len(ids) and len(page) < limit:
            spec = self.coordinator.api_spec(ids[i])
            if spec is not None:
                page.append(spec.to_dict())
            i += 1
        return page, (ids[i - 1] if i < len(ids) and page else None)

    def identify(self, node: str | None, seconds: float) -> tuple[int, dict[str, Any]]:
        me = self.views.node_name
        target = node or me
        if target == me:
            self.start_identify(seconds, "the API")
            # what will blink: "none" or "mock" means nothing lights (the CLI says so)
            return 202, {"node": target, "seconds": seconds, "leds": self.views.led_kind()}
        member = next((m for m in self.cluster.members() if m.name == target), None)
        if member is None or member.state not in (NodeState.ALIVE, NodeState.SUSPECT):
            return 404, {"error": f"no live member named {target!r}"}
        if not self.cluster.send_reliable(
            member.address, encode_identify(IdentifyRequest(target, seconds, me))
        ):
            return 503, {"error": "gossip is not running on this node"}
        return 202, {"node": target, "seconds": seconds, "via": me}
