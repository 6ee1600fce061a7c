"""The per-origin check state machine: results in, transitions out (sans-I/O).

Nothing here opens a socket, sleeps or reads a clock: every result carries the
time it was taken (``at``), and scheduling helpers take their randomness as an
argument, so the engine, the tests and a whole-fleet simulation drive exactly the
same code deterministically.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from enum import StrEnum

from agent.domain import OriginSpec

#: Each delay is stretched or shrunk by up to this fraction, so origins that share an
#: interval drift apart instead of firing in lock-step after a restart or reload.
JITTER = 0.1


class Status(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome. ``at`` is on the engine's monotonic clock, not wall time."""

    ok: bool
    latency: float
    reason: str
    at: float
    status_code: int | None = None
    tls_expiry_days: float | None = None
    #: the certificate's notAfter, POSIX seconds (the metric's base unit)
    tls_not_after: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of status, with the result that caused it (its reason and latency)."""

    origin_id: str
    old: Status
    new: Status
    reason: str
    latency: float
    at: float


class OriginState:
    """Rise/fall bookkeeping for one origin.

    Semantics:

    * A new origin is ``unknown``. Its FIRST result decides at once (up on a success,
      down on a failure), so a freshly started node has an answer after one probe
      rather than after ``rise`` or ``fall`` intervals.
    * From then on, HAProxy's rules: ``fall`` consecutive failures take an ``up``
      origin ``down``; ``rise`` consecutive successes bring a ``down`` origin ``up``.
      A success resets the failure streak and a failure resets the success streak,
      so an origin that alternates never changes status.

    ``rise`` and ``fall`` are attributes so a reload that changes only them keeps the
    current status and streaks.
    """

    __slots__ = (
        "failures",
        "fall",
        "last",
        "origin_id",
        "rise",
        "since",
        "status",
        "successes",
        "tls_expiry_days",
    )

    def __init__(self, origin_id: str, *, rise: int = 2, fall: int = 3) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.origin_id = origin_id
        self.rise = rise
        self.fall = fall
        self.status = Status.UNKNOWN
        self.last: ProbeResult | None = None
        self.successes = 0  # consecutive, ended by the next failure
        self.failures = 0  # consecutive, ended by the next success
        self.since: float | None = None  # `at` of the result that set the current status
        self.tls_expiry_days: float | None = None

    @classmethod
    def for_spec(cls, spec: OriginSpec) -> OriginState:
        return cls(spec.id, rise=spec.rise, fall=spec.fall)

    def record(self, result: ProbeResult) -> Transition | None:
        """Account for one result; return the Transition it causes, if any."""
        self.last = result
        if result.tls_expiry_days is not None:
            self.tls_expiry_days = result.tls_expiry_days
        old = self.status
        if result.ok:
            self.successes += 1
            self.failures = 0
            flip = old is Status.UNKNOWN or (old is Status.DOWN and self.successes >= self.rise)
            new = Status.UP
        else:
            self.failures += 1
            self.successes = 0
            flip = old is Status.UNKNOWN or (old is Status.UP and self.failures >= self.fall)
            new = Status.DOWN
        if not flip:
            return None
        self.status = new
        self.since = result.at
        return Transition(self.origin_id, old, new, result.reason, result.latency, result.at)

    def next_delay(self, spec: OriginSpec, rng: random.Random) -> float:
        """Seconds until the next probe: the interval (down_interval while down), jittered.

        Deterministic given ``rng``'s state.
        """
        return jittered(self.interval(spec), rng)

    def interval(self, spec: OriginSpec) -> float:
        """The interval in force, unjittered: down_interval while down, else interval."""
        return spec.effective_down_interval if self.status is Status.DOWN else spec.interval


def jittered(base: float, rng: random.Random, jitter: float = JITTER) -> float:
    """``base`` scaled by a uniform factor in [1 - jitter, 1 + jitter]."""
    return base * (1.0 + jitter * (2.0 * rng.random() - 1.0))


def stable_fraction(key: str) -> float:
    """A fraction in [0, 1) from ``key``, the same in every process and on every node.

    Python's ``hash()`` is salted per process, so it cannot be used: a restart would
    reshuffle every origin's phase.
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def initial_delay(spec: OriginSpec, origin_id: str | None = None) -> float:
    """Delay before an origin's first probe: its id's stable phase within the interval.

    10,000 origins configured at once are thus spread uniformly over one interval
    instead of all firing together, and each keeps the same phase across restarts.
    """
    return stable_fraction(spec.id if origin_id is None else origin_id) * spec.interval
