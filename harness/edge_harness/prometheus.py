"""A real Prometheus (Debian's ``prometheus``) for tests: a private child with its own
config, TSDB directory and port (edge_harness/monitor.py), never the system's service.

``query`` asks its HTTP API (``/api/v1/query``), ``targets`` what it scrapes.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_harness.monitor import Child, Get, MonitorError

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def available() -> bool:
    return os.access(PROMETHEUS, os.X_OK)


class Prometheus(Child):
    name = "prometheus"

    def __init__(
        self,
        directory: Path,
        scrape_configs: list[dict[str, Any]],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 9090),
        interval: str = "1s",
        wrap: Sequence[str] = (),
        get: Get | None = None,
    ) -> None:
        super().__init__(directory, listen=listen, wrap=wrap, get=get)
        self.scrape_configs = scrape_configs
        self.interval = interval

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "scrape_configs": self.scrape_configs,
        }

    def argv(self) -> list[str]:
        return [
            PROMETHEUS,
            f"--config.file={self.cfg}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",
        ]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector: ``[{"metric": {...}, "value": [t, "v"]}]``."""
        status, body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise MonitorError(f"prometheus: query {expr!r} answered {status}: {body}")
        return list(body["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        """The active targets (``scrapeUrl``, ``health``, ``labels``, ``lastError``...)."""
        status, body = self.get("/api/v1/targets?state=active")
        if status != 200 or not isinstance(body, dict):
            raise MonitorError(f"prometheus: /api/v1/targets answered {status}: {body}")
        return list(body["data"]["activeTargets"])
