"""
Test doubles with real sockets: tiny WebSocket servers, a recording sleep, a fake clock.

The servers are ``websockets.asyncio.server.serve`` on 127.0.0.1 with a scripted
handler per connection, so a test can send garbage, close with any code or
answer the handshake with any HTTP status. Nothing here is a mock of the
client's transport: the client under test speaks real WebSocket over TCP.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import Process
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from quotes_client import QuotesClient
from quotes_core import Quote
from tests.helpers.processes import eventually as poll_until
from tests.helpers.processes import resp

Handler = Callable[[ServerConnection, int], Awaitable[None]]
"""A scripted connection: ``(websocket, index)`` where index counts from 0."""

Rejection = tuple[int, str] | tuple[int, str, dict[str, str]]
"""An HTTP answer to the handshake: status, body and optional headers."""


def noise(n: int) -> str:
    """``n`` random hex characters: a field no per-message compression can shrink."""
    return os.urandom(n // 2 + 1).hex()[:n]


async def hold_open(ws: ServerConnection, index: int) -> None:
    """Default handler: keep the connection open until the client leaves."""
    await ws.wait_closed()


def send_then_hold(*messages: str | bytes) -> Handler:
    """A handler that sends ``messages`` then keeps the connection open."""

    async def handler(ws: ServerConnection, index: int) -> None:
        for message in messages:
            await ws.send(message)
        await ws.wait_closed()

    return handler


@dataclass
class StreamServer:
    """
    A scripted WebSocket server on 127.0.0.1 (use as ``async with``).

    Attributes:
        handler: runs for each accepted connection.
        reject: called with the request index; an HTTP answer rejects the handshake.
        port: 0 picks a free port.
        requests: every handshake request received, in order.
        connections: every accepted connection, in order.
    """

    handler: Handler = hold_open
    reject: Callable[[int], Rejection | None] | None = None
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    connections: list[ServerConnection] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    _server: Server | None = None

    def url(self, path: str = "/ws/quotes") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> StreamServer:
        self._server = await serve(
            self._handle, "127.0.0.1", self.port, process_request=self._process_request
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        index = len(self.requests)
        self.requests.append(request)
        answer = self.reject(index) if self.reject else None
        if answer is None:
            return None
        status, body, *rest = answer
        response = ws.respond(status, body)
        for name, value in (rest[0] if rest else {}).items():
            response.headers[name] = value
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        index = len(self.connections)
        self.connections.append(ws)
        try:
            await self.handler(ws, index)
        finally:
            self.close_codes.append(ws.close_code)


class RecordingSleep:
    """
    An injectable backoff sleep: records every delay and never waits on a clock.

    With ``gated=True`` each call waits until the test calls :meth:`release`, so
    the test decides when the client's next attempt happens.
    """

    def __init__(self, gated: bool = False) -> None:
        self.delays: list[float] = []
        self.gated = gated
        self._permits = asyncio.Semaphore(0)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.gated:
            await self._permits.acquire()
        else:
            await asyncio.sleep(0)

    def release(self) -> None:
        self._permits.release()

    async def wait_calls(self, count: int, timeout: float = 10.0) -> None:
        await eventually(lambda: len(self.delays) >= count, timeout, f"{count} sleep calls")


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(
    condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until true; fail the test at the deadline."""
    await poll_until(condition, timeout=timeout, what=what)


def header(request: Request, name: str) -> str | None:
    """A request header by name (case-insensitive)."""
    headers: Headers = request.headers
    return headers.get(name)


class SilentTcpServer:
    """A TCP server that accepts connections and never answers (handshake timeouts)."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> SilentTcpServer:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)

        self._server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def publish_many(port: int, channel: str, messages: Iterable[str | bytes]) -> int:
    """``PUBLISH`` many messages to a Redis on ``port`` in one pipelined connection."""
    buf = bytearray()
    count = 0
    for message in messages:
        buf += resp("PUBLISH", channel, message)
        count += 1
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(bytes(buf))
        replies = b""
        while replies.count(b"\r\n") < count:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("redis closed the connection")
            replies += chunk
    if not all(line.startswith(b":") for line in replies.split(b"\r\n") if line):
        raise RuntimeError(f"PUBLISH failed: {replies[:200]!r}")
    return count


def events_of(kind: type, events: Iterable[Any]) -> list[Any]:
    """The events of one type, in order."""
    return [e for e in events if isinstance(e, kind)]


async def take(client: QuotesClient, count: int, timeout: float = 10.0) -> list[Quote]:
    """The client's next ``count`` quotes, or fail at the deadline."""
    got: list[Quote] = []
    with anyio.fail_after(timeout):
        async for quote in client:
            got.append(quote)
            if len(got) == count:
                break
    return got


async def read_lines(process: Process, count: int, timeout: float = 20.0) -> list[str]:
    """The first ``count`` lines the process writes to stdout."""
    assert process.stdout is not None
    data = b""
    with anyio.fail_after(timeout):
        while data.count(b"\n") < count:
            data += await process.stdout.receive()
    return data.decode().splitlines()[:count]


async def stderr_of(process: Process) -> str:
    assert process.stderr is not None
    chunks = [chunk async for chunk in process.stderr]
    return b"".join(chunks).decode()
