"""The simulator's codec memo (CodecMemo) is exact: a run with it is the run without it.

It caches codec.compress_if_smaller, decompress_buffer and decode_message by their input
while the simulator runs its nodes; every datagram still goes through compound, CRC,
AES-GCM and the decoder's walk. Same seed, memo on or off: the same events at the same times, the
same packets and bytes on the wire.
"""

from __future__ import annotations

import gc

from agent.membership import codec
from agent.membership.settings import Settings
from agent.membership.simulator import Simulator


def lossy_run(memo: bool, freeze_every: float = 0.0) -> Simulator:
    # tags long and repetitive enough that LZW wins: alive gossip goes compressed
    tags = b"role=edge;site=lab-1;rack=a;" * 6
    settings = Settings(push_pull_interval=0)
    sim = Simulator(24, seed=11, settings=settings, memo=memo, meta=tags, freeze_every=freeze_every)
    sim.converge()
    sim.run_for(2.0)
    sim.loss = 0.05
    sim.stall("n0005", 4.0)  # suspected, then refutes: suspect and alive gossip
    sim.run_for(6.0)
    sim.kill("n0009")
    sim.nodes["n0003"].endpoint.update_meta(b"v1", sim.now)
    sim.flush("n0003")
    sim.run_for(20.0)
    return sim


def test_memo_changes_nothing_a_run_does() -> None:
    on, off = lossy_run(True), lossy_run(False)
    assert on.observed == off.observed
    assert any(o.kind == "suspect" for o in on.observed)
    assert any(o.kind == "dead" and o.member == "n0009" for o in on.observed)
    assert (on.packets_sent, on.bytes_sent) == (off.packets_sent, off.bytes_sent)
    assert on.bad_input() == off.bad_input() == {}
    for name, node in on.nodes.items():
        assert on.view(name) == off.view(name)
        assert node.core.incarnation == off.nodes[name].core.incarnation
    assert on.memo is not None and off.memo is None
    # the memo is used (if the codec stops calling these by their module names it is
    # not, and the simulator is slower: this says so) ...
    assert on.memo.hits > on.memo.calls // 4 > 0
    assert all(on.memo.hits_by.values()), on.memo.hits_by
    # ... and only while the simulator runs
    assert codec.compress_if_smaller.__module__ == "agent.membership.codec"
    assert codec.decode_message.__module__ == "agent.membership.codec"
    assert codec.decompress_buffer.__module__ == "agent.membership.codec"


def test_memo_caches_no_errors_and_nests() -> None:
    sim = Simulator(2, seed=1)
    assert sim.memo is not None
    with sim.memo:
        with sim.memo:  # a hook that flushes inside a run
            pass
        assert codec.compress_if_smaller.__module__ == "agent.membership.simulator"
        assert codec.decompress_buffer.__module__ == "agent.membership.simulator"
        for _ in range(2):  # raises each time: nothing cached
            try:
                codec.decode_message(b"")
            except Exception as e:
                assert type(e).__name__ == "DecodeError"
            else:
                raise AssertionError("an empty message decoded")
        assert codec.decode_message(b"\x02" + b"\x80") == codec.decode_message(b"\x02\x80")
    assert codec.decode_message.__module__ == "agent.membership.codec"
    assert codec.decompress_buffer.__module__ == "agent.membership.codec"


def test_freezing_the_survivors_changes_nothing_a_run_does() -> None:
    """freeze_every: the young generations collected and the survivors frozen every
    simulated second (bench/simulate.py), so the collector never walks them again."""
    before = gc.get_freeze_count()
    try:
        frozen = lossy_run(True, freeze_every=1.0)
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
    plain = lossy_run(True)
    assert frozen.observed == plain.observed
    assert (frozen.packets_sent, frozen.bytes_sent) == (plain.packets_sent, plain.bytes_sent)
