"""Placement (issue 6): the hash spec is frozen, owners are balanced, weighted and stable,
and the incremental path always equals a full recomputation."""

from __future__ import annotations

import math
import random
import sys
from collections import Counter
from collections.abc import Iterable

import mmh3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.node.placement import (
    ROLE,
    SEED,
    Member,
    OwnerChange,
    Placement,
    claims_role,
    compute_owners,
    member_from_tags,
    parse_weight,
    score,
    unit_hash,
    unit_interval,
)

MAXW = sys.float_info.max  # scores overflow to +inf for h > 1/e: real ties, broken by name


def naive_owners(members: Iterable[Member], k: int, origin: str) -> tuple[str, ...]:
    """The spec, written out independently of agent.node.placement."""
    scored = []
    for m in members:
        if not m.eligible:
            continue
        key = m.name.encode("utf-8") + b"\x00" + origin.encode("utf-8")
        x = mmh3.hash128(key, seed=0x65646765, x64arch=True, signed=False)
        h = ((x >> 75) | 1) / 2**53
        scored.append((-(m.weight / math.log(h)), m.name, m.site))
    scored.sort(key=lambda e: (-e[0], e[1]))
    # failure domains: the best of each site (a member without one is a site of its own)
    # in rank order until k, then the best of the others; listed in rank order
    ranked = [(name, site if site is not None else ("alone", name)) for _, name, site in scored]
    sites: set[object] = set()
    picked: list[str] = []
    for name, site in ranked:
        if len(picked) < k and site not in sites:
            sites.add(site)
            picked.append(name)
    for name, _ in ranked:
        if len(picked) < k and name not in picked:
            picked.append(name)
    return tuple(name for name, _ in ranked if name in picked)


def slots(assign: dict[str, tuple[str, ...]]) -> Counter[str]:
    return Counter(n for owners in assign.values() for n in owners)


# --- identical owners on every node: the frozen spec ------------------------------------


def test_hash_spec_pinned() -> None:
    assert SEED == 0x65646765
    raw = {
        b"pi-1\x00origin-1": 0xB2CE4B4082CB946249EBB2861214791D,
        b"\x00": 0x88A316510069520B007D9AF066C7BFB0,
        "πnode\x00ünïcode/origin".encode(): 0x98C60FAF98BD8758DC84D1B0A28671B5,
    }
    for key, x in raw.items():
        assert mmh3.hash128(key, seed=SEED, x64arch=True, signed=False) == x
    pinned = [  # (node, origin, h, score at weight 1, score at weight 2.5), as float.hex
        ("pi-1", "origin-1",
         "0x1.659c968105973p-1", "0x1.64ab10540e69fp+1", "0x1.bdd5d46912046p+2"),
        ("pi-2", "origin-1",
         "0x1.8b64bee57e9bdp-1", "0x1.ef4604a96ae1fp+1", "0x1.358bc2e9e2cd3p+3"),
        ("", "",
         "0x1.11462ca200d2bp-1", "0x1.97bdbf2bfa603p+0", "0x1.fdad2ef6f8f84p+1"),
        ("πnode", "ünïcode/origin",
         "0x1.318c1f5f317b1p-1", "0x1.efe9a902e8f4dp+0", "0x1.35f209a1d1990p+2"),
        ("node-a", "https://example.com/health",
         "0x1.dc0e3057d3ef3p-1", "0x1.b79e68aa6ed61p+3", "0x1.12c3016a8545cp+5"),
    ]  # fmt: skip
    for node, origin, h, s1, s25 in pinned:
        assert unit_hash(node, origin) == float.fromhex(h)
        assert score(node, 1.0, origin) == float.fromhex(s1)
        assert score(node, 2.5, origin) == float.fromhex(s25)


