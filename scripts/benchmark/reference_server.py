"""
The reference: a deliberately ordinary FastAPI quote server, as tutorials write it.

It exists only so the benchmark can compare our server against what most Python
code for this job looks like, in the same run on the same machine. It is never
imported by the product packages and is not meant to be improved: its costs are
the point.

What it does, per WebSocket connection (``--fanout subscription``, the default):
accept, open **its own** Redis Pub/Sub subscription to the channel, and for every
message ``json.loads`` it, check the ticker against the connection's filter and
``await websocket.send_json(...)``. With ``--fanout queue`` it is shaped like
encode/broadcaster instead: one subscription per process puts every raw message
into an unbounded ``asyncio.Queue`` per connection, and each connection's task
parses, filters and sends.

Same surface as the contract where the benchmark needs it: ``/ws/quotes``, ``/ws``,
``/v1/ws/quotes``, ``/v1/ws`` with ``?tickers=A,B`` (omitted or ``*``: all), and
``GET /health``. Run::

    uv run python scripts/benchmark/reference_server.py --port 8001 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

PATHS = ("/ws/quotes", "/ws", "/v1/ws/quotes", "/v1/ws")


def parse_tickers(raw: str | None) -> set[str] | None:
    """``None`` means every ticker."""
    if not raw:
        return None
    wanted = {t.strip().upper() for t in raw.split(",") if t.strip()}
    if not wanted or "*" in wanted:
        return None
    return wanted


def create_app(redis_url: str, channel: str, fanout: str) -> FastAPI:
    """Build the reference app."""
    queues: set[asyncio.Queue[str]] = set()

    async def broadcast(client: aioredis.Redis) -> None:
        pubsub = client.pubsub()
        await pubsub.subscribe(channel)
        async for message in pubsub.listen():
            if message["type"] == "message":
                for q in list(queues):
                    q.put_nowait(message["data"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One pooled connection per subscriber: lift redis-py's default cap of 100.
        app.state.redis = aioredis.from_url(
            redis_url, decode_responses=True, max_connections=20_000
        )
        task = asyncio.create_task(broadcast(app.state.redis)) if fanout == "queue" else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app.state.redis.aclose()

    app = FastAPI(title="reference quote server", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": "0.1.0", "repository": "reference"}

    async def from_subscription(websocket: WebSocket, wanted: set[str] | None) -> None:
        pubsub = websocket.app.state.redis.pubsub()
        await pubsub.subscribe(channel)
        try:
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                data = json.loads(message["data"])
                if wanted is None or data["ticker"].upper() in wanted:
                    await websocket.send_json(data)
        finally:
            await pubsub.unsubscribe(channel)
            await pubsub.aclose()

    async def from_queue(websocket: WebSocket, wanted: set[str] | None) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        queues.add(queue)
        try:
            while True:
                data = json.loads(await queue.get())
                if wanted is None or data["ticker"].upper() in wanted:
                    await websocket.send_json(data)
        finally:
            queues.discard(queue)

    async def until_disconnect(websocket: WebSocket) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return

    async def quotes(websocket: WebSocket) -> None:
        wanted = parse_tickers(websocket.query_params.get("tickers"))
        await websocket.accept()
        forward = from_subscription if fanout == "subscription" else from_queue
        tasks = [
            asyncio.create_task(forward(websocket, wanted)),
            asyncio.create_task(until_disconnect(websocket)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                    await t

    for path in PATHS:
        app.add_api_websocket_route(path, quotes)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the reference app with uvicorn's defaults (uvloop and httptools when installed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--channel", default="quotes.realtime")
    parser.add_argument("--fanout", choices=("subscription", "queue"), default="subscription")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    app: Any = create_app(args.redis_url, args.channel, args.fanout)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
