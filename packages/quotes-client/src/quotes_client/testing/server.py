"""
``ScriptedServer``: a real WebSocket server on loopback that speaks the contract and
misbehaves on cue, for testing applications built on the stream.

It is assembled from the same pieces as ``quotes-server``: the handshake's
parameters are parsed by :mod:`quotes_core.query` (the same 400 reasons), quotes
fan out through a :class:`quotes_core.Hub` (the same filter, FIFO bound and
conflation) and are encoded once by :func:`quotes_core.encode_quote` (the same
text frames, byte for byte: no compression). There is no Redis: the test
publishes quotes itself, and can close, drop, refuse, stall or corrupt
connections in between.

It also speaks the stream protocol's opt-in shapes, from the same core pieces as
``quotes-server``: the options are parsed by :func:`quotes_core.parse_stream_options`;
every published quote gets the next ``seq`` of the current ``epoch`` and is recorded
in a :class:`quotes_core.History` and a :class:`quotes_core.Snapshot`; ``seq=1``
frames come from :func:`quotes_core.with_position`, ``since=`` and ``snapshot=1``
are answered by :func:`quotes_core.opening` (the ``recovered`` frame, then the bounded
replay or the snapshot, as ``quotes-server`` decides them), ``batch=1``
sends JSON arrays. :meth:`ScriptedServer.new_epoch` simulates an outage or restart.
Client actions are answered by :func:`quotes_core.answer`, as ``quotes-server``
answers them (and recorded in ``received``). Not scripted: ``max_hz`` (parsed, then
ignored).

Everything is observable and awaitable (``wait_connections``, ``drain``...), so
tests need no sleeps.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import websockets.http11
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from quotes_client.testing.connection import ScriptedConnection
from quotes_core import (
    DEFAULT_BOUND,
    DEFAULT_HISTORY_AGE,
    DEFAULT_HISTORY_SIZE,
    ClientError,
    History,
    Hub,
    Quote,
    Snapshot,
    StreamItem,
    encode_quote,
    opening,
    parse_stream_options,
)
from quotes_core.query import EPOCH_PATTERN, parse_mode_param, parse_tickers_param

__all__ = ["WS_PATHS", "Handshake", "ScriptedServer"]

WS_PATHS = ("/ws/quotes", "/ws", "/v1/ws/quotes", "/v1/ws")
"""The contract's four endpoints, as ``quotes-server`` serves them."""

MAX_CLIENT_FRAME = 64 * 1024
"""Largest client frame accepted, as ``quotes-server``'s default ``ws_max_size``."""

MAX_URL_LENGTH = 32 * 1024
"""Longest request target accepted, as ``quotes-server``'s default ``max_url_length``
(so an over-long ``tickers`` value gets the same 400, not the parser's 8 KiB limit)."""


@dataclass(frozen=True)
class Handshake:
    """One handshake request the server answered, and how."""

    path: str
    """The request path, without the query."""
    query: dict[str, list[str]]
    """The query parameters (every value of each)."""
    headers: Headers
    """The request headers."""
    status: int
    """101 when accepted, else the HTTP status of the rejection."""
    reason: str
    """The rejection's body, without the trailing newline (empty when accepted)."""


