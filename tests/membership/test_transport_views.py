"""MembershipNode's own views: what the cluster shell reads without reaching into the core."""

from __future__ import annotations

from agent.membership import MembershipNode


async def test_the_node_answers_views_before_and_after_start() -> None:
    """What cluster.py reads without reaching into the core (node.core.health_score)."""
    node = MembershipNode("a", ("127.0.0.1", 0))
    assert not node.running and node.health_score == 0 and node.incarnation == 0
    assert node.members() == [] and node.stale_views == 0
    await node.start()
    try:
        assert node.running and node.incarnation == 1 and node.health_score == 0
        assert [m.name for m in node.members()] == ["a"]
    finally:
        await node.stop()
