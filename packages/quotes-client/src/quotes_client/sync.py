"""
``SyncQuotesClient``: the same client for programs without an event loop.

A background thread runs an asyncio event loop with a :class:`QuotesClient` in
it; the calling thread iterates quotes, which cross over in chunks (one
thread hop per chunk, not per quote). Everything else (reconnects, buffering,
errors) is the async client's behaviour. ``on_event`` callbacks run in the
background thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

from quotes_client.client import QuotesClient
from quotes_client.stats import ClientStats, Latency
from quotes_core import Quote, TickerFilter

__all__ = ["SyncQuotesClient"]

T = TypeVar("T")

_CHUNK = 500


class SyncQuotesClient:
    """
    A blocking, iterable :class:`QuotesClient`.

    Example::

        with SyncQuotesClient("ws://127.0.0.1:8000/v1/ws/quotes", tickers=["AAPL"]) as client:
            for quote in client:
                print(quote.ticker, quote.close)

    Args:
        url: as for :class:`QuotesClient`.
        **options: any keyword argument of :class:`QuotesClient`.
    """

    def __init__(self, url: str, **options: Any) -> None:
        # built here so that bad arguments raise here, as with QuotesClient
        self._client = QuotesClient(url, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending: deque[Quote] = deque()
        self._ended = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the background thread and connect."""
        if self._thread is not None:
            raise RuntimeError("a client can be started only once")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=_serve, args=(loop,), name="quotes-client", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._client.start())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection and stop the background thread; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        self._call(self._client.aclose())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def __iter__(self) -> Iterator[Quote]:
        return self

    def __next__(self) -> Quote:
        if self._loop is not None and self._loop.is_closed():
            self._ended = True
        if not self._pending and not self._ended:
            chunk = self._call(self._client.next_quotes(_CHUNK))
            if not chunk:
                self._ended = True
            self._pending.extend(chunk)
        if not self._pending:
            raise StopIteration
        return self._pending.popleft()

    def subscribe(self, tickers: Iterable[str] | str) -> TickerFilter:
        """Add tickers, as :meth:`QuotesClient.subscribe` (blocks for the server's reply)."""
        return self._call(self._client.subscribe(tickers))

    def unsubscribe(self, tickers: Iterable[str] | str) -> TickerFilter:
        """Remove tickers, as :meth:`QuotesClient.unsubscribe`."""
        return self._call(self._client.unsubscribe(tickers))

    def set_tickers(self, tickers: Iterable[str] | str | None) -> TickerFilter:
        """Replace the filter, as :meth:`QuotesClient.set_tickers`."""
        return self._call(self._client.set_tickers(tickers))

    @property
    def tickers(self) -> TickerFilter | None:
        """The filter the stream follows."""
        client = self._client
        return self._read(lambda: client.tickers)

    @property
    def position(self) -> tuple[str, int] | None:
        """With ``resume``: the server's epoch and the highest seq received."""
        client = self._client
        return self._read(lambda: client.position)

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters (quotes already handed to this thread count as taken)."""
        client = self._client
        stats = self._read(lambda: client.stats)
        # its latency is computed when read: in the loop thread, which owns the window
        return dataclasses.replace(stats, summarize=lambda: self._read(lambda: client.latency))

    @property
    def latency(self) -> Latency:
        """Latency summary, in seconds."""
        client = self._client
        return self._read(lambda: client.latency)

    @property
    def url(self) -> str:
        """The URL connected to, ``tickers`` included."""
        return self._client.url

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None or self._loop.is_closed():
            coro.close()
            raise RuntimeError("the client is not running (start it with 'with')")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def _read(self, read: Callable[[], T]) -> T:
        # the loop thread mutates the counters: read them there while it runs
        if self._loop is None or self._loop.is_closed():
            return read()

        async def reader() -> T:
            return read()

        return self._call(reader())


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()
