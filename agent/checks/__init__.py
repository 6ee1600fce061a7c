"""Origin health checks: the rise/fall state machine, the probes and the engine.

``state`` is sans-I/O (results in, transitions out); ``probes`` does the network I/O
of one check; ``engine`` schedules probes for many origins within one concurrency bound;
``history`` (sans-I/O) keeps the last hour of their latency for the dashboard.
"""

from .engine import CheckEngine, OriginView
from .history import LatencyHistory, Series
from .probes import make_session, probe, probe_http, probe_tcp
from .state import OriginState, ProbeResult, Status, Transition, initial_delay

__all__ = [
    "CheckEngine",
    "LatencyHistory",
    "OriginState",
    "OriginView",
    "ProbeResult",
    "Series",
    "Status",
    "Transition",
    "initial_delay",
    "make_session",
    "probe",
    "probe_http",
    "probe_tcp",
]
