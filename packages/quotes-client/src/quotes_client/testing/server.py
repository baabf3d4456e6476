"""
``ScriptedServer``: a real WebSocket server on loopback that speaks the contract and
misbehaves on cue, for testing applications built on the stream.

It drives the same stream engine as ``quotes-server``, :class:`quotes_core.Stream`:
the handshake's parameters are parsed by :mod:`quotes_core.query` (the same 400
reasons, the same ``Origin`` rule and endpoints from :mod:`quotes_core.wire`);
every published quote is encoded once by :func:`quotes_core.encode_quote` (the same
text frames, byte for byte: no compression), gets the next ``seq`` of the current
``epoch``, is recorded in the resume window and the snapshot and fans out through
the same hubs (filter, FIFO bound, conflation); what a new connection gets first
(``since=``, ``snapshot=1``), the replies to client actions, ``max_hz`` and the
frames' shapes (``seq=1``, ``batch=1``) are the engine's. There is no Redis: the
test publishes quotes itself, and can close, drop, refuse, stall or corrupt
connections in between. :meth:`ScriptedServer.new_epoch` simulates an outage or
restart. Client actions are also recorded in ``received``.

Everything is observable and awaitable (``wait_connections``, ``drain``...), so
tests need no sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self
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
    DEFAULT_MAX_CLIENT_FRAME,
    DEFAULT_MAX_URL_LENGTH,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_REPLAY_LIMIT,
    SHUTDOWN_REASON,
    WS_PATHS,
    ClientError,
    CloseCode,
    HistoryBackend,
    Hub,
    Quote,
    Snapshot,
    Stream,
    StreamItem,
    encode_quote,
    origin_allowed,
    parse_stream_options,
)
from quotes_core.query import parse_mode_param, parse_tickers_param

__all__ = ["WS_PATHS", "Handshake", "ScriptedServer"]

MAX_CLIENT_FRAME = DEFAULT_MAX_CLIENT_FRAME
"""Largest client frame accepted, as ``quotes-server``'s default ``ws_max_size``."""

MAX_URL_LENGTH = DEFAULT_MAX_URL_LENGTH
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
        replay_limit: most quotes one resume replays, as ``quotes-server``'s
            ``--replay-limit`` (more: ``recovered: false``).
        client_queue_limit: most bytes queued for one connection outside its hub
            buffer, as ``quotes-server``'s ``--client-queue-limit`` (a client past
            it gets 1013).

    Raises:
        ValueError: ``epoch`` is not 1-64 characters ``A-Z a-z 0-9 _ -``.
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
        replay_limit: int = DEFAULT_REPLAY_LIMIT,
        client_queue_limit: int = DEFAULT_QUEUE_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.cors_origins = [o.rstrip("/") for o in cors_origins]
        self.retry_after = retry_after
        self.stream: Stream[str] = Stream(
            bound=bound,
            history_size=history_size,
            history_age=history_age,
            epoch=epoch,
            replay_limit=replay_limit,
            queue_bytes=client_queue_limit,
        )
        """The stream engine (canonical JSON payloads), as ``quotes-server``'s."""
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

    # -- the engine's state --------------------------------------------------------

    @property
    def hub(self) -> Hub[str]:
        """The fan-out hub of plain connections (canonical JSON payloads)."""
        return self.stream.plain

    @property
    def stream_hub(self) -> Hub[StreamItem[str]]:
        """The fan-out hub of connections whose quotes carry their position."""
        return self.stream.sequenced

    @property
    def history(self) -> HistoryBackend[str]:
        """The resume window (``since=``), cleared by :meth:`new_epoch`."""
        return self.stream.history

    @property
    def snapshot(self) -> Snapshot[str]:
        """The latest quote of every ticker (``snapshot=1``)."""
        return self.stream.snapshot

    @property
    def seq(self) -> int:
        """The newest position published (0 before any; not reset by :meth:`new_epoch`)."""
        return self.stream.seq

    @property
    def epoch(self) -> str:
        """The current stream epoch."""
        return self.stream.epoch

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """``ws://host:port/ws/quotes``: pass it to ``QuotesClient``."""
        return self.url_for()

    def url_for(self, path: str = WS_PATHS[0]) -> str:
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
        await self.close_all(CloseCode.GOING_AWAY, SHUTDOWN_REASON, flush=False)
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
        stream = self.stream
        before = stream.plain.fanned_out + stream.sequenced.fanned_out
        for quote in quotes:
            self.published.append(quote)
            woken = stream.publish(quote, encode_quote(quote), time.monotonic())
            for sub in woken:
                for conn in self.open_connections:
                    if conn.subscription is sub:
                        conn._wake.set()
        return stream.plain.fanned_out + stream.sequenced.fanned_out - before

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
        new = self.stream.new_epoch(epoch)
        self._notify()
        return new

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
        # has seen it reaches the client (as in quotes-server); the engine queues the
        # snapshot and the replay in this same synchronous step: every quote exactly once
        subscriber = self.stream.open(ticker_filter, mode, options, time.monotonic())
        conn = ScriptedConnection(
            self.stream,
            self._notify,
            subscriber,
            parts.path,
            query,
            request.headers,
            len(self.connections),
        )
        self._pending[ws] = conn
        return None

    def _check(
        self, path: str, query: dict[str, list[str]], headers: Headers
    ) -> tuple[int, str, dict[str, str]] | None:
        if path not in WS_PATHS:
            return 404, "Not Found", {}
        origin = headers.get("Origin")
        if not origin_allowed(origin, self.cors_origins):
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
            self.stream.close(conn.subscriber)
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


def _last(values: Sequence[str] | None) -> str | None:
    # Starlette's QueryParams.get returns the last value of a repeated parameter
    return values[-1] if values else None
