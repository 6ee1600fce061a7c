"""The replicated model: catalogue, observations, verdicts, collection, anti-entropy."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.crdt import CrdtDecodeError, Timestamp
from agent.crdt.codec import encode_digest
from agent.domain.origin import OriginSpec, parse_origin
from agent.node.state import (
    Declaration,
    Delta,
    State,
    canonical_spec,
    decode_delta,
    decode_digest,
    encode_delta,
    latency_band,
)

T0 = 1_780_000_000_000


def spec(
    oid: str = "shop", url: str = "https://shop.example.com/healthz", **kw: object
) -> OriginSpec:
    return parse_origin({"id": oid, "url": url, **kw})


def ts(ms: int, node: str) -> Timestamp:
    return Timestamp(T0 + ms, 0, node)


def sync(*states: State) -> None:
    """Two rounds of every replica pulling from every other (the stated bound)."""
    for _ in range(2):
        for src in states:
            for dst in states:
                if src is not dst:
                    dst.apply(src.delta_for(dst.state_digest()))


# --- catalogue --------------------------------------------------------------------------------


def test_declare_and_catalogue() -> None:
    a = State("a")
    delta = a.declare(spec(), "a", "config", ts(1, "a"))
    assert delta is not None and a.catalogue() == {"shop": spec()}
    b = State("b")
    assert b.apply(delta) == {"shop"}
    assert b.catalogue() == {"shop": spec()}


def test_redeclaring_the_same_spec_is_not_a_change() -> None:
    a = State("a")
    assert a.declare(spec(), "a", "config", ts(1, "a")) is not None
    assert a.declare(spec(), "a", "config", ts(2, "a")) is None  # e.g. a SIGHUP reload
    assert a.declare(spec(interval="5s"), "a", "config", ts(3, "a")) is not None
    assert a.catalogue()["shop"].interval == 5.0


def test_a_node_declares_only_for_itself_and_sources_are_checked() -> None:
    a = State("a")
    with pytest.raises(ValueError):
        a.declare(spec(), "b", "config", ts(1, "a"))
    with pytest.raises(ValueError):
        a.declare(spec(), "a", "gossip", ts(1, "a"))


def test_an_origin_exists_while_some_declaration_survives() -> None:
    a, b = State("a"), State("b")
    a.declare(spec(), "a", "config", ts(1, "a"))
    b.declare(spec(), "b", "config", ts(2, "b"))
    sync(a, b)
    # a drops the origin from its config: only a's declaration goes
    d = a.retract("shop", "a", "config")
    assert d is not None
    b.apply(d)
    assert a.catalogue() == b.catalogue() == {"shop": spec()}
    assert [(n, s) for n, s, _ in b.declarations("shop")] == [("b", "config")]
    assert a.retract("shop", "a", "config") is None  # nothing left to retract
    b.apply(b.retract("shop", "b", "config") or a.delta_for(b.state_digest()))
    sync(a, b)
    assert a.catalogue() == b.catalogue() == {}


def test_config_and_api_declarations_are_independent() -> None:
    a = State("a")
    a.declare(spec(), "a", "config", ts(1, "a"))
    a.declare(spec(interval="30s"), "a", "api", ts(2, "a"))
    assert a.catalogue()["shop"].interval == 30.0  # the newer declaration wins
    a.retract("shop", "a", "api")
    assert a.catalogue()["shop"].interval == 10.0  # the config one still stands
    a.declare(spec(interval="30s"), "a", "api", ts(3, "a"))
    a.retract("shop", "a", "config")
    assert "shop" in a.catalogue()


def test_the_api_of_one_node_can_retract_an_api_declaration_made_on_another() -> None:
    a, b = State("a"), State("b")
    b.apply(a.declare(spec(), "a", "api", ts(1, "a")) or a.crdt)
    d = b.retract("shop", "a", "api")
    assert d is not None
    a.apply(d)
    assert a.catalogue() == b.catalogue() == {}


def test_concurrent_edits_resolve_the_same_everywhere() -> None:
    a, b, c = State("a"), State("b"), State("c")
    a.declare(spec(interval="20s"), "a", "config", ts(5, "a"))
    b.declare(spec(interval="30s"), "b", "config", ts(5, "b"))  # same wall time: node breaks it
    c.declare(spec(interval="40s"), "c", "api", ts(4, "c"))
    sync(c, b, a)
    assert a.catalogue() == b.catalogue() == c.catalogue()
    assert a.catalogue()["shop"].interval == 30.0


def test_specs_are_canonical_so_the_declarer_sees_what_peers_decode() -> None:
    odd = replace(spec(), interval=0.0015, timeout=0.0012)
    a, b = State("a"), State("b")
    b.apply(decode_delta(encode_delta(a.declare(odd, "a", "config", ts(1, "a")) or a.crdt)))
    assert a.catalogue() == b.catalogue()
    assert canonical_spec(canonical_spec(odd)) == canonical_spec(odd)


# --- observations and verdicts ----------------------------------------------------------------


def test_an_identical_repeated_observation_yields_no_delta() -> None:
    a = State("a")
    assert a.observe("shop", "a", "up", ts(1, "a"), "<100ms", "") is not None
    for i in range(100):
        assert a.observe("shop", "a", "up", ts(2 + i, "a"), "<100ms", "") is None
    assert a.state_digest().vv == {"a": 1}  # no events were made


def test_band_and_reason_changes_are_written_and_keep_since() -> None:
    a = State("a")
    a.observe("shop", "a", "up", ts(1, "a"), "<10ms", "")
    assert a.observe("shop", "a", "up", ts(2, "a"), "<1s", "") is not None
    obs = a.observation("shop", "a")
    assert obs is not None and obs.latency_band == "<1s" and obs.since == ts(1, "a")
    assert a.observe("shop", "a", "down", ts(3, "a"), None, "HTTP 503") is not None
    assert a.observe("shop", "a", "down", ts(4, "a"), None, "HTTP 502") is not None
    obs = a.observation("shop", "a")
    assert obs is not None and (obs.status, obs.since, obs.reason) == (
        "down",
        ts(3, "a"),
        "HTTP 502",
    )


def test_latency_bands_absorb_jitter() -> None:
    assert {latency_band(x) for x in (0.012, 0.05, 0.099)} == {"<100ms"}
    assert [latency_band(x) for x in (0.001, 0.5, 3.0)] == ["<10ms", "<1s", ">=1s"]


def test_only_the_observer_writes_its_observation_and_values_are_checked() -> None:
    a = State("a")
    with pytest.raises(ValueError):
        a.observe("shop", "b", "up", ts(1, "a"), None, "")
    with pytest.raises(ValueError):
        a.observe("shop", "a", "sideways", ts(1, "a"), None, "")
    with pytest.raises(ValueError):
        a.observe("shop", "a", "up", ts(1, "a"), "fast", "")


def test_verdicts() -> None:
    a, b, c = State("a"), State("b"), State("c")
    owners = ["a", "b", "c"]
    assert a.verdict("shop", owners) == "unknown"
    a.observe("shop", "a", "up", ts(1, "a"), "<10ms", "")
    b.observe("shop", "b", "up", ts(1, "b"), "<100ms", "")
    sync(a, b, c)
    assert {s.verdict("shop", owners) for s in (a, b, c)} == {"up"}
    c.observe("shop", "c", "down", ts(2, "c"), None, "connect timeout")
    sync(a, b, c)
    assert {s.verdict("shop", owners) for s in (a, b, c)} == {"disputed"}
    # only the current owners count: c no longer owns the origin
    assert a.verdict("shop", ["a", "b"]) == "up"
    assert a.verdict("shop", ["c"]) == "down"
    assert a.verdict("shop", ["d"]) == "unknown"
    assert a.verdict("other", owners) == "unknown"


def test_remove_observation_and_reap() -> None:
    a, b, c = State("a"), State("b"), State("c")
    for s in (a, b, c):
        for oid in ("x", "y", "z"):
            s.observe(oid, s.replica, "up", ts(1, s.replica), "<10ms", "")
    sync(a, b, c)
    d = b.remove_observation("x", "b")
    assert d is not None and b.remove_observation("x", "b") is None
    assert a.apply(d) == {"x"}
    # c has been dead beyond the reap time: any node collects its observations, in one event
    reap = a.reap(["c"])
    assert reap is not None and len(reap.records) == 1
    assert b.apply(reap) == {"x", "y", "z"}
    assert a.reap(["c"]) is None and a.reap([]) is None
    sync(a, b, c)
    for s in (a, b, c):
        assert set(s.observations("y")) == {"a", "b"}
        assert set(s.observations("x")) == {"a"}


def test_apply_reports_changed_origins_once() -> None:
    a, b = State("a"), State("b")
    d1 = a.declare(spec("web"), "a", "config", ts(1, "a"))
    d2 = a.observe("db", "a", "down", ts(2, "a"), None, "refused")
    assert d1 is not None and d2 is not None
    assert b.apply(d1) == {"web"}
    assert b.apply(d2) == {"db"}
    assert b.apply(d2) == set()  # a duplicate changes nothing
    assert b.origins() == {"web", "db"}


# --- anti-entropy, size, persistence ----------------------------------------------------------


def test_digest_is_small_and_delta_empty_for_equal_replicas_at_10k_origins() -> None:
    nodes = [State(n) for n in ("edge-a", "edge-b", "edge-c")]
    a = nodes[0]
    for i in range(10_000):
        a.declare(
            spec(f"origin-{i:05d}", f"http://10.0.{i // 250}.{i % 250}/"),
            "edge-a",
            "config",
            ts(i, "edge-a"),
        )
    sync(*nodes)
    for s in nodes:
        for i in range(10_000):
            s.observe(f"origin-{i:05d}", s.replica, "up", ts(20_000 + i, s.replica), "<10ms", "")
    sync(*nodes)
    assert nodes[0] == nodes[1] == nodes[2]
    for s in nodes:
        digest = encode_digest(s.state_digest())
        assert len(digest) < 2048, len(digest)
        for other in nodes:
            assert s.delta_for(other.state_digest()).is_empty()
    assert len(encode_digest(a.state_digest())) < 100  # flat: one entry per replica
    assert len(a.catalogue()) == 10_000 and a.verdict("origin-00042", ["edge-b"]) == "up"


def test_catch_up_sends_only_what_is_missing() -> None:
    a, b = State("a"), State("b")
    for i in range(200):
        a.observe(f"o{i}", "a", "up", ts(i, "a"), "<10ms", "")
    b.apply(a.delta_for(b.state_digest()))
    missed = [
        a.observe(f"o{i}", "a", "down", ts(1000 + i, "a"), None, "HTTP 500") for i in range(5)
    ]
    catch_up = a.delta_for(b.state_digest())
    assert len(catch_up.entries) == 5
    encoded = len(encode_delta(catch_up))
    assert encoded <= 1.5 * sum(len(encode_delta(d)) for d in missed if d is not None)
    assert b.apply(catch_up) == {f"o{i}" for i in range(5)} and a == b


def test_snapshot_and_restore() -> None:
    a = State("a")
    a.declare(spec(), "a", "config", ts(1, "a"))
    a.observe("shop", "a", "up", ts(2, "a"), "<10ms", "")
    a.observe("gone", "a", "up", ts(3, "a"), "<10ms", "")
    a.remove_observation("gone", "a")
    back = State.restore("a", a.snapshot())
    assert back == a and back.catalogue() == a.catalogue()
    assert back.observations("shop") == a.observations("shop")
    assert back.own_high_water() == T0 + 2
    # the restored replica carries on its own dot sequence, never reusing one
    d = back.observe("shop", "a", "down", ts(5, "a"), None, "x")
    assert d is not None and a.apply(d) == {"shop"} and a == back


def test_bad_bytes_raise_only_crdt_decode_error() -> None:
    a = State("a")
    a.declare(spec(), "a", "config", ts(1, "a"))
    good = a.snapshot()
    for bad in (b"", b"\xc1", good[:-3], good + b"\x00", b"\x93\x03\x01\x90"):
        with pytest.raises(CrdtDecodeError):
            State.restore("b", bad)
    with pytest.raises(CrdtDecodeError):
        decode_digest(b"\x00")
    # a declaration whose spec fails the config's rules is rejected, not adopted
    tampered = good.replace(b"https://shop.example.com/healthz", b"ftp://shop.example.com/healthzz")
    with pytest.raises(CrdtDecodeError):
        decode_delta(tampered)


def test_fuzzed_state_bytes_never_raise_anything_else() -> None:
    a = State("a")
    a.declare(spec(), "a", "config", ts(1, "a"))
    a.observe("shop", "a", "down", ts(2, "a"), None, "HTTP 503")
    a.reap(["nobody"])
    a.remove_observation("shop", "a")
    a.observe("shop", "a", "up", ts(3, "a"), ">=1s", "")
    good = a.snapshot()
    rnd = random.Random(5)
    accepted = 0
    for _ in range(5000):
        b = bytearray(good)
        for _ in range(rnd.randint(1, 3)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        try:
            delta = decode_delta(bytes(b))
        except CrdtDecodeError:
            continue
        accepted += 1
        State("z").apply(delta)
    assert accepted > 0


# --- convergence of the model under random histories --------------------------------------------

NODES = ("a", "b", "c")
state_ops = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 7), st.integers(0, 2), st.booleans()), max_size=40
)


@settings(max_examples=150, deadline=None)
@given(state_ops, st.integers(0, 2**32), st.sampled_from([0.0, 0.3, 0.8]))
def test_replicas_converge_under_loss_reordering_and_duplication(
    history: list[tuple[int, int, int, bool]], seed: int, loss: float
) -> None:
    rnd = random.Random(seed)
    states = {n: State(n) for n in NODES}
    queue: list[tuple[str, Delta]] = []
    for step, (who, kind, o, flag) in enumerate(history):
        n = NODES[who]
        s = states[n]
        oid = f"o{o}"
        if kind == 0:
            d = s.declare(
                spec(oid, interval="20s" if flag else "10s"),
                n,
                "api" if flag else "config",
                ts(step, n),
            )
        elif kind == 1:
            d = s.retract(oid, rnd.choice(NODES), "api" if flag else "config")
        elif kind <= 4:
            d = s.observe(
                oid, n, "up" if flag else "down", ts(step, n), "<10ms" if flag else None, ""
            )
        elif kind == 5:
            d = s.remove_observation(oid, rnd.choice(NODES))
        elif kind == 6:
            d = s.reap([rnd.choice(NODES)])
        else:
            d = None
            if queue:
                dst, dd = queue.pop(rnd.randrange(len(queue)))
                states[dst].apply(dd)
        if d is not None:
            wire = decode_delta(encode_delta(d))  # and the codec is in the loop
            for other in NODES:
                if other != n and rnd.random() >= loss:
                    queue += [(other, wire)] * (2 if rnd.random() < 0.2 else 1)
    rnd.shuffle(queue)
    for dst, dd in queue:
        states[dst].apply(dd)
    sync(*states.values())
    a, b, c = states.values()
    assert a == b == c
    assert a.catalogue() == b.catalogue() == c.catalogue()
    for oid in a.origins() | b.origins():
        assert a.verdict(oid, NODES) == b.verdict(oid, NODES) == c.verdict(oid, NODES)
        assert a.observations(oid) == c.observations(oid)
    assert all(isinstance(v, Declaration) for n in NODES for _, _, v in a.declarations("o1"))


# --- forward compatibility: a newer agent's spec keys -----------------------------------------


def test_a_peer_spec_with_a_key_this_agent_does_not_know_is_taken_and_passed_on() -> None:
    """A newer agent may add spec keys. Refusing one would refuse the whole delta (every
    origin and observation in it), so a peer's spec is taken without the key, the key is
    counted, and it is kept when the spec is passed on; the API and config stay strict."""
    from agent.domain import ConfigError
    from agent.node.state import UNKNOWN_SPEC_KEYS

    a, b, c = State("a"), State("b"), State("c")
    delta = a.declare(spec(), "a", "config", ts(1, "a"))
    assert delta is not None
    raw = encode_delta(delta)
    # what a newer agent would send: the same spec with a key this one does not know
    plain = spec().to_dict()
    newer = raw.replace(_packed_table(plain), _packed_table({**plain, "weight_hint": [1, 2]}))
    assert newer != raw
    before = UNKNOWN_SPEC_KEYS.count
    b.apply(decode_delta(newer))
    assert UNKNOWN_SPEC_KEYS.count == before + 1
    got = b.catalogue()["shop"]
    assert got.peer_extra == (("weight_hint", [1, 2]),)
    assert replace(got, peer_extra=()) == spec()
    # passed on (anti-entropy re-encodes what b holds): c gets the key back, unchanged
    c.apply(decode_delta(encode_delta(b.delta_for(c.state_digest()))))
    assert c.catalogue()["shop"].peer_extra == (("weight_hint", [1, 2]),)
    # the API's and the config's reading of the same table refuse the key
    with pytest.raises(ConfigError, match="weight_hint: unknown key"):
        parse_origin({**plain, "weight_hint": [1, 2]})


def test_a_peer_spec_with_a_bad_known_key_is_still_refused() -> None:
    """Tolerance is for keys this agent does not know, not for bad values of known ones."""
    delta = State("a").declare(spec(), "a", "config", ts(1, "a"))
    assert delta is not None
    raw = encode_delta(delta)
    plain = spec().to_dict()
    bad = raw.replace(_packed_table(plain), _packed_table({**plain, "fail_open": "no"}))
    with pytest.raises(CrdtDecodeError, match="fail_open"):
        decode_delta(bad)


def test_address_and_fail_open_survive_the_encoding() -> None:
    """The new keys travel, and canonical_spec keeps them as the peers decode them."""
    s = spec(address="10.0.0.5:8443", fail_open=False)
    assert canonical_spec(s) is s  # no parse again: it survives for certain
    a, b = State("a"), State("b")
    b.apply(decode_delta(encode_delta(a.declare(s, "a", "config", ts(1, "a")) or a.crdt)))
    assert b.catalogue()["shop"] == s
    assert (b.catalogue()["shop"].address, b.catalogue()["shop"].fail_open) == (
        "10.0.0.5:8443",
        False,
    )


def _packed_table(d: dict[str, object]) -> bytes:
    import msgpack

    return bytes(msgpack.packb(d))