def test_unit_interval_is_open_and_exact() -> None:
    lo, hi = unit_interval(0), unit_interval(2**128 - 1)
    assert lo == 2**-53 and lo > 0
    assert hi == 1 - 2**-53 and hi < 1
    assert math.log(hi) < 0  # a finite, nonzero ln at both ends: no division by zero
    assert unit_interval(1 << 75) == 2**-53  # u = top 53 bits = 1; u | 1 = 1
    assert unit_interval(2 << 75) == 3 * 2**-53  # u = 2; u | 1 = 3
    assert unit_interval((1 << 75) - 1) == 2**-53  # the low 75 bits are ignored


FIXED = [  # (members with weights, k, {origin: owners}), computed once and frozen
    (
        [("a", 1.0), ("b", 1.0), ("c", 1.0)],
        1,
        {"": ("b",), "o1": ("a",), "o2": ("c",), "https://example.com/health": ("c",)},
    ),
    (
        [("pi-kitchen", 1.0), ("pi-garage", 2.5), ("pi-attic", 0.5), ("πnode", 1.0),
         ("edge-with-a-rather-long-hostname-07", 3.0)],
        2,
        {
            "origin-0": ("pi-garage", "edge-with-a-rather-long-hostname-07"),
            "origin-1": ("πnode", "pi-garage"),
            "origin-2": ("edge-with-a-rather-long-hostname-07", "pi-garage"),
            "origin-3": ("edge-with-a-rather-long-hostname-07", "pi-garage"),
            "ünïcode-origin": ("pi-attic", "pi-garage"),
            "tcp://10.0.0.1:22": ("pi-garage", "edge-with-a-rather-long-hostname-07"),
            "http://[::1]:8080/x?y=z": ("pi-kitchen", "edge-with-a-rather-long-hostname-07"),
        },
    ),
    (
        [(f"node-{i:02d}", 1.0 + (i % 4) * 0.5) for i in range(12)],
        3,
        {
            "o-0": ("node-05", "node-09", "node-11"),
            "o-1": ("node-06", "node-07", "node-04"),
            "o-2": ("node-05", "node-11", "node-01"),
            "o-3": ("node-06", "node-09", "node-03"),
            "o-4": ("node-11", "node-03", "node-10"),
            "o-5": ("node-06", "node-11", "node-07"),
            "o-6": ("node-08", "node-11", "node-03"),
            "o-7": ("node-10", "node-01", "node-03"),
        },
    ),
    ([("x", 1.0), ("y", 7.0)], 3, {"only-two": ("x", "y"), "still-two": ("y", "x")}),
]  # fmt: skip


@pytest.mark.parametrize(("members", "k", "expected"), FIXED)
def test_fixed_vectors(
    members: list[tuple[str, float]], k: int, expected: dict[str, tuple[str, ...]]
) -> None:
    ms = [Member(n, w) for n, w in members]
    assert compute_owners(ms, k, expected) == expected
    assert Placement(ms, k, expected).assignment() == expected
    assert {o: naive_owners(ms, k, o) for o in expected} == expected


@pytest.mark.parametrize("seed", range(5))
def test_order_independence(seed: int) -> None:
    rng = random.Random(seed)
    ms = [Member(f"n{i}", rng.choice([0.5, 1.0, 2.0, 3.0])) for i in range(15)]
    origins = [f"origin-{i}" for i in range(300)]
    expected = compute_owners(ms, 2, origins)
    shuffled = ms[:]
    rng.shuffle(shuffled)
    rng.shuffle(origins)
    assert Placement(shuffled, 2, origins).assignment() == expected
    grown = Placement(k=2, origins=origins)  # members join one by one, in another order
    rng.shuffle(shuffled)
    for m in shuffled:
        grown.add_member(m)
    assert grown.assignment() == expected
    assert {o: naive_owners(ms, 2, o) for o in origins[:50]} == {
        o: expected[o] for o in origins[:50]
    }


# --- the acceptance figures -------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2])
def test_balance_10000_origins_20_equal_nodes(k: int) -> None:
    ms = [Member(f"node-{i:02d}") for i in range(20)]
    load = slots(Placement(ms, k, (f"origin-{i:05d}" for i in range(10_000))).assignment())
    mean = 10_000 * k / 20
    assert sum(load.values()) == 10_000 * k and len(load) == 20
    assert max(load.values()) / mean <= 1.10  # measured: k=1 1.062, k=2 1.044


