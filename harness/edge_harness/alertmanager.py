"""A real Alertmanager (Debian's ``prometheus-alertmanager``) for tests: a private child
with its own config, storage directory and port (edge_harness/monitor.py), and its own
clustering turned off (``--cluster.listen-address=`` empty).

Its receiver is a webhook (``webhook_url``; the origin farm's ``POST /hook`` records what
it gets, edge_harness/farm.py), routed so that a duplicate would show: one group per
(alertname, origin), ``group_wait``/``group_interval`` of a second, and a
``repeat_interval`` of an hour, so the same notification is never repeated on purpose
within a test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_harness.monitor import Child, Get, MonitorError

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


def available() -> bool:
    return os.access(ALERTMANAGER, os.X_OK)


def route_config(
    webhook_url: str, group_by: Sequence[str] = ("alertname", "origin", "site")
) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "hook",
            "group_by": list(group_by),
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "hook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        ],
    }


class Alertmanager(Child):
    name = "alertmanager"

    def __init__(
        self,
        directory: Path,
        webhook_url: str,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 9093),
        wrap: Sequence[str] = (),
        get: Get | None = None,
    ) -> None:
        super().__init__(directory, listen=listen, wrap=wrap, get=get)
        self.webhook_url = webhook_url

    def config(self) -> dict[str, Any]:
        return route_config(self.webhook_url)

    def argv(self) -> list[str]:
        return [
            ALERTMANAGER,
            f"--config.file={self.cfg}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """Its alerts (``/api/v2/alerts``): labels, startsAt, endsAt, status.state."""
        status, body = self.get("/api/v2/alerts")
        if status != 200 or not isinstance(body, list):
            raise MonitorError(f"alertmanager: /api/v2/alerts answered {status}: {body}")
        return body
