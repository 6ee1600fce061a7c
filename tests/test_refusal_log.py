"""The refused-peer log's rate limit, with a hand-held clock (agent/shell/refusal_log.py)."""

from __future__ import annotations

from agent.membership import PEER_REFUSALS
from agent.shell.refusal_log import ADVICE, INTERVAL, RefusalLog

PEER = ("10.0.0.7", 7946)


def test_once_per_host_and_cause_then_again_after_the_interval_with_a_count() -> None:
    r = RefusalLog()
    first = r.line("decrypt_failed", "no installed key", PEER, 0.0)
    assert first is not None
    assert "10.0.0.7:7946" in first and "decrypt_failed" in first
    assert "check [cluster] keyring_file" in first
    # the same host on other ports (TCP source ports) within the interval: silent
    assert [r.line("decrypt_failed", "", ("10.0.0.7", p), 1.0 + p) for p in range(5)] == [None] * 5
    again = r.line("decrypt_failed", "", PEER, INTERVAL)
    assert again is not None and "(5 more from 10.0.0.7 since the last such line)" in again
    assert r.line("decrypt_failed", "", PEER, INTERVAL + 1) is None


def test_another_cause_or_host_is_its_own_line() -> None:
    r = RefusalLog()
    assert r.line("decrypt_failed", "", PEER, 0.0) is not None
    assert r.line("incompatible", "delegate version 9", PEER, 0.0) is not None
    assert r.line("decrypt_failed", "", ("10.0.0.8", 7946), 0.0) is not None
    assert r.line("incompatible", "", PEER, 1.0) is None


def test_a_quiet_peer_is_logged_without_a_count_when_it_comes_back() -> None:
    r = RefusalLog(interval=10.0)
    r.line("not_encrypted", "", PEER, 0.0)
    line = r.line("not_encrypted", "", PEER, 50.0)
    assert line is not None and "more from" not in line


def test_every_peer_refusal_has_advice() -> None:
    assert set(ADVICE) == PEER_REFUSALS
    for kind in PEER_REFUSALS:
        line = RefusalLog().line(kind, "", PEER, 0.0)
        assert line is not None and line.count(";") == 1 and line.endswith(ADVICE[kind][1])


def test_a_flood_of_hosts_is_bounded() -> None:
    r = RefusalLog(interval=10.0, limit=4)
    assert all(r.line("decrypt_failed", "", (f"10.0.1.{i}", 1), 0.0) for i in range(4))
    assert r.line("decrypt_failed", "", ("10.0.1.9", 1), 1.0) is None  # full of recent keys
    assert r.line("decrypt_failed", "", ("10.0.1.9", 1), 11.0) is not None  # old ones pruned
