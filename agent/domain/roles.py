"""The ``role`` tag that tells edge-agent nodes from other members (a stock Serf agent
may sit in the cluster: it is a member, but checks nothing and gets no direct messages)."""

ROLE = "edge-agent"