def test_weights_honoured_100000_origins_k1() -> None:
    weights = [1, 1, 2, 3, 0.5, 1.5, 4, 1, 2.5, 0.25]
    ms = [Member(f"w{i}", w) for i, w in enumerate(weights)]
    load = slots(compute_owners(ms, 1, (f"origin-{i:06d}" for i in range(100_000))))
    total = sum(weights)
    errors = [abs(load[m.name] / 100_000 - m.weight / total) for m in ms]
    assert max(errors) <= 0.02  # measured: 0.0016


def _moved_slots(changes: list[OwnerChange]) -> tuple[int, set[str], set[str]]:
    """(slots that changed hands, nodes that gained, nodes that lost)."""
    gained: set[str] = set()
    lost: set[str] = set()
    moved = 0
    for ch in changes:
        plus, minus = set(ch.new) - set(ch.old), set(ch.old) - set(ch.new)
        moved += len(plus)
        gained |= plus
        lost |= minus
    return moved, gained, lost


MOVE_ORIGINS = [f"origin-{i:06d}" for i in range(100_000)]


@pytest.mark.parametrize("k", [1, 2])
def test_minimal_movement_join(k: int) -> None:
    n = 20
    p = Placement([Member(f"node-{i:02d}") for i in range(n)], k, MOVE_ORIGINS)
    moved, gained, _ = _moved_slots(p.add_member(Member("newcomer")))
    ideal = len(MOVE_ORIGINS) * k / (n + 1)  # the newcomer's fair share of all slots
    assert gained == {"newcomer"}  # nothing moves between old members
    assert moved == len(p.owned_by("newcomer"))
    assert 0.95 <= moved / ideal <= 1.05  # measured: see the note printed by bench/placement.py


@pytest.mark.parametrize("k", [1, 2])
def test_minimal_movement_leave(k: int) -> None:
    n = 21
    p = Placement([Member(f"node-{i:02d}") for i in range(n)], k, MOVE_ORIGINS)
    share = len(p.owned_by("node-07"))
    moved, _, lost = _moved_slots(p.remove_member("node-07"))
    assert lost == {"node-07"} and moved == share  # exactly the leaver's slots move
    assert moved / (len(MOVE_ORIGINS) * k / n) <= 1.05


def test_minimal_movement_weighted_join_k1() -> None:
    weights = [1, 1, 2, 3, 0.5, 1.5, 4, 1]
    p = Placement([Member(f"w{i}", w) for i, w in enumerate(weights)], 1, MOVE_ORIGINS)
    moved, gained, _ = _moved_slots(p.add_member(Member("heavy", 2.0)))
    ideal = len(MOVE_ORIGINS) * 2.0 / (sum(weights) + 2.0)
    assert gained == {"heavy"}
    assert 0.95 <= moved / ideal <= 1.05


# --- incremental == full ------------------------------------------------------------------

NAMES = ["a", "b", "c", "n1", "n10", "n2", "ü", "Z"]
ORIGINS = [f"o{i}" for i in range(25)] + ["", "https://x/y"]
weights_st = st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0, MAXW])
member_st = st.builds(Member, st.sampled_from(NAMES), weights_st, st.booleans())
op_st = st.one_of(
    st.tuples(st.just("add"), member_st),
    st.tuples(st.just("remove"), st.sampled_from(NAMES)),
    st.tuples(st.just("update"), member_st),
    st.tuples(st.just("set_members"), st.lists(member_st, max_size=8, unique_by=lambda m: m.name)),
    st.tuples(st.just("add_origin"), st.sampled_from(ORIGINS)),
    st.tuples(st.just("remove_origin"), st.sampled_from(ORIGINS)),
    st.tuples(st.just("set_origins"), st.lists(st.sampled_from(ORIGINS), max_size=30)),
    st.tuples(st.just("set_k"), st.integers(1, 5)),
)


