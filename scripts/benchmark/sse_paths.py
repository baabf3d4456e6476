"""
Server CPU per delivered SSE event: sse-starlette's ``EventSourceResponse`` against
plain ASGI ``http.response.body`` sends (the path ``quotes_server.sse`` takes).

Both serve pre-built event bytes the same way ``SseStream`` does: every 10 ms one
round of 5 events goes to every client, whose writer is woken by an event and sends
what is pending as one chunk. uvicorn (httptools, uvloop) runs in this process; the
clients are raw sockets in a child process. Prints the server's CPU seconds
(``process_time``) per delivered event and per write::

    .tools/bin/uv run --with 'sse-starlette>=3' python scripts/benchmark/sse_paths.py lean
    .tools/bin/uv run --with 'sse-starlette>=3' python scripts/benchmark/sse_paths.py starlette

``N`` (clients, default 500) and ``SECS`` (default 8) are environment variables.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import uvicorn

N = int(os.environ.get("N", "500"))
SECONDS = float(os.environ.get("SECS", "8"))
PER_ROUND = 5
EVENT = (
    b'id: e1:11\ndata: {"ticker":"AAPL","timestamp":"2026-12-07T00:39:56.978021Z",'
    b'"open":269.37,"high":269.37,"low":269.18,"close":269.18,"volume":15300,'
    b'"bid":269.13,"ask":269.23,"seq":11,"epoch":"e1"}\n\n'
)
ROUND = EVENT * PER_ROUND
HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
clients: list[tuple[asyncio.Event, list[bytes]]] = []

CLIENT = r"""
import asyncio, sys
async def one(port):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
    while await r.read(1 << 16):
        pass
async def main(n, port):
    await asyncio.gather(*(one(port) for _ in range(n)), return_exceptions=True)
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


async def lean(scope: Any, receive: Any, send: Any) -> None:
    """Plain ASGI: the head, then one ``more_body`` send per wake-up."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    wake, pending = asyncio.Event(), []
    clients.append((wake, pending))
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})

    async def writer() -> None:
        while True:
            await wake.wait()
            wake.clear()
            data = b"".join(pending)
            pending.clear()
            await send({"type": "http.response.body", "body": data, "more_body": True})

    task = asyncio.create_task(writer())
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        task.cancel()


def starlette_app() -> Any:
    """sse-starlette: an async generator of the same chunks, its keepalive as a ping."""
    from sse_starlette import EventSourceResponse, ServerSentEvent
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def endpoint(_request: Any) -> EventSourceResponse:
        wake, pending = asyncio.Event(), []
        clients.append((wake, pending))

        async def chunks() -> Any:
            yield b"retry: 1000\n\n"
            while True:
                await wake.wait()
                wake.clear()
                data = b"".join(pending)
                pending.clear()
                yield data

        return EventSourceResponse(
            chunks(),
            ping=10,
            sep="\n",
            headers={"Cache-Control": "no-cache"},
            ping_message_factory=lambda: ServerSentEvent(comment="keepalive"),
        )

    return Starlette(routes=[Route("/sse", endpoint)])


async def main(kind: str) -> None:
    app = lean if kind == "lean" else starlette_app()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http="httptools", loop="uvloop", log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn signals nothing)
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    readers = subprocess.Popen([sys.executable, "-c", CLIENT, str(N), str(port)])  # noqa: ASYNC220
    while len(clients) < N:  # noqa: ASYNC110 (clients of another process)
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)
    rounds = int(SECONDS * 100)
    cpu0, t0 = time.process_time(), time.monotonic()
    for i in range(rounds):
        for wake, pending in clients:
            pending.append(ROUND)
            wake.set()
        await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.01 - time.monotonic()))
    await asyncio.sleep(0.5)
    cpu = time.process_time() - cpu0
    delivered = rounds * PER_ROUND * N
    print(
        f"{kind}: {N} clients, {delivered} events, {cpu:.2f} s CPU: "
        f"{cpu / delivered * 1e6:.2f} us/event, {cpu / (rounds * N) * 1e6:.1f} us/write"
    )
    readers.kill()
    server.should_exit = True
    await serving


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "lean"))
