"""One POST to a receiver that may be down, slow or refusing: webhooks and Alertmanager.

Both only need to know whether the receiver took it, and if not, why in a few words
for the log and the retry; a failed delivery is the receiver's state, never ours to raise.
"""

from __future__ import annotations

import aiohttp

#: what a receiver (or the network to it) can do to a POST; anything else is our bug
FAILURES = (aiohttp.ClientError, TimeoutError, OSError, ValueError)


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: str,
    headers: dict[str, str],
    timeout: float,
    *,
    detail: bool = False,
) -> str | None:
    """None if the receiver answered 2xx; else why not: ``HTTP <status>`` (followed by the
    start of its answer when ``detail``, where the receiver says what it refused) or the
    connection's error. The answer is read to its end so the connection can be reused."""
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            text = ""
            try:
                if detail:
                    text = await resp.text()
                else:
                    await resp.read()
            except FAILURES:
                pass  # the status is the answer; an unreadable body adds nothing to it
            if 200 <= resp.status < 300:
                return None
            return f"HTTP {resp.status} {text[:200].strip()}".strip()
    except FAILURES as e:
        return str(e) or type(e).__name__