def check_consistent(p: Placement) -> None:
    full = compute_owners(p.members.values(), p.k, p.origins)
    assert p.assignment() == full
    for name in NAMES:
        assert p.owned_by(name) == {o for o, owners in full.items() if name in owners}
    # memory stays bounded: no origin caches more than k + spare ranked entries, or with
    # shared sites k(k-1) + 1 + spare (the k-th distinct site is at most that deep)
    sites = [m.site for m in p.members.values() if m.eligible and m.site is not None]
    bound = p.k + p.spare if len(sites) == len(set(sites)) else p.k * (p.k - 1) + 1 + p.spare
    assert all(len(cache) <= bound for _, cache in p._slots.values())


def run_ops(
    initial: list[Member], origins: list[str], k: int, spare: int, ops: list[tuple], *, spec: bool
) -> None:
    """Apply ops; after each, the incremental owners equal a from-scratch computation (and,
    with ``spec``, the spec written out) and the reported changes are exactly the diff."""
    p = Placement(initial, k, origins, spare=spare)
    check_consistent(p)
    for op, arg in ops:
        before = p.assignment()
        try:
            if op == "add":
                changes = p.add_member(arg)
            elif op == "remove":
                changes = p.remove_member(arg)
            elif op == "update":
                changes = p.update_member(arg)
            elif op == "set_members":
                changes = p.set_members(arg)
            elif op == "add_origin":
                changes = p.add_origin(arg)
            elif op == "remove_origin":
                changes = p.remove_origin(arg)
            elif op == "set_origins":
                changes = p.set_origins(arg)
            else:
                changes = p.set_k(arg)
        except (KeyError, ValueError):  # duplicate add / unknown remove: must change nothing
            assert (op, p.assignment()) == (op, before)
            check_consistent(p)
            continue
        check_consistent(p)
        after = p.assignment()
        if spec:
            members = list(p.members.values())
            assert after == {o: naive_owners(members, p.k, o) for o in p.origins}
        expected = [
            OwnerChange(o, before.get(o, ()), after.get(o, ()))
            for o in sorted(before.keys() | after.keys())
            if before.get(o, ()) != after.get(o, ())
        ]
        assert changes == expected


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.lists(member_st, max_size=8, unique_by=lambda m: m.name),
    origins=st.lists(st.sampled_from(ORIGINS), max_size=30),
    k=st.integers(1, 4),
    spare=st.integers(0, 2),
    ops=st.lists(op_st, max_size=25),
)
def test_incremental_equals_full(
    initial: list[Member], origins: list[str], k: int, spare: int, ops: list[tuple]
) -> None:
    run_ops(initial, origins, k, spare, ops, spec=False)


SITES = [None, None, "A", "B", "C", "ü"]
sited_member_st = st.builds(
    Member, st.sampled_from(NAMES), weights_st, st.booleans(), st.sampled_from(SITES)
)
sited_op_st = st.one_of(
    st.tuples(st.just("add"), sited_member_st),
    st.tuples(st.just("remove"), st.sampled_from(NAMES)),
    st.tuples(st.just("update"), sited_member_st),
    st.tuples(
        st.just("set_members"),
        st.lists(sited_member_st, max_size=8, unique_by=lambda m: m.name),
    ),
    st.tuples(st.just("add_origin"), st.sampled_from(ORIGINS)),
    st.tuples(st.just("remove_origin"), st.sampled_from(ORIGINS)),
    st.tuples(st.just("set_origins"), st.lists(st.sampled_from(ORIGINS), max_size=30)),
    st.tuples(st.just("set_k"), st.integers(1, 5)),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.lists(sited_member_st, max_size=8, unique_by=lambda m: m.name),
    origins=st.lists(st.sampled_from(ORIGINS), max_size=30),
    k=st.integers(1, 4),
    spare=st.integers(0, 2),
    ops=st.lists(sited_op_st, max_size=25),
)
def test_incremental_equals_full_with_sites(
    initial: list[Member], origins: list[str], k: int, spare: int, ops: list[tuple]
) -> None:
    """Issue 19: with failure domains too, the incremental path equals the reference after
    every step, and the reference equals the spec written out (naive_owners)."""
    run_ops(initial, origins, k, spare, ops, spec=True)


