"""Verdicts a broken uplink cannot fake (issue 19), on routed sites (edge_harness.sites).

Three sites (a, b, c) of two nodes each, every site behind its own router, 20 origins in
a farm behind the core, and a webhook sink on a network of its own (so a site that lost
its route to the origins still reaches it).

- test_uplink_cut: site a loses its route to the origins, not to the fleet. Both site-a
  nodes call themselves an impaired vantage point (health, LED) within two check
  intervals; while the cut lasts no node says any origin is down and no origin webhook
  is sent; an origin that really dies meanwhile is still declared down everywhere; after
  the cut site a is healthy again and every live origin is up.
- test_full_partition: site a is cut off entirely (its router forwards nothing). Site a
  does not declare every origin down at once nor send an origin webhook; its nodes end up
  impaired vantage points answering unknown for every origin (docs/placement.md); sites b
  and c answer up throughout; after the heal every node sees every other alive.

Both print the timeline of what each node answered (every change, with its time).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from edge_harness.fleet import TRANSIENT, Host
from edge_harness.sites import SiteFleet, origin_tables, webhook_table
from tests.fleet.conftest import require_fleet

MakeSites = Callable[..., SiteFleet]

ORIGINS = 20
INTERVAL = 2.0  # the origins' check interval (s), jittered by ±10 %
TIMEOUT = 1.0  # a check to an origin behind a dropped route fails after this
FALL = 2
RISE = 2
JITTER = 1.1
GOSSIP_SLACK = (
    5.0  # a result is gossiped once committed ([store] commit_interval 1 s), then spreads
)
# impaired: every origin's next check has failed (one interval, the timeout), and a second
# interval of evidence, plus a margin
IMPAIRED_WITHIN = 2 * INTERVAL * JITTER + TIMEOUT + 1.0
# a dead origin: FALL failed checks at its owners, then gossip
DOWN_WITHIN = FALL * INTERVAL * JITTER + GOSSIP_SLACK
# after the cut: RISE good checks (and one to notice), then gossip
RECOVER_WITHIN = (RISE + 1) * INTERVAL * JITTER + TIMEOUT + GOSSIP_SLACK
# how long a cut is held: long enough for site a's own checks to have taken every origin down
CUT_HOLD = FALL * INTERVAL * JITTER + TIMEOUT + GOSSIP_SLACK
SPLIT_WITHIN = 60.0  # memberlist: probes, then suspicion (up to 6 x 4 s with few confirmations)
HEAL_WITHIN = 30.0  # the goal is 5 s (bench/heal.py); this leaves room for a loaded CI
DRAIN_WITHIN = 70.0  # a webhook retried with backoff 1, 2 ... 32 s is sent or given up by then
SETTLE_WITHIN = 60.0
HEALTHY_LEDS = ("healthy", "some-down")


@dataclass
class Answer:
    """What one node answered: its verdicts, LED, vantage (None: the agent has none) and
    the states of the members it knows."""

    verdicts: dict[str, str]
    led: str
    vantage: Any
    reasons: list[str]
    members: dict[str, str]

    @property
    def impaired(self) -> bool:
        return (
            isinstance(self.vantage, dict)
            and self.vantage.get("impaired") is True
            and self.led == "impaired"
            and any(r.startswith("vantage: ") for r in self.reasons)
        )

    @property
    def clear(self) -> bool:
        """Not impaired by any sign, and the LED back to what origins alone show."""
        return (
            isinstance(self.vantage, dict)
            and self.vantage.get("impaired") is False
            and self.led in HEALTHY_LEDS
            and not any(r.startswith("vantage: ") for r in self.reasons)
        )

    def line(self) -> str:
        c = Counter(self.verdicts.values())
        v = self.vantage
        if isinstance(v, dict):
            vantage = ("IMPAIRED " if v.get("impaired") else "ok ") + repr(v.get("reason", ""))
        else:
            vantage = "(none)"
        alive = ",".join(sorted(n for n, s in self.members.items() if s == "alive"))
        verdicts = " ".join(f"{k}={c[k]}" for k in ("up", "down", "disputed", "unknown") if c[k])
        return f"led={self.led} vantage={vantage} verdicts[{verdicts}] alive[{alive}]"


def ask(h: Host) -> Answer:
    health = h.health()
    return Answer(
        verdicts={oid: str(o["verdict"]) for oid, o in h.origins().items()},
        led=str(health.get("led", {}).get("state")),
        vantage=health.get("vantage"),
        reasons=[str(r) for r in health.get("reasons", [])],
        members={n: s for n, (s, _) in h.members().items()},
    )


Snapshot = dict[str, Answer]


class Watch:
    """Polls every node, keeps what each answered last and a timeline of every change."""

    def __init__(self, hosts: Iterable[Host]) -> None:
        self.hosts = list(hosts)
        self.t0 = time.monotonic()
        self.last: Snapshot = {}
        self.lines: dict[str, str] = {}
        self.timeline: list[str] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, what: str) -> float:
        self.timeline.append(f"{self.now():7.1f}s  --- {what}")
        return time.monotonic()

    def poll(self) -> Snapshot:
        snap: Snapshot = {}
        for h in self.hosts:
            try:
                a = ask(h)
            except TRANSIENT as e:  # a node that cannot answer is part of the picture
                line = f"(no answer: {type(e).__name__}: {e})"
            else:
                snap[h.name] = self.last[h.name] = a
                line = a.line()
            if self.lines.get(h.name) != line:
                self.lines[h.name] = line
                self.timeline.append(f"{self.now():7.1f}s  {h.name}: {line}")
        return snap

    def until(
        self,
        cond: Callable[[Snapshot], bool],
        timeout: float,
        what: str,
        invariant: Callable[[Snapshot], None] | None = None,
    ) -> float:
        """Seconds until cond holds for a full snapshot, checking invariant on each."""
        start = time.monotonic()
        while True:
            snap = self.poll()
            if invariant is not None:
                invariant(snap)
            try:
                done = len(snap) == len(self.hosts) and cond(snap)
            except TRANSIENT:  # a view lacking what cond looks up (see TRANSIENT)
                done = False
            if done:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{what}: not within {timeout:.1f}s (timeline printed below)")
            time.sleep(0.1)

    def hold(self, seconds: float, invariant: Callable[[Snapshot], None]) -> None:
        """Check the invariant on every poll for a fixed time (a scenario's duration)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            invariant(self.poll())
            time.sleep(0.1)

    def text(self) -> str:
        return "timeline (what each node answered, at each change):\n" + "\n".join(self.timeline)


def downs(snap: Snapshot, names: Iterable[str] | None = None, skip: str = "") -> set[str]:
    """'node:origin' for every down verdict among `names` (default: all), but `skip`."""
    want = set(snap) if names is None else set(names)
    return {
        f"{n}:{oid}"
        for n, a in snap.items()
        if n in want
        for oid, v in a.verdicts.items()
        if v == "down" and oid != skip
    }


def origin_hooks(f: SiteFleet) -> list[dict[str, Any]]:
    return [h["body"] for h in f.hooks() if isinstance(h["body"], dict) and "origin" in h["body"]]


def site_alerts(f: SiteFleet) -> list[dict[str, Any]]:
    return [
        h["body"]
        for h in f.hooks()
        if isinstance(h["body"], dict) and "origin" not in h["body"] and "site" in h["body"]
    ]


def metric(h: Host, name: str) -> float:
    status, text = h.get("/metrics")
    if status != 200:
        raise LookupError(f"{h.name}: /metrics answered {status}")
    for line in str(text).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise LookupError(f"{h.name}: no {name} in /metrics")


def up_fleet(make: MakeSites) -> tuple[SiteFleet, list[Host], Watch, set[str]]:
    """3 sites x 2 nodes, 20 origins and the sink, all started; every node sees all six
    alive and every origin up."""
    require_fleet(nft=True)
    f = make()
    hosts = f.add_sites(2)
    farm = f.start_farm(count=ORIGINS)
    sink = f.start_sink()
    f.origins_toml = origin_tables(
        farm, range(ORIGINS), interval=INTERVAL, timeout=TIMEOUT, fall=FALL, rise=RISE
    ) + webhook_table(sink)
    f.start()
    names = {h.name for h in hosts}
    ids = {f"o{i}" for i in range(ORIGINS)}
    w = Watch(hosts)

    def settled(s: Snapshot) -> bool:
        return all(
            names <= {m for m, st in a.members.items() if st == "alive"}
            and set(a.verdicts) == ids
            and set(a.verdicts.values()) == {"up"}
            for a in s.values()
        )

    took = w.until(settled, SETTLE_WITHIN, "every node sees all six alive and every origin up")
    w.mark(f"settled after {took:.1f}s")
    assert origin_hooks(f) == [], "a start (unknown -> up) is not a transition to send"
    return f, hosts, w, ids


def test_uplink_cut_is_an_impaired_vantage_not_an_outage(site_fleet: MakeSites) -> None:
    f, hosts, w, ids = up_fleet(site_fleet)
    names = {h.name for h in hosts}
    site_a = {h.name for h in f.inside("a")}
    try:
        cut = w.mark('cut_origins("a")')
        f.cut_origins("a")
        first_impaired: dict[str, float] = {}

        def no_down_no_hook(s: Snapshot) -> None:
            for n in site_a:
                if n in s and s[n].impaired:
                    first_impaired.setdefault(n, time.monotonic() - cut)
            assert not downs(s), f"down during the cut: {sorted(downs(s))}"
            sent = origin_hooks(f)
            assert not sent, f"origin webhooks during the cut: {sent}"

        took = w.until(
            lambda s: all(s[n].impaired for n in site_a),
            IMPAIRED_WITHIN,
            f"site a's nodes ({', '.join(sorted(site_a))}) to show an impaired vantage",
            no_down_no_hook,
        )
        print(
            f"impaired after {took:.1f}s (allowed {IMPAIRED_WITHIN:.1f}s = 2 x {INTERVAL:g}s"
            f" interval x {JITTER} jitter + {TIMEOUT:g}s timeout + 1s): "
            + ", ".join(f"{n} {t:.1f}s" for n, t in sorted(first_impaired.items()))
        )
        w.hold(CUT_HOLD, no_down_no_hook)  # long enough for site a's checks to fall
        alerts = site_alerts(f)
        print(f"site alerts during the cut: {alerts}")
        assert all(a.get("event") == "site-impaired" and a.get("site") == "a" for a in alerts)
        assert len(alerts) <= 1, f"one site-impaired alert at most: {alerts}"

        # an origin that really dies during the cut is still declared down: pick one that
        # a site-a node owns (its other owner's word must be enough while site a is impaired)
        b1 = f.inside("b")[0]
        owners = {oid: o["owners"] for oid, o in b1.origins().items()}
        victim = next(
            oid
            for oid in sorted(owners, key=lambda o: int(o[1:]))
            if set(owners[oid]) & site_a and set(owners[oid]) - site_a
        )
        print(f"killing {victim}, owned by {owners[victim]}")
        w.mark(f"farm: {victim} down (owners {owners[victim]})")
        f.farm_set(victim[1:], "down")

        def only_victim_down(s: Snapshot) -> None:
            others = downs(s, skip=victim)
            assert not others, f"down during the cut: {sorted(others)}"
            sent = {h["origin"] for h in origin_hooks(f)}
            assert sent <= {victim}, f"origin webhooks during the cut: {sent}"

        took = w.until(
            lambda s: all(a.verdicts.get(victim) == "down" for a in s.values()),
            DOWN_WITHIN,
            f"every node to declare {victim} down",
            only_victim_down,
        )
        print(
            f"{victim} down everywhere after {took:.1f}s (allowed {DOWN_WITHIN:.1f}s ="
            f" {INTERVAL:g}s x {JITTER} x fall {FALL} + {GOSSIP_SLACK:g}s gossip)"
        )
        w.mark(f"{victim} down everywhere")

        w.mark('restore("a")')
        f.restore("a")
        live = ids - {victim}

        def recovered(s: Snapshot) -> bool:
            return all(s[n].clear for n in site_a) and all(
                all(a.verdicts[o] == "up" for o in live) and a.verdicts[victim] == "down"
                for a in s.values()
            )

        took = w.until(recovered, RECOVER_WITHIN, "site a recovered and every live origin up")
        print(f"recovered after {took:.1f}s (allowed {RECOVER_WITHIN:.1f}s)")
        for n in sorted(names):
            print(f"  {n}: {w.last[n].line()}")
        sent = origin_hooks(f)
        assert {h["origin"] for h in sent} <= {victim}, sent
        print(f"origin webhooks: {[(h['origin'], h.get('to'), h.get('node')) for h in sent]}")
        print(f"site alerts: {site_alerts(f)}")
    finally:
        print(w.text())


def test_full_partition_site_a_cannot_fake_an_outage(site_fleet: MakeSites) -> None:
    f, hosts, w, _ = up_fleet(site_fleet)
    names = {h.name for h in hosts}
    inside = {h.name for h in f.inside("a")}
    outside = names - inside

    def gone(a: Answer, who: set[str]) -> bool:
        return all(a.members.get(m) not in ("alive", "suspect") for m in who)

    def split(s: Snapshot) -> bool:
        return all(gone(s[n], outside) for n in inside) and all(gone(s[n], inside) for n in outside)

    def sides_hold(s: Snapshot) -> None:
        out = downs(s, outside)
        assert not out, f"sites b/c reached the origins but said down: {sorted(out)}"
        for n in inside & set(s):
            v = s[n].verdicts
            assert set(v.values()) != {"down"}, f"{n} declared every origin down"

    try:
        w.mark('isolate("a")')
        f.isolate("a")
        took = w.until(split, SPLIT_WITHIN, "both sides to see the other dead", sides_hold)
        print(f"both sides saw the other dead after {took:.1f}s")
        w.mark("split seen on both sides")
        w.hold(CUT_HOLD, sides_hold)  # long enough for site a's checks to fall
        took = w.until(
            lambda s: all(set(s[n].verdicts.values()) == {"up"} for n in outside),
            RECOVER_WITHIN,
            "sites b and c to answer up for every origin",
            sides_hold,
        )
        # the documented answer on site a's side (docs/placement.md): both nodes impaired
        # vantage points, every origin unknown (their reports do not count)
        took = w.until(
            lambda s: all(
                s[n].impaired and set(s[n].verdicts.values()) == {"unknown"} for n in inside
            ),
            IMPAIRED_WITHIN,
            "site a's nodes to call themselves impaired and answer unknown",
            sides_hold,
        )
        print("during the partition:")
        for n in sorted(names):
            a = w.last[n]
            print(f"  {n} (site {n[0]}): {a.line()}")
            print(f"      reasons={a.reasons}")
        w.mark("heal: restore(a)")
        f.restore("a")
        took = w.until(
            lambda s: all(
                names <= {m for m, st in a.members.items() if st == "alive"} for a in s.values()
            ),
            HEAL_WITHIN,
            "every node to see every other alive after the heal",
        )
        print(f"healed: every node sees every other alive {took:.1f}s after restore")

        # what site a queued while cut off is retried once the sink is reachable: wait
        # until its nodes have nothing pending before reading what the sink got
        a_hosts = f.inside("a")
        waited = w.until(
            lambda s: all(metric(h, "edge_agent_webhook_pending") == 0 for h in a_hosts),
            DRAIN_WITHIN,
            "site a's webhook queues to drain",
        )
        sent = origin_hooks(f)
        got = [(h["origin"], h.get("to"), h.get("node")) for h in sent]
        print(f"webhook queues drained after {waited:.1f}s; origin webhooks: {got}")
        print(f"site alerts: {site_alerts(f)}")
        from_a = [h for h in sent if h.get("node") in inside]
        assert not from_a, f"origin webhooks from site a: {from_a}"
    finally:
        print(w.text())
