"""Batches of origins in the pure core (issue 17): validation of a whole batch, the exact
diff of a declarative apply, one record and one delta per batch, and a batch of writes
in one CRDT delta equal to the same writes made one by one."""

from __future__ import annotations

import pytest

from agent.checks import Status, Transition
from agent.crdt import ORMap
from agent.domain import BatchError, parse_batch
from agent.node import NodeCore, State, decode_delta, encode_delta

WALL = 1_800_000_000.0


def item(i: int | str, **extra: object) -> dict[str, object]:
    return {"id": f"o{i}", "url": f"http://127.0.0.1:9/o/{i}", **extra}


def core(name: str = "a", config: list[dict[str, object]] | None = None) -> NodeCore:
    c = NodeCore(name, State(name))
    c.start(parse_batch(config or []), 0.0, WALL, alone=True)
    c.drain()
    return c


def test_parse_batch_names_every_bad_element() -> None:
    items = [item(0), item(1, rise=0), {"url": "http://x"}, 5, item(0), item(4, nope=1)]
    with pytest.raises(BatchError) as e:
        parse_batch(items)
    got = [(x.index, x.id, x.key) for x in e.value.errors]
    assert got == [
        (1, "o1", "rise"),
        (2, None, "id"),
        (3, None, None),
        (4, "o0", "id"),
        (5, "o4", "nope"),
    ]
    assert str(e.value) == "5 of 6 origins are invalid; nothing was applied"
    assert e.value.errors[3].message == 'origins[4].id: "o0" is also origins[0]'
    assert e.value.errors[2].message.startswith("origins[3]: 5 is not a JSON object")


def test_parse_batch_refuses_what_is_not_an_array() -> None:
    for body in ({"origins": []}, "x", None):
        with pytest.raises(BatchError, match="must be a JSON array"):
            parse_batch(body)


def test_apply_diff_is_exact_and_a_dry_run_changes_nothing() -> None:
    c = core(config=[item("cfg")])
    c.apply_batch(parse_batch([item(i) for i in range(4)] + [item("cfg")]), 1.0, WALL, replace=True)
    c.drain()
    wanted = parse_batch([item(0), item(1, interval="20s"), item(7)])
    before = encode_delta(c.state.crdt)
    plan = c.apply_batch(wanted, 2.0, WALL + 1, replace=True, dry_run=True)
    assert encode_delta(c.state.crdt) == before and c.drain().records == []
    assert plan.as_dict() == {
        "added": ["o7"],
        "changed": ["o1"],
        "removed": ["o2", "o3", "ocfg"],
        "unchanged": 1,
        "still_declared": [{"id": "ocfg", "nodes": ["a"]}],
    }
    done = c.apply_batch(wanted, 2.0, WALL + 1, replace=True)
    assert done == plan
    assert set(c.api_specs()) == {"o0", "o1", "o7"}
    assert c.api_specs()["o1"].interval == 20.0
    assert set(c.state.catalogue()) == {"o0", "o1", "o7", "ocfg"}  # the config still holds ocfg
    assert c.owners("o2") == ()  # gone from placement too


def test_a_batch_is_one_record_and_one_delta_that_a_peer_applies_whole() -> None:
    a = core("a")
    specs = parse_batch([item(i) for i in range(1000)])
    diff = a.apply_batch(specs, 1.0, WALL, replace=False)
    assert len(diff.added) == 1000
    out = a.drain()
    assert len(out.records) == 1 and out.local is not None
    assert out.engine is not None and len(out.engine.upsert) == 1000
    b = core("b")
    changed = b.state.apply(decode_delta(encode_delta(out.local)))
    assert len(changed) == 1000
    assert b.state.catalogue() == a.state.catalogue()


def test_applying_the_export_writes_nothing() -> None:
    a = core()
    a.apply_batch(
        parse_batch([item(i, interval="1500ms") for i in range(50)]), 1.0, WALL, replace=True
    )
    a.drain()
    exported = parse_batch([s.to_dict() for s in a.api_specs().values()])
    diff = a.apply_batch(exported, 2.0, WALL + 1, replace=True)
    assert (diff.added, diff.changed, diff.removed, diff.unchanged) == ([], [], [], 50)
    assert a.drain().records == []


def test_write_many_equals_the_same_writes_one_by_one() -> None:
    one: ORMap[str, int] = ORMap()
    many: ORMap[str, int] = ORMap()
    for m in (one, many):  # some history: a peer's entry and an own one under the keys
        m.join(m.write("b", "k1", 1))
        m.join(m.write("a", "k2", 2))
    writes = [("k1", 10), ("k2", 20), ("k3", 30)]
    deltas = ORMap[str, int]()
    for key, value in writes:
        d = one.write("a", key, value)
        one.join(d)
        deltas.join(d)
    batch = many.write_many("a", writes)
    assert batch == deltas
    many.join(batch)
    assert many == one
    with pytest.raises(ValueError, match="twice"):
        many.write_many("a", [("k1", 1), ("k1", 2)])


def test_removing_a_batch_the_node_checks_writes_two_records_not_one_per_origin() -> None:
    """The retractions are one delta, and so are the node's own observations of the
    origins it stops checking (State.remove_observations): 500 origins, 2 records."""
    a = core()
    specs = parse_batch([item(i) for i in range(500)])
    a.apply_batch(specs, 1.0, WALL, replace=True)
    a.drain()
    for s in specs:
        a.on_transition(Transition(s.id, Status.UNKNOWN, Status.UP, "ok", 0.01, 2.0), WALL + 2)
    a.drain()
    assert all(a.state.observation(s.id, "a") is not None for s in specs)
    diff = a.apply_batch([], 3.0, WALL + 3, replace=True)
    assert len(diff.removed) == 500
    out = a.drain()
    assert len(out.records) == 2
    assert all(a.state.observation(s.id, "a") is None for s in specs)
    assert a.state.catalogue() == {}
