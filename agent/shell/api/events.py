"""Server-sent events for /v1/events: the dashboard's live feed.

A hub fans events out to every connected client through a bounded queue each. A client
that stops reading (a phone that went to sleep) does not grow the agent's memory: when
its queue is full it is disconnected, and EventSource reconnects and starts over from
the REST views. Publishing never blocks and costs nothing while nobody listens.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

QUEUE_LIMIT = 2000
KEEPALIVE = 15.0


class EventHub:
    def __init__(self) -> None:
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self.dropped_clients = 0
        self.on_listen: Callable[[], None] | None = None  # a client connected

    @property
    def listeners(self) -> int:
        return len(self._clients)

    def publish(self, event: str, data: Any) -> None:
        if not self._clients:
            return
        frame = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
        for q in list(self._clients):
            if q.qsize() >= QUEUE_LIMIT - 1:
                self._clients.discard(q)
                self.dropped_clients += 1
                q.put_nowait(None)  # the one slot kept free: tells the writer to hang up
            else:
                q.put_nowait(frame)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        q: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_LIMIT)
        self._clients.add(q)
        if self.on_listen is not None:
            self.on_listen()
        try:
            await resp.write(b"retry: 2000\n: connected\n\n")
            while True:
                try:
                    frame = await asyncio.wait_for(q.get(), KEEPALIVE)
                except TimeoutError:
                    frame = b": keepalive\n\n"
                if frame is None:
                    break
                await resp.write(frame)
        except ConnectionResetError:
            pass
        finally:
            self._clients.discard(q)
        return resp

    def close(self) -> None:
        for q in list(self._clients):
            q.put_nowait(None)
        self._clients.clear()
