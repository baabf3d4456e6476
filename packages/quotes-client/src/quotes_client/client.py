"""
``QuotesClient``: validated quotes from the stream, across reconnects.

Two tasks meet at a :class:`~quotes_client.buffer.BoundedBuffer`:

* the *connection loop* (:class:`~quotes_client.loop.ConnectionLoop`, started by
  ``async with``) opens a WebSocket, reads every message, hands it to the engine,
  records each quote's latency and puts it in the buffer; when the connection ends
  it asks :mod:`quotes_client.policy` whether to reconnect, and if so waits the
  :class:`quotes_core.Backoff` delay first;
* the *consumer* (``async for quote in client`` or ``client.batches()``)
  takes quotes out of the buffer.

The protocol's state lives in a sans-I/O :class:`~quotes_client.engine.ClientEngine`:
each connection's URL, the filter (live changes are settled by the server's
``subscribed`` reply), the opt-in options (``snapshot``, ``max_hz``, ``batch``,
``resume``), the resume position and its gaps, and what each frame gives (quotes,
events, answers). Events go through an :class:`~quotes_client.announcer.Announcer`
(the client's state, listeners, ``on_event``, the log). This class is the public
face over them: options, iteration, filter changes, introspection.

The backoff is reset only after a connection stayed open ``healthy_after``
seconds (10 by default), so a server that accepts and then closes at once is
retried with growing delays, not in a tight loop. The ``websockets`` library's
own reconnecting iterator is deliberately not used: it resets its backoff after
any successful handshake and ignores close codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, Self

from websockets.typing import Origin

from quotes_client.announcer import Announcer
from quotes_client.buffer import DEFAULT_BUFFER_SIZE, BoundedBuffer, BufferClosed, Overflow
from quotes_client.engine import ClientEngine
from quotes_client.errors import StreamError
from quotes_client.events import Closed, ConnectionEvent, EventStream, Failed
from quotes_client.loop import RETRY_AFTER_CAP, ConnectionLoop, LoopSettings, TokenProvider
from quotes_client.protocol import Action, ProtocolOptions
from quotes_client.stats import (
    DEFAULT_LATENCY_WINDOW,
    ClientState,
    ClientStats,
    Latency,
    LatencyStats,
)
from quotes_client.transport import connector_for, is_sse_url
from quotes_core import Backoff, Quote, TickerFilter

Transport = Literal["websocket", "sse"]

__all__ = [
    "DEFAULT_ACTION_TIMEOUT",
    "DEFAULT_HEALTHY_AFTER",
    "DEFAULT_OPEN_TIMEOUT",
    "RETRY_AFTER_CAP",
    "QuotesClient",
]

logger = logging.getLogger("quotes_client")

DEFAULT_OPEN_TIMEOUT = 30.0
"""Seconds allowed for TCP connect plus the WebSocket handshake."""

DEFAULT_HEALTHY_AFTER = 10.0
"""Seconds a connection must stay open before the backoff starts again at 1 s."""

DEFAULT_ACTION_TIMEOUT = 10.0
"""Seconds ``subscribe()``, ``unsubscribe()`` and ``set_tickers()`` wait for the reply."""


class QuotesClient:
    """
    A reconnecting stream of validated quotes.

    Example::

        async with QuotesClient("ws://127.0.0.1:8000/v1/ws/quotes", tickers=["AAPL"]) as client:
            async for quote in client:
                print(quote.ticker, quote.close)

    Iteration ends when the client is closed and raises a
    :class:`~quotes_client.errors.StreamError` on a fatal error or when
    ``max_retries`` is exhausted (after the quotes already buffered).

    Args:
        url: the server's WebSocket URL (``ws://`` or ``wss://``), or its Server-Sent
            Events endpoint (``http://``/``https://``, ``/sse/quotes``) for networks
            that break WebSockets: the same quotes, events, resume and backoff; a
            filter change then reconnects with the new query (SSE is one-way).
        tickers: symbols to receive (case-insensitive), or ``None`` for every
            ticker (or whatever the URL's own ``tickers`` parameter says).
        buffer_size: most quotes held for the consumer.
        overflow: ``"drop_oldest"`` (default: keep the newest, count drops) or
            ``"block"`` (stop reading the socket until the consumer catches up).
        open_timeout: seconds allowed to open a connection; ``None`` waits forever.
        ping_interval: seconds between keepalive pings; ``None`` disables them.
        ping_timeout: seconds to wait for a pong before reconnecting.
        close_timeout: seconds to wait for the server's close frame.
        max_retries: give up after this many consecutive failed reconnects
            (counted since the last healthy connection); ``None`` never gives up.
        stale_timeout: reconnect when no message arrived for this many seconds;
            ``None`` (default) never does (markets go quiet).
        healthy_after: seconds a connection must stay open to reset the backoff.
        backoff: the reconnect delays (default ``Backoff()``: 1, 2, 4 ... 60 s,
            jittered down by up to half).
        origin: ``Origin`` header to send (servers may check it against CORS).
        headers: extra HTTP headers for the handshake.
        token: the server's access token, sent as ``Authorization: Bearer``: a string
            (the same for every connection: when it expires the server closes with
            1008 and the client stops), or a callable, sync or async, called before
            each connection for a fresh one (the server's ``1008 "Token expired"``
            then makes the client reconnect at once with a new token and, with
            ``resume``, miss nothing; a provider that raises is retried with backoff).
        on_event: called with each :mod:`~quotes_client.events` event, in the
            event loop; exceptions it raises are logged and ignored.
        max_queue: frames the ``websockets`` library buffers before it stops
            reading the TCP connection (keep it small for ``"block"``).
        latency_window: samples kept for the latency percentiles.
        snapshot: ask the server for the latest quote of every ticker first
            (``snapshot=1``), so the consumer has prices at once.
        max_hz: at most this many quotes per second per ticker (0.1 to 100;
            ``max_hz=N``): in between the server keeps only the newest (conflation).
        batch: ask for one JSON array per server flush (``batch=1``) instead of
            one frame per quote; iteration still yields single quotes.
        resume: track the stream's position (``seq=1``) and resume after a
            reconnect (``since=<epoch>:<seq>``): the server replays what was
            missed, or says it cannot (a :class:`~quotes_client.events.Recovered`
            event either way) and then sends a snapshot.
        action_timeout: seconds a filter change waits for the server's reply.
        connect_options: other keyword arguments for
            ``websockets.asyncio.client.connect`` (``ssl``, ``proxy``, ``compression`` ...);
            with an ``http(s)://`` URL, for ``httpx.AsyncClient`` (``verify``, ``proxy``,
            ``cert`` ...). ``ping_*``, ``close_timeout`` and ``max_queue`` are the
            WebSocket's only.
        sleep: awaited with each backoff delay (inject a fake in tests).
        clock: monotonic clock for connection durations (inject in tests).
        wall_clock: POSIX time for latency and ``Retry-After`` dates.

    Raises:
        ValueError: ``url`` is not a stream URL or an argument is out of range.
        quotes_core.InvalidTickers: a ticker symbol is invalid.
    """

    url: str
    """The URL of the first connection (``tickers`` and the protocol options included).

    Reconnects carry the current filter and, with ``resume``, ``since=``."""

    def __init__(
        self,
        url: str,
        *,
        tickers: Iterable[str] | str | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        overflow: Overflow = "drop_oldest",
        open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 10.0,
        max_retries: int | None = None,
        stale_timeout: float | None = None,
        healthy_after: float = DEFAULT_HEALTHY_AFTER,
        backoff: Backoff | None = None,
        origin: str | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | TokenProvider | None = None,
        on_event: Callable[[ConnectionEvent], object] | None = None,
        max_queue: int = 16,
        latency_window: int = DEFAULT_LATENCY_WINDOW,
        connect_options: Mapping[str, Any] | None = None,
        snapshot: bool = False,
        max_hz: float | None = None,
        batch: bool = False,
        resume: bool = False,
        action_timeout: float = DEFAULT_ACTION_TIMEOUT,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_retries is not None and max_retries < 0:
            raise ValueError("max_retries must be at least 0")
        if stale_timeout is not None and stale_timeout <= 0:
            raise ValueError("stale_timeout must be positive")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if action_timeout <= 0:
            raise ValueError("action_timeout must be positive")
        self._engine = ClientEngine(url, tickers, ProtocolOptions(snapshot, max_hz, batch, resume))
        self._action_timeout = action_timeout
        self.url = self._engine.next_url()
        self._buffer: BoundedBuffer[Quote] = BoundedBuffer(buffer_size, overflow)
        self._announcer = Announcer(on_event)
        options = dict(connect_options or {})
        extra = {**dict(options.pop("additional_headers", None) or {}), **dict(headers or {})}
        if isinstance(token, str):
            extra["Authorization"] = f"Bearer {token}"
        self.transport: Transport = "sse" if is_sse_url(url) else "websocket"
        if self.transport == "sse" and origin is not None:
            extra["Origin"] = origin
        connector = connector_for(
            url,
            websocket_options={
                "origin": Origin(origin) if origin is not None else None,
                "open_timeout": open_timeout,
                "ping_interval": ping_interval,
                "ping_timeout": ping_timeout,
                "close_timeout": close_timeout,
                "max_queue": max_queue,
                **options,
            },
            open_timeout=open_timeout,
            client_options=options,
        )
        self._loop = ConnectionLoop(
            self._engine,
            self._buffer,
            self._announcer,
            LoopSettings(
                connector=connector,
                headers=extra,
                token=None if isinstance(token, str) else token,
                max_retries=max_retries,
                stale_timeout=stale_timeout,
                healthy_after=healthy_after,
                backoff=backoff or Backoff(),
                sleep=sleep,
                clock=clock,
                wall_clock=wall_clock,
            ),
            LatencyStats(latency_window),
        )
        self._task: asyncio.Task[None] | None = None
        self._finished = False
        self._error: StreamError | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection loop (``async with`` does it for you)."""
        if self._task is not None or self._finished:
            raise RuntimeError("a client can be started only once")
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"quotes-client {self.url}"
        )

    async def aclose(self) -> None:
        """Close the connection (code 1000) and end iteration; safe to call twice."""
        task = self._task
        if task is None:
            if not self._finished:
                self._finish(None)
            return
        if task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

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

    # -- consuming ---------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Quote:
        self._require_started()
        try:
            return await self._buffer.get()
        except BufferClosed:
            raise StopAsyncIteration from None

    async def batches(self, interval: float = 0.1) -> AsyncIterator[list[Quote]]:
        """
        Yield the quotes received per ``interval`` seconds, as lists (never empty).

        A batch starts with the first quote after the previous batch and
        collects for ``interval`` seconds; it holds at most ``buffer_size``
        quotes (the buffer's policy applies meanwhile). Ends or raises like
        plain iteration.
        """
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._require_started()
        while True:
            try:
                first = await self._buffer.get()
            except BufferClosed:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._buffer.wait_closed()
            yield [first, *self._buffer.drain()]

    async def next_quotes(self, limit: int) -> list[Quote]:
        """
        Wait for at least one quote and take up to ``limit`` of them at once (``[]``
        when the stream has ended): the buffer's cheapest read, for consumers that
        work in chunks (the blocking :class:`~quotes_client.SyncQuotesClient` does).

        Raises:
            StreamError: the client failed for good (as plain iteration).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._require_started()
        try:
            first = await self._buffer.get()
        except BufferClosed:
            return []
        return [first, *self._buffer.drain(limit - 1)]

    def events(self, maxlen: int = 256) -> EventStream:
        """
        An async iterator of connection events from now on (see :mod:`~quotes_client.events`).

        Call it before ``async with`` to see the first ``Connecting`` too. It ends
        after the client's last event.
        """
        return self._announcer.listen(maxlen)

    async def wait_connected(self) -> None:
        """
        Wait until a connection is open.

        Raises:
            StreamError: the client failed for good.
            RuntimeError: the client was closed.
        """
        while self.state is not ClientState.CONNECTED:
            if self._error is not None:
                raise self._error
            if self.state is ClientState.CLOSED:
                raise RuntimeError("the client is closed")
            await self._announcer.changed()

    # -- the live filter ---------------------------------------------------------

    async def subscribe(self, tickers: Iterable[str] | str) -> TickerFilter:
        """
        Add ``tickers`` to the filter (``"*"``: every ticker); return the whole filter.

        On an open connection the client sends ``{"action":"subscribe"}`` and waits
        for the server's ``subscribed`` reply (no quote of an added ticker comes
        before it; with ``snapshot``, their latest quotes come first). Without a
        connection, or if it drops before the reply, the change applies to the
        next one. Either way reconnects keep it.

        Raises:
            ActionRejected: the server refused it (``.code``: ``forbidden`` ...);
                the filter is unchanged.
            quotes_core.InvalidTickers: a symbol is invalid, or too many in total.
            ValueError: no symbol given.
            TimeoutError: no reply within ``action_timeout``.
        """
        return await self._change("subscribe", tickers)

    async def unsubscribe(self, tickers: Iterable[str] | str) -> TickerFilter:
        """
        Remove ``tickers`` from the filter; return the whole filter (see :meth:`subscribe`).

        Raises:
            ValueError: the filter is every ticker (``set_tickers`` the wanted ones
                instead), or nothing would be left.
        """
        return await self._change("unsubscribe", tickers)

    async def set_tickers(self, tickers: Iterable[str] | str | None) -> TickerFilter:
        """Replace the filter (``None`` or ``"*"``: every ticker); see :meth:`subscribe`."""
        return await self._change("set", tickers)

    @property
    def tickers(self) -> TickerFilter | None:
        """
        The filter the stream follows (or the next connection asks for); ``None``
        when the URL's own ``tickers`` value is invalid.
        """
        return self._engine.filter

    @property
    def position(self) -> tuple[str, int] | None:
        """With ``resume``: the server's epoch and the highest seq received in it."""
        return self._engine.position

    async def _change(self, action: Action, tickers: Iterable[str] | str | None) -> TickerFilter:
        wanted, text = self._engine.change(action, tickers)
        confirmed = await self._loop.change(action, wanted, text, self._action_timeout)
        if self._error is not None:  # over SSE: the new stream was refused for good
            raise self._error
        return confirmed

    # -- introspection -----------------------------------------------------------

    @property
    def state(self) -> ClientState:
        """Where the connection loop is now."""
        return self._announcer.state

    @property
    def latency(self) -> Latency:
        """Latency summary (receive time minus quote timestamp), in seconds."""
        return self._loop.latency.snapshot()

    @property
    def stats(self) -> ClientStats:
        """
        A snapshot of the counters: cheap, read it as often as you like.

        Its ``latency`` is computed when first read (it sorts the latency window, up
        to ``latency_window`` samples): read that now and then, not once per quote.
        """
        tracker = self._engine.tracker
        loop = self._loop
        return ClientStats(
            state=self.state,
            received=loop.received,
            invalid=loop.invalid,
            dropped=self._buffer.dropped,
            buffered=len(self._buffer),
            connects=loop.connects,
            reconnects=max(0, loop.connects - 1),
            attempts=loop.attempts,
            summarize=loop.latency.snapshot,
            gaps=tracker.gaps if tracker else 0,
            missed=tracker.missed if tracker else 0,
            recovered=tracker.recovered if tracker else 0,
            unrecovered=tracker.unrecovered if tracker else 0,
        )

    def __repr__(self) -> str:
        return f"<QuotesClient {self.url} {self.state.value} received={self._loop.received}>"

    # -- the connection loop -----------------------------------------------------

    async def _run(self) -> None:
        error: StreamError | None = None
        try:
            error = await self._loop.run()
        except asyncio.CancelledError:
            pass  # aclose(): end normally
        except Exception as exc:
            logger.exception("quotes-client: internal error")
            error = StreamError(f"internal error: {exc!r}")
            error.__cause__ = exc
        finally:
            self._finish(error)

    def _finish(self, error: StreamError | None) -> None:
        self._finished = True
        self._error = error
        self._announcer.emit(Closed() if error is None else Failed(error))
        self._buffer.close(error)
        self._announcer.end()

    def _require_started(self) -> None:
        if self._task is None and not self._finished:
            raise RuntimeError("start the client first: 'async with QuotesClient(...) as client:'")
