"""
The server's uvicorn protocols, in this process: a real uvicorn on a loopback
socket, a real ``websockets`` client, and the protocol objects themselves in reach.

A closed connection must be freed by reference counting alone. With thousands of
clients reconnecting, each one left to the cyclic collector is a protocol, a
parser, a scope and buffers that wait for the next full collection (the soak's
saw-tooth of Python blocks and its slow RSS climb). The tests hold only weak
references and run with the cyclic collector off.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from quotes_server.app import create_app
from quotes_server.http_protocol import QuotesHttpProtocol
from quotes_server.limits import INBOUND_EXTENSION, InboundExtension
from quotes_server.protocol import QuotesWebSocketProtocol
from quotes_server.settings import Settings
from tests.helpers.processes import eventually
from tests.helpers.ws import ConnectionClosed, wait_closed

pytestmark = pytest.mark.anyio


CREATED: list[tuple[str, weakref.ref[Any]]] = []
"""The class and a weak reference of every protocol object the in-process servers made."""


class TrackedHttpProtocol(QuotesHttpProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        CREATED.append((type(self).__name__, weakref.ref(self)))


class TrackedWebSocketProtocol(QuotesWebSocketProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        CREATED.append((type(self).__name__, weakref.ref(self)))


class InProcessServer:
    """uvicorn serving the app with our protocols on a free loopback port of this process."""

    def __init__(self, server: uvicorn.Server, port: int) -> None:
        self.server = server
        self.port = port

    def url(self, query: str = "tickers=AAPL") -> str:
        return f"ws://127.0.0.1:{self.port}/ws/quotes?{query}"

    def websocket_protocols(self) -> list[QuotesWebSocketProtocol]:
        connections = self.server.server_state.connections
        return [p for p in connections if isinstance(p, QuotesWebSocketProtocol)]


@contextlib.asynccontextmanager
async def in_process_server(**settings: Any) -> AsyncIterator[InProcessServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(Settings(redis_url=None, demo=True, demo_rate=50.0, **settings))
    config = uvicorn.Config(
        app,
        http=TrackedHttpProtocol,
        ws=TrackedWebSocketProtocol,
        ws_max_size=65536,
        ws_per_message_deflate=False,
        proxy_headers=False,
        lifespan="on",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started, what="uvicorn started")
        yield InProcessServer(server, port)
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    CREATED.clear()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _live(refs: list[weakref.ref[Any]]) -> list[str]:
    return [type(obj).__qualname__ for ref in refs if (obj := ref()) is not None]


@pytest.mark.usefixtures("no_cyclic_gc")
async def test_a_closed_websocket_is_freed_without_the_cyclic_collector() -> None:
    async with in_process_server() as srv:
        async with connect(srv.url()) as ws:
            await ws.recv()
            # the HTTP protocol that read the upgrade request, and the WebSocket one
            assert [name for name, _ in CREATED] == [
                "TrackedHttpProtocol",
                "TrackedWebSocketProtocol",
            ]
            refs = [ref for _, ref in CREATED]
        await eventually(lambda: not srv.websocket_protocols(), what="the server saw the close")
        await eventually(lambda: not _live(refs), what=f"freed: still live {_live(refs)}")


@pytest.mark.usefixtures("no_cyclic_gc")
async def test_a_connection_closed_by_a_protocol_error_is_freed_too() -> None:
    # an oversize message: the parser closes with 1009 and keeps its error, whose
    # traceback refers to the parser
    async with in_process_server() as srv:
        async with connect(srv.url()) as ws:
            await ws.recv()
            refs = [ref for _, ref in CREATED]
            with contextlib.suppress(ConnectionClosed):
                await ws.send("x" * 100_000)
            closed = await wait_closed(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1009
        await eventually(lambda: not srv.websocket_protocols(), what="the server saw the close")
        await eventually(lambda: not _live(refs), what=f"freed: still live {_live(refs)}")


async def test_the_scope_extensions_answer_false_once_the_connection_is_gone() -> None:
    async with in_process_server() as srv:
        async with connect(srv.url()) as ws:
            await ws.recv()
            protocol = srv.websocket_protocols()[0]
            scope = protocol.scope
            inbound: InboundExtension = scope["extensions"][INBOUND_EXTENSION]
            assert inbound["charge"](1) is True
        await eventually(lambda: protocol.disconnected, what="the server saw the close")
        assert inbound["charge"](1) is False
        frames = scope["extensions"]["quotes.frames"]
        assert frames["write"](b"\x81\x00") is False