class ScriptedServer:
    """
    A contract-speaking WebSocket server on ``127.0.0.1``, driven by the test.

    Use it as an async context manager::

        async with ScriptedServer() as server, QuotesClient(server.url) as client:
            await server.wait_connections(1)
            server.publish(quote)

    Args:
        host: interface to listen on (keep it loopback).
        port: TCP port; 0 picks a free one (read :attr:`port`).
        cors_origins: allowed ``Origin`` values (``scheme://host[:port]``); ``*``
            allows all; requests without ``Origin`` are always allowed.
        retry_after: ``Retry-After`` seconds sent with refused (503) handshakes.
        bound: quotes buffered losslessly per connection before conflation.
        epoch: the first stream epoch (default: a random one, as ``quotes-server``).
        history_size: quotes the resume window holds at most.
        history_age: seconds a quote stays in the resume window.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cors_origins: Iterable[str] = ("*",),
        retry_after: int = 5,
        bound: int = DEFAULT_BOUND,
        epoch: str | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_age: float = DEFAULT_HISTORY_AGE,
    ) -> None:
        self.host = host
        self.port = port
        self.cors_origins = [o.rstrip("/") for o in cors_origins]
        self.retry_after = retry_after
        self.hub: Hub[str] = Hub(bound=bound)
        """The fan-out hub of plain connections (canonical JSON payloads)."""
        self.stream_hub: Hub[StreamItem[str]] = Hub(bound=bound)
        """The fan-out hub of connections that opted into the stream protocol."""
        self.history: History[str] = History(history_size, history_age)
        """The resume window (``since=``), cleared by :meth:`new_epoch`."""
        self.snapshot: Snapshot[str] = Snapshot()
        """The latest quote of every ticker (``snapshot=1``)."""
        self.seq = 0
        """The newest position published (0 before any; not reset by :meth:`new_epoch`)."""
        self.epoch = _checked_epoch(epoch)
        """The current stream epoch."""
        self.handshakes: list[Handshake] = []
        """Every handshake answered, in order."""
        self.connections: list[ScriptedConnection] = []
        """Every accepted connection, in order (open or closed)."""
        self.published: list[Quote] = []
        """Every quote given to :meth:`publish`."""
        self._rejections: list[tuple[int, str, dict[str, str]]] = []
        self._pending: dict[ServerConnection, ScriptedConnection] = {}
        self._server: Server | None = None
        self._changed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """``ws://host:port/ws/quotes``: pass it to ``QuotesClient``."""
        return self.url_for("/ws/quotes")

    def url_for(self, path: str = "/ws/quotes") -> str:
        """The URL of ``path`` on this server (any of :data:`WS_PATHS`)."""
        return f"ws://{self.host}:{self.port}{path}"

    async def start(self) -> None:
        """Listen (``async with`` does it for you)."""
        # the websockets parser's request-line limit is a module global (8 KiB by
        # default); quotes-server raises it the same way, and only ever upwards
        if websockets.http11.MAX_LINE_LENGTH < MAX_URL_LENGTH + 64:
            websockets.http11.MAX_LINE_LENGTH = MAX_URL_LENGTH + 64
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            process_response=self._process_response,
            compression=None,  # as quotes-server's default: frames stay byte-identical
            max_size=MAX_CLIENT_FRAME,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def aclose(self) -> None:
        """Close every connection with 1001 and stop listening."""
        if self._server is None:
            return
        self._server.close(close_connections=False)
        await self.close_all(1001, "Server shutting down", flush=False)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- what the test does ------------------------------------------------------

    def publish(self, *quotes: Quote) -> int:
        """
        Publish quotes, as if upstream had: each reaches every open connection whose
        filter matches it, in order. Returns how many deliveries were queued.
        """
        before = self.hub.fanned_out + self.stream_hub.fanned_out
        for quote in quotes:
            self.published.append(quote)
            payload = encode_quote(quote)
            self.seq += 1
            item = StreamItem(self.seq, self.epoch, quote.ticker, payload, time.monotonic())
            self.history.append(item)
            self.snapshot.update(item)
            woken: list[Any] = self.hub.publish(quote, payload)
            if len(self.stream_hub):
                woken += self.stream_hub.publish(quote, item)
            for sub in woken:
                for conn in self.open_connections:
                    if conn.subscription is sub:
                        conn._wake.set()
        return self.hub.fanned_out + self.stream_hub.fanned_out - before

    def new_epoch(self, epoch: str | None = None) -> str:
        """
        Start a new stream epoch, as ``quotes-server`` does after an upstream outage
        (or a restart): nothing before it can be resumed, so a ``since=`` of the old
        epoch gets ``recovered: false`` (and the snapshot, if asked). Open
        connections stay open: drop them too with :meth:`abort_all` or
        :meth:`close_all` (``1012``) to script a restart. Returns the new epoch.

        Args:
            epoch: the new epoch (default: a random one).

        Raises:
            ValueError: ``epoch`` is not 1-64 characters ``A-Z a-z 0-9 _ -``.
        """
        self.epoch = _checked_epoch(epoch)
        self.history.clear()
        self._notify()
        return self.epoch

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every open, non-stalled connection has written all it has pending."""
        await asyncio.gather(*(c.drain(timeout) for c in self.open_connections if not c.stalled))

    def refuse_next(self, count: int = 1) -> None:
        """Answer the next ``count`` handshakes with 503 and ``Retry-After`` (upstream down)."""
        reason = "Upstream quote source unavailable (scripted); retry later"
        self.reject_next(count, 503, reason, {"Retry-After": str(self.retry_after)})

    def reject_next(
        self, count: int, status: int, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        """
        Answer the next ``count`` otherwise valid handshakes with any HTTP status, e.g.
        ``401`` with ``{"WWW-Authenticate": "Bearer"}`` or ``429`` (what ``quotes-server``
        answers with auth or connection caps on; the scripted server has neither).
        """
        self._rejections += [(status, reason, dict(headers or {}))] * count

    async def close_all(self, code: int = 1011, reason: str = "", *, flush: bool = True) -> None:
        """Close every open connection with ``code`` (see :meth:`ScriptedConnection.close`)."""
        await asyncio.gather(*(c.close(code, reason, flush=flush) for c in self.open_connections))

    def abort_all(self) -> None:
        """Drop every open connection's TCP connection, without a close frame (1006)."""
        for conn in self.open_connections:
            conn.abort()

    def stall(self) -> None:
        """Stop writing to every open connection (quotes pile up in the hub and conflate)."""
        for conn in self.open_connections:
            conn.stall()

    def resume(self) -> None:
        """Start writing again to every stalled connection."""
        for conn in self.open_connections:
            conn.resume()

    async def send_raw(self, data: str | bytes) -> None:
        """Send one raw frame to every open connection (text for ``str``, binary for ``bytes``)."""
        await asyncio.gather(*(c.send_raw(data) for c in self.open_connections))

    # -- what the test observes --------------------------------------------------

    @property
    def open_connections(self) -> list[ScriptedConnection]:
        """The connections open now, oldest first."""
        return [c for c in self.connections if c.open]

    async def wait_for(
        self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        """
        Wait until ``condition()`` is true; it is re-checked on every change of state.

        Raises:
            TimeoutError: not true after ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"scripted server: no {what} after {timeout:g} s") from None

    async def wait_connections(self, count: int, timeout: float = 10.0) -> list[ScriptedConnection]:
        """Wait until at least ``count`` connections are open; return the open ones."""
        await self.wait_for(
            lambda: len(self.open_connections) >= count, timeout, f"{count} open connections"
        )
        return self.open_connections

    async def wait_handshakes(self, count: int, timeout: float = 10.0) -> list[Handshake]:
        """Wait until ``count`` handshakes were answered (accepted or not); return them all."""
        await self.wait_for(lambda: len(self.handshakes) >= count, timeout, f"{count} handshakes")
        return self.handshakes

    async def wait_closed(self, count: int, timeout: float = 10.0) -> list[ScriptedConnection]:
        """Wait until ``count`` connections have ended in total; return the ended ones."""
        await self.wait_for(
            lambda: sum(not c.open for c in self.connections) >= count,
            timeout,
            f"{count} closed connections",
        )
        return [c for c in self.connections if not c.open]

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- the handshake -----------------------------------------------------------

    def _origin_allowed(self, origin: str | None) -> bool:
        # quotes_server.settings.Settings.origin_allowed
        if origin is None:
            return True
        if origin == "null":  # sandboxed frames, file:// pages: only when listed
            return "null" in self.cors_origins
        return "*" in self.cors_origins or origin.rstrip("/") in self.cors_origins

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        answer = self._check(parts.path, query, request.headers)
        if answer is not None:
            status, reason, headers = answer
            self.handshakes.append(Handshake(parts.path, query, request.headers, status, reason))
            self._notify()
            response = ws.respond(status, reason + "\n")
            for name, value in headers.items():
                response.headers[name] = value
            return response
        ticker_filter = parse_tickers_param(query.get("tickers", []))
        mode = parse_mode_param(_last(query.get("mode")))
        options = parse_stream_options(query)
        # subscribe before the 101 goes out: whatever is published once the client
        # has seen it reaches the client (as in quotes-server); the snapshot and the
        # replay are taken in this same synchronous step: every quote exactly once
        hub: Hub[Any] = self.stream_hub if options.sequenced else self.hub
        sub = hub.subscribe(ticker_filter, mode=mode)
        conn = ScriptedConnection(
            self, hub, sub, parts.path, query, request.headers, len(self.connections), options
        )
        event, first = opening(
            options,
            ticker_filter,
            self.history,
            self.snapshot,
            epoch=self.epoch,
            last_seq=self.seq,
            now=time.monotonic(),
        )
        if event is not None:
            conn._queue([event])
        if first:
            conn._queue(list(first))
        self._pending[ws] = conn
        return None

    def _check(
        self, path: str, query: dict[str, list[str]], headers: Headers
    ) -> tuple[int, str, dict[str, str]] | None:
        if path not in WS_PATHS:
            return 404, "Not Found", {}
        origin = headers.get("Origin")
        if not self._origin_allowed(origin):
            return 403, f"Origin {origin!r} is not allowed", {}
        try:
            parse_tickers_param(query.get("tickers", []))
            parse_mode_param(_last(query.get("mode")))
            parse_stream_options(query)
        except ClientError as exc:
            return 400, str(exc), {}
        if self._rejections:
            return self._rejections.pop(0)
        return None

    def _process_response(
        self, ws: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        conn = self._pending.get(ws)
        if conn is not None and response.status_code != 101:
            del self._pending[ws]
            conn.hub.unsubscribe(conn.subscription)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = self._pending.pop(ws)
        self.handshakes.append(Handshake(conn.path, conn.query, conn.headers, 101, ""))
        conn._attach(ws)
        self.connections.append(conn)
        self._notify()
        try:
            async for message in ws:
                conn.received.append(message)
                if isinstance(message, str):
                    conn._answer(message)
                self._notify()
        except ConnectionClosed:
            pass
        finally:
            await conn._ended()
            self._notify()


def _checked_epoch(epoch: str | None) -> str:
    if epoch is None:
        return secrets.token_hex(6)  # as quotes-server: two starts never share one
    if not re.fullmatch(EPOCH_PATTERN, epoch):
        raise ValueError(f"invalid epoch {epoch!r}: expected {EPOCH_PATTERN}")
    return epoch


def _last(values: Sequence[str] | None) -> str | None:
    # Starlette's QueryParams.get returns the last value of a repeated parameter
    return values[-1] if values else None
