"""
How the client reaches the stream: a WebSocket, or Server-Sent Events.

The connection loop (:class:`~quotes_client.loop.ConnectionLoop`) sees one
:class:`Connection`: frames in (the WebSocket's text frames, or each SSE event as the
frame the WebSocket would have sent), actions out (WebSocket only), and how it ended,
as an :class:`~quotes_client.policy.Outcome`. A :data:`Connector` opens one; the URL's
scheme picks it (:func:`connector_for`): ``ws://``/``wss://`` the WebSocket,
``http://``/``https://`` the server's SSE endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Protocol, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from quotes_client.policy import Outcome, classify_close

__all__ = [
    "Connection",
    "Connector",
    "WebSocketConnection",
    "close_politely",
    "connector_for",
    "is_sse_url",
]


class Connection(Protocol):
    """One open connection to the stream."""

    one_way: bool
    """True when the client cannot send (SSE): a filter change reconnects."""
    closed_errors: tuple[type[BaseException], ...]
    """What :meth:`recv` and :meth:`send` raise when the connection has ended."""

    def recv(self) -> Awaitable[bytes | None]:
        """The next frame's bytes, or ``None`` for liveness without a message."""
        ...

    async def send(self, text: str) -> None:
        """Send an action (a text frame)."""
        ...

    def ended(self, exc: BaseException, renews_token: bool) -> Outcome:
        """The outcome of one of :attr:`closed_errors` (see :mod:`quotes_client.policy`)."""
        ...

    async def close(self, reason: str) -> None:
        """Close it (the client's own decision), discarding what is still queued."""
        ...


Connector = Callable[[str, Mapping[str, str]], Awaitable[Connection]]
"""Opens a connection to a URL with these request headers (``Authorization`` ...)."""


def is_sse_url(url: str) -> bool:
    """True for an ``http://`` or ``https://`` URL (the server's SSE endpoint)."""
    return url.lower().startswith(("http://", "https://"))


class WebSocketConnection:
    """An open ``websockets`` connection as a :class:`Connection`."""

    one_way = False
    closed_errors: tuple[type[BaseException], ...] = (ConnectionClosed,)

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.recv = cast(Callable[[], Awaitable[bytes]], partial(ws.recv, decode=False))

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    def ended(self, exc: BaseException, renews_token: bool) -> Outcome:
        assert isinstance(exc, ConnectionClosed)
        return classify_close(exc, renews_token)

    async def close(self, reason: str) -> None:
        await close_politely(self.ws, reason)


def connector_for(
    url: str,
    *,
    websocket_options: Mapping[str, Any],
    open_timeout: float | None,
    client_options: Mapping[str, Any] | None,
) -> Connector:
    """
    The connector for ``url``'s scheme.

    Args:
        url: the stream's URL.
        websocket_options: ``websockets.asyncio.client.connect``'s arguments (WebSocket).
        open_timeout: seconds allowed to open an SSE stream (the WebSocket's is in
            ``websocket_options``).
        client_options: ``httpx.AsyncClient``'s arguments (SSE).
    """
    if is_sse_url(url):

        async def open_sse_stream(target: str, headers: Mapping[str, str]) -> Connection:
            from quotes_client.sse import open_sse  # httpx is imported only when used

            return await open_sse(
                target, headers, open_timeout=open_timeout, client_options=client_options
            )

        return open_sse_stream

    async def open_websocket(target: str, headers: Mapping[str, str]) -> Connection:
        ws = await connect(target, additional_headers=dict(headers) or None, **websocket_options)
        return WebSocketConnection(ws)

    return open_websocket


async def close_politely(ws: ClientConnection, reason: str) -> None:
    """
    Close with 1000, discarding what is still queued.

    The server's close frame arrives behind the data already in flight; when the
    reader stopped reading (``"block"``, or cancelled), the library's queue is
    full and would never reach it, so ``close()`` would wait ``close_timeout``.
    """

    async def discard() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv(decode=False)

    drain = asyncio.get_running_loop().create_task(discard())
    try:
        await ws.close(1000, reason)
    finally:
        drain.cancel()
        if ws.state is not State.CLOSED:  # close() itself was cancelled
            ws.transport.abort()
