"""The node's own health: one status with the reasons behind it.

Several parts can make a node unhealthy (a port it cannot bind, a storage fault,
a name conflict); each sets or clears its own named condition here, and the
status is derived, so no part can clear another's problem by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class HealthStatus(StrEnum):
    STARTING = "starting"
    OK = "ok"
    DEGRADED = "degraded"  # working, with a fault an operator should see
    FAILING = "failing"  # not doing its job


@dataclass
class Health:
    ready: bool = False
    failing: dict[str, str] = field(default_factory=dict)
    degraded: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> HealthStatus:
        if self.failing:
            return HealthStatus.FAILING
        if not self.ready:
            return HealthStatus.STARTING
        if self.degraded:
            return HealthStatus.DEGRADED
        return HealthStatus.OK

    def fail(self, what: str, reason: str) -> None:
        self.failing[what] = reason

    def degrade(self, what: str, reason: str) -> None:
        self.degraded[what] = reason

    def clear(self, what: str) -> None:
        self.failing.pop(what, None)
        self.degraded.pop(what, None)

    def reasons(self) -> list[str]:
        return [f"{k}: {v}" for k, v in {**self.failing, **self.degraded}.items()]