def test_sites_larger_fleets_incremental_equals_reference() -> None:
    """Many members per site, so a cache holds k members of one site: the site's next
    member moving up on a leave, and rescans, are exercised at scale."""
    rng = random.Random(19)
    origins = [f"origin-{i}" for i in range(400)]
    layouts: list[tuple[int, list[str | None]]] = [
        (2, ["s0", "s1", "s2"]),
        (3, ["s0", "s1"]),
        (2, ["s0"]),
        (3, ["s0", "s1", "s2", None]),
    ]
    for k, sites in layouts:
        members = [
            Member(f"n{i}", rng.choice([0.5, 1.0, 2.0]), True, rng.choice(sites)) for i in range(30)
        ]
        p = Placement(members, k, origins, spare=rng.randint(0, 2))
        assert p.assignment() == compute_owners(members, k, origins)
        for step in range(40):
            names = list(p.members)
            r = rng.random()
            if r < 0.35 and names:
                p.remove_member(rng.choice(names))
            elif r < 0.7:
                site = rng.choice([*sites, "new"])
                p.add_member(Member(f"j{step}", rng.choice([0.5, 1.0, 2.0]), True, site))
            elif names:
                m = p.members[rng.choice(names)]
                p.update_member(Member(m.name, m.weight, rng.random() < 0.8, rng.choice(sites)))
            full = compute_owners(p.members.values(), k, origins)
            assert p.assignment() == full, (k, sites, step)
        check_consistent(p)


def test_sites_owners_in_distinct_sites() -> None:
    origins = [f"o{i}" for i in range(1000)]
    members = [Member(f"n{i:02d}", 1.0, True, f"site-{i % 4}") for i in range(20)]
    site = {m.name: m.site for m in members}
    for k in (1, 2, 3, 4):
        for o, owners in compute_owners(members, k, origins).items():
            assert len(owners) == k and len({site[n] for n in owners}) == k, o
    every_site = {f"site-{i}" for i in range(4)}
    for k in (5, 7):  # fewer sites than k: every site, then the best of the rest
        for owners in compute_owners(members, k, origins).values():
            assert len(owners) == k and {site[n] for n in owners} == every_site
    one_site = [Member(m.name, m.weight, True, "store") for m in members]  # all in one
    plain = [Member(m.name) for m in members]
    assert compute_owners(one_site, 2, origins) == compute_owners(plain, 2, origins)


def test_without_sites_owners_are_exactly_as_before() -> None:
    """No site tags, or a site of its own per member: the owners are the first k of the
    ranking, exactly as before failure domains existed (the fixed vectors pin it too)."""
    rng = random.Random(7)
    origins = [f"origin-{i}" for i in range(500)]
    plain = [Member(f"n{i}", rng.choice([0.5, 1.0, 2.0])) for i in range(25)]
    own = [Member(m.name, m.weight, True, f"site-of-{m.name}") for m in plain]
    for k in (1, 2, 3):
        first_k = {o: naive_owners(plain, k, o) for o in origins}  # no sites: the first k
        assert compute_owners(plain, k, origins) == first_k
        assert Placement(plain, k, origins).assignment() == first_k
        assert Placement(own, k, origins).assignment() == first_k


