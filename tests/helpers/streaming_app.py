"""
An ASGI app with a long streaming response, behind ``QuotesHttpProtocol`` limits of 1 s.

It stands in for an endpoint that streams for hours (server-sent events) to show
that the request deadline bounds receiving a request, never its response: run with
``uvicorn tests.helpers.streaming_app:app --http quotes_server.http_protocol:QuotesHttpProtocol``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from quotes_server.limits import LIMITS_STATE_KEY, ProtocolLimits

DEADLINE = 1.0
"""The handshake and request deadlines this app gives its protocol, in seconds."""
TICKS = 8
"""Chunks ``/stream`` sends, :data:`TICK` apart: four times the deadline in all."""
TICK = DEADLINE / 2


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        while message["type"] != "lifespan.shutdown":
            scope["state"][LIMITS_STATE_KEY] = ProtocolLimits(
                handshake_timeout=DEADLINE, request_timeout=DEADLINE
            )
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] != "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(TICKS):
        await send({"type": "http.response.body", "body": b"tick %d\n" % i, "more_body": True})
        await asyncio.sleep(TICK)  # the pace of the stream, not a synchronisation
    await send({"type": "http.response.body", "body": b"end\n"})