@pytest.mark.parametrize("seed", range(3))
def test_sites_order_independence(seed: int) -> None:
    rng = random.Random(seed)
    ms = [
        Member(f"n{i}", rng.choice([0.5, 1.0, 2.0]), True, rng.choice(["a", "b", "c", None]))
        for i in range(15)
    ]
    origins = [f"origin-{i}" for i in range(300)]
    expected = compute_owners(ms, 2, origins)
    assert expected == {o: naive_owners(ms, 2, o) for o in origins}
    shuffled = ms[:]
    rng.shuffle(shuffled)
    rng.shuffle(origins)
    assert Placement(shuffled, 2, origins).assignment() == expected
    grown = Placement(k=2, origins=origins)  # members join one by one, in another order
    rng.shuffle(shuffled)
    for m in shuffled:
        grown.add_member(m)
    assert grown.assignment() == expected


SITED_MEMBERS = [  # three sites of 4, 4 and 3 members, and one member without a site
    Member(f"node-{i:02d}", 1.0 + (i % 4) * 0.5, True, ("store-a", "store-b", "rack-ü")[i % 3])
    if i < 11
    else Member(f"node-{i:02d}", 1.0 + (i % 4) * 0.5)
    for i in range(12)
]
SITED_FIXED = [  # (k, {origin: owners}), computed once and frozen; "plain": without sites
    (3, {
        "o-0": ("node-05", "node-09", "node-11"),
        "o-1": ("node-06", "node-07", "node-05"),  # plain: 06 07 04
        "o-2": ("node-05", "node-11", "node-01"),
        "o-3": ("node-06", "node-10", "node-02"),  # plain: 06 09 03
        "o-7": ("node-10", "node-03", "node-02"),  # plain: 10 01 03
    }),
    (4, {  # four domains: one member of each
        "o-0": ("node-05", "node-09", "node-11", "node-07"),
        "o-1": ("node-06", "node-07", "node-05", "node-11"),  # plain: 06 07 04 01
        "o-3": ("node-06", "node-10", "node-02", "node-11"),  # plain: 06 09 03 10
        "o-6": ("node-08", "node-11", "node-03", "node-01"),
    }),
]  # fmt: skip


@pytest.mark.parametrize(("k", "expected"), SITED_FIXED)
def test_sites_fixed_vectors(k: int, expected: dict[str, tuple[str, ...]]) -> None:
    assert compute_owners(SITED_MEMBERS, k, expected) == expected
    assert Placement(SITED_MEMBERS, k, expected).assignment() == expected
    assert {o: naive_owners(SITED_MEMBERS, k, o) for o in expected} == expected


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sites_join_and_leave_move_only_the_member_s_slots(k: int) -> None:
    """With sites, a join still takes slots only for the newcomer and a leave moves only
    the leaver's slots: no slot changes hands between the other members."""
    rng = random.Random(k)
    origins = [f"origin-{i}" for i in range(3000)]
    ms = [Member(f"n{i:02d}", 1.0, True, f"site-{i % 3}") for i in range(21)]
    p = Placement(ms, k, origins)
    for r in range(4):
        leaver = rng.choice(list(p.members))
        share = len(p.owned_by(leaver))
        moved, _, lost = _moved_slots(p.remove_member(leaver))
        assert lost <= {leaver} and moved == share
        newcomer = Member(f"new-{r}", 1.0, True, rng.choice(["site-0", "site-1", "site-3"]))
        moved, gained, _ = _moved_slots(p.add_member(newcomer))
        assert gained <= {newcomer.name} and moved == len(p.owned_by(newcomer.name))
    assert p.assignment() == compute_owners(p.members.values(), k, origins)


# --- ties and edge cases --------------------------------------------------------------------


def test_ties_broken_by_name_in_any_order() -> None:
    ms = [Member("b", MAXW), Member("a", MAXW), Member("c", 1.0)]
    origins = [f"o{i}" for i in range(200)]
    tied = [o for o in origins if score("a", MAXW, o) == score("b", MAXW, o) == math.inf]
    assert len(tied) > 40  # h > 1/e for both: about 40% of origins
    for order in (ms, ms[::-1]):
        p = Placement(order, 2, origins)
        assert all(p.owners(o) == ("a", "b") for o in tied)
        assert p.assignment() == compute_owners(ms, 2, origins)
    # The incremental path breaks ties the same way, against a complete cache ([b]) and a
    # truncated one ([b] of b, c with spare=0): a must displace b wherever they tie.
    for others in ([], [Member("c", 1.0)]):
        p = Placement([Member("b", MAXW), *others], 1, origins, spare=0)
        changes = p.add_member(Member("a", MAXW))
        assert {ch.origin for ch in changes} >= set(tied)
        assert all(p.owners(o) == ("a",) for o in tied)
        assert p.assignment() == compute_owners(
            [Member("a", MAXW), Member("b", MAXW), *others], 1, origins
        )


def test_k_larger_than_eligible_gives_all_eligible_ranked() -> None:
    ms = [Member("x"), Member("y", 7.0), Member("serf", eligible=False)]
    p = Placement(ms, 5, ["o1", "o2"])
    for o in ("o1", "o2"):
        assert sorted(p.owners(o)) == ["x", "y"]
        assert p.owners(o) == naive_owners(ms, 5, o)


def test_no_eligible_members_means_no_owners() -> None:
    p = Placement([Member("serf", eligible=False)], 2, ["o1"])
    assert p.owners("o1") == ()
    assert p.owned_by("serf") == set()
    assert p.add_origin("o2") == []  # () -> (): nothing changed
    changes = p.add_member(Member("pi"))
    assert changes == [OwnerChange("o1", (), ("pi",)), OwnerChange("o2", (), ("pi",))]
    assert p.remove_member("pi") == [
        OwnerChange("o1", ("pi",), ()),
        OwnerChange("o2", ("pi",), ()),
    ]
    assert compute_owners([], 1, ["o"]) == {"o": ()}


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate member name 'a'"):
        Placement([Member("a"), Member("a", 2.0)])
    with pytest.raises(ValueError, match="duplicate member name"):
        compute_owners([Member("a"), Member("a")], 1, ["o"])
    p = Placement([Member("a")], 1, ["o"])
    with pytest.raises(ValueError, match="duplicate member name"):
        p.add_member(Member("a", eligible=False))
    with pytest.raises(ValueError, match="duplicate member name"):
        p.set_members([Member("b"), Member("b")])
    with pytest.raises(ValueError, match="duplicate origin id"):
        p.add_origin("o")
    assert p.assignment() == {"o": ("a",)} and set(p.members) == {"a"}


def test_unknown_names_and_bad_arguments() -> None:
    p = Placement([Member("a")], 1, ["o"])
    with pytest.raises(KeyError):
        p.remove_member("nobody")
    with pytest.raises(KeyError):
        p.update_member(Member("nobody"))
    with pytest.raises(KeyError):
        p.remove_origin("nowhere")
    with pytest.raises(KeyError):
        p.owners("nowhere")
    for bad_k in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="k must be"):
            p.set_k(bad_k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spare"):
        Placement(spare=-1)
    assert p.owned_by("nobody") == set()
    assert p.assignment() == {"o": ("a",)} and p.k == 1


def test_ineligible_members_never_own() -> None:
    ms = [Member(f"serf-{i}", eligible=False) for i in range(5)] + [Member("pi-1"), Member("pi-2")]
    p = Placement(ms, 3, [f"o{i}" for i in range(50)])
    assert set(slots(p.assignment())) == {"pi-1", "pi-2"}
    changes = p.update_member(Member("serf-0", eligible=True))  # became an edge-agent
    assert changes and all(set(ch.new) - set(ch.old) == {"serf-0"} for ch in changes)
    assert p.update_member(Member("serf-1", 5.0, eligible=False)) == []


@pytest.mark.parametrize(
    ("tag", "weight"),
    [
        (None, 1.0),
        ("2.5", 2.5),
        ("1e-3", 0.001),
        ("0", 1.0),
        ("-2", 1.0),
        ("nan", 1.0),
        ("inf", 1.0),
        ("1e999", 1.0),
        ("heavy", 1.0),
        ("", 1.0),
    ],
)
def test_parse_weight_invalid_means_one(tag: str | None, weight: float) -> None:
    assert parse_weight(tag) == weight


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_member_rejects_invalid_weight(bad: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        Member("a", bad)


def test_member_from_tags() -> None:
    from agent.shell.cluster import ROLE as CLUSTER_ROLE

    assert ROLE == CLUSTER_ROLE
    tags = {"role": ROLE, "weight": "2", "version": "x"}
    assert member_from_tags("pi", "alive", tags, proven=True) == Member("pi", 2.0, True)
    assert member_from_tags("pi", "suspect", tags, proven=True) == Member("pi", 2.0, True)
    assert member_from_tags("pi", "dead", tags, proven=True).eligible is False
    assert member_from_tags("pi", "left", tags, proven=True).eligible is False
    serf = member_from_tags("serf", "alive", {"role": "web"}, proven=True)
    assert serf == Member("serf", 1.0, False)
    bad_weight = {"role": ROLE, "weight": "-1", "version": "x"}
    assert member_from_tags("pi", "alive", bad_weight, proven=True) == Member("pi")
    sited = {"role": ROLE, "version": "x", "site": "store-12"}
    assert member_from_tags("pi", "alive", sited, proven=True) == Member(
        "pi", 1.0, True, "store-12"
    )
    no_site = {"role": ROLE, "version": "x", "site": ""}  # empty: a domain of its own
    assert member_from_tags("pi", "alive", no_site, proven=True).site is None
    with pytest.raises(ValueError, match="site"):
        Member("pi", site="")


@pytest.mark.parametrize(
    ("tags", "proven"),
    [
        ({"role": ROLE}, True),  # a memberlist node with meta "edge-agent", even if it spoke
        ({"role": ROLE, "version": ""}, True),
        ({"role": ROLE, "version": "0.1.0"}, False),  # serf -tag role=... -tag version=...
        ({"role": ROLE}, False),  # serf -tag role=edge-agent
    ],
    ids=["role-only", "empty-version", "unproven", "bare-claim"],
)
def test_a_claimed_role_is_not_eligible_without_proof(tags: dict[str, str], proven: bool) -> None:
    """Issue 16 item 9: a foreign node that claims role=edge-agent must never own origins;
    it needs the version tag and proof that it speaks our protocol."""
    assert member_from_tags("foreign", "alive", tags, proven=proven).eligible is False
    assert claims_role(tags) is (tags.get("version", "") != "")
    owners = compute_owners(
        [Member("pi"), member_from_tags("foreign", "alive", tags, proven=proven)],
        2,
        [f"o{i}" for i in range(50)],
    )
    assert all(o == ("pi",) for o in owners.values())


def test_partition_each_side_owns_every_origin() -> None:
    origins = [f"o{i}" for i in range(500)]
    everyone = [Member(f"n{i}") for i in range(6)]
    whole = Placement(everyone, 2, origins)
    for side in (everyone[:2], everyone[2:]):
        view = Placement(everyone, 2, origins)  # each side marks the other side dead
        view.set_members(side)
        names = {m.name for m in side}
        assert all(len(view.owners(o)) == 2 and set(view.owners(o)) <= names for o in origins)
        assert view.assignment() == compute_owners(side, 2, origins)
        view.set_members(everyone)  # heal
        assert view.assignment() == whole.assignment()


def test_set_k_and_origin_changes_reported() -> None:
    ms = [Member(f"n{i}") for i in range(6)]
    p = Placement(ms, 1, ["o1", "o2"], spare=0)
    grown = p.set_k(3)
    assert [ch.origin for ch in grown] == ["o1", "o2"]
    assert all(ch.new[:1] == ch.old and len(ch.new) == 3 for ch in grown)
    assert p.set_k(3) == []
    assert p.remove_origin("o1") == [OwnerChange("o1", grown[0].new, ())]
    assert p.set_origins(["o2", "o3", "o3"]) == [OwnerChange("o3", (), naive_owners(ms, 3, "o3"))]
    assert p.assignment() == compute_owners(ms, 3, ["o2", "o3"])
