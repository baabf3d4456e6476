"""
Sans-I/O fan-out of encoded quotes to subscribers.

The hub is data in, data out: :meth:`Hub.publish` puts a quote's pre-encoded
payload into the buffer of every subscription whose filter wants its ticker and
returns the subscriptions that went from empty to non-empty; the owner of each
subscription (the server's writer task) is woken once and then calls
:meth:`Hub.drain` until nothing is pending. There are no awaits, tasks or clocks
here, so ``publish`` costs O(matching subscribers) and never waits for a socket.

Each subscription buffers losslessly, first in first out, up to ``bound``
quotes. Past the bound it *conflates*: it keeps only the newest pending quote per
ticker (in arrival order), so memory stays bounded by ``bound`` plus the number of
tickers the subscriber follows, and a slow reader still ends up with the latest
price of everything it follows. Every quote dropped that way is counted in
:attr:`Subscription.conflated`. :attr:`Mode.LATEST` conflates from the first quote.

The hub never looks inside a payload: it is generic over the payload type
(``Hub[str]`` for canonical JSON text, ``Hub[bytes]`` for pre-built WebSocket
frames), so the same object is shared by every subscriber.
"""

from __future__ import annotations

from collections.abc import Set
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from quotes_core.tickers import TickerFilter

__all__ = [
    "DEFAULT_BOUND",
    "DEFAULT_WILDCARD_TICKER_CAP",
    "Hub",
    "Mode",
    "Subscription",
    "Tickered",
]


class Tickered(Protocol):
    """What the hub needs of a quote to file it: its ticker (a :class:`~quotes_core.Quote`
    has one)."""

    @property
    def ticker(self) -> str: ...


P = TypeVar("P")
"""The payload type a hub carries (e.g. ``str`` or ``bytes``)."""

DEFAULT_BOUND = 1000
"""Quotes a subscription buffers losslessly before it conflates."""

DEFAULT_WILDCARD_TICKER_CAP = 10_000
"""Most tickers the conflation map of an every-ticker subscription holds."""


class Mode(StrEnum):
    """How a subscription buffers pending quotes."""

    FIFO = "fifo"
    """Lossless up to the bound, then conflation (the contract's default)."""
    LATEST = "latest"
    """Only the newest pending quote per ticker, from the first quote (dashboards)."""


class Subscription(Generic[P]):
    """
    One subscriber's filter, pending buffer and counters.

    Created by :meth:`Hub.subscribe`; read the counters, never mutate the buffers.
    """

    __slots__ = (
        "_fifo",
        "_latest",
        "active",
        "bound",
        "conflated",
        "delivered",
        "filter",
        "mode",
        "received",
        "ticker_cap",
    )

    def __init__(self, filter: TickerFilter, mode: Mode, bound: int, ticker_cap: int) -> None:
        self.filter = filter
        self.mode = mode
        self.bound = bound if mode is Mode.FIFO else 0
        self.ticker_cap = ticker_cap
        self._fifo: list[P] = []
        self._latest: dict[str, P] = {}
        self.active = True
        """False once unsubscribed."""
        self.received = 0
        """Quotes accepted into this subscription's buffer."""
        self.delivered = 0
        """Quotes handed out by :meth:`Hub.drain`."""
        self.conflated = 0
        """Quotes dropped because a newer one for the same ticker replaced them."""

    @property
    def pending(self) -> int:
        """Quotes waiting to be drained."""
        return len(self._fifo) + len(self._latest)

    def _push(self, ticker: str, payload: P) -> bool:
        was_empty = not self._fifo and not self._latest
        self.received += 1
        if len(self._fifo) < self.bound:
            self._fifo.append(payload)
            return was_empty
        latest = self._latest
        if latest.pop(ticker, None) is not None:
            self.conflated += 1
        elif len(latest) >= self.ticker_cap:
            del latest[next(iter(latest))]
            self.conflated += 1
        latest[ticker] = payload
        return was_empty

    def _take(self) -> list[P]:
        batch = self._fifo
        self._fifo = []
        if self._latest:
            batch.extend(self._latest.values())
            self._latest = {}
        self.delivered += len(batch)
        return batch

    def __repr__(self) -> str:
        return (
            f"<Subscription filter={self.filter} mode={self.mode.value} pending={self.pending} "
            f"received={self.received} delivered={self.delivered} conflated={self.conflated}>"
        )


class Hub(Generic[P]):
    """
    Ticker-indexed fan-out of encoded quotes to subscriptions.

    Args:
        bound: default lossless buffer size of a subscription.
        wildcard_ticker_cap: most tickers an every-ticker subscription keeps while
            conflating; past it the oldest pending ticker is dropped (and counted).
    """

    def __init__(
        self,
        *,
        bound: int = DEFAULT_BOUND,
        wildcard_ticker_cap: int = DEFAULT_WILDCARD_TICKER_CAP,
    ) -> None:
        if bound < 1:
            raise ValueError("bound must be at least 1")
        if wildcard_ticker_cap < 1:
            raise ValueError("wildcard_ticker_cap must be at least 1")
        self.bound = bound
        self.wildcard_ticker_cap = wildcard_ticker_cap
        # dicts used as insertion-ordered sets: deterministic fan-out order
        self._by_ticker: dict[str, dict[Subscription[P], None]] = {}
        self._wildcard: dict[Subscription[P], None] = {}
        self._count = 0
        self.published = 0
        """Quotes given to :meth:`publish`."""
        self.fanned_out = 0
        """Quote copies put into subscription buffers."""

    def __len__(self) -> int:
        return self._count

    def subscribe(
        self,
        filter: TickerFilter | None = None,
        *,
        mode: Mode = Mode.FIFO,
        bound: int | None = None,
    ) -> Subscription[P]:
        """
        Add a subscriber that wants the quotes ``filter`` lets through.
        """
        filter = filter or TickerFilter()
        size = self.bound if bound is None else bound
        if size < 1:
            raise ValueError("bound must be at least 1")
        tickers = filter.tickers
        cap = self.wildcard_ticker_cap if tickers is None else max(len(tickers), 1)
        sub: Subscription[P] = Subscription(filter, mode, size, cap)
        if tickers is None:
            self._wildcard[sub] = None
        else:
            for t in tickers:
                self._by_ticker.setdefault(t, {})[sub] = None
        self._count += 1
        return sub

    def unsubscribe(self, sub: Subscription[P]) -> None:
        """
        Remove a subscriber and free its buffer; safe to call more than once.
        """
        if not sub.active:
            return
        sub.active = False
        tickers = sub.filter.tickers
        if tickers is None:
            self._wildcard.pop(sub, None)
        else:
            for t in tickers:
                subs = self._by_ticker.get(t)
                if subs is not None:
                    subs.pop(sub, None)
                    if not subs:
                        del self._by_ticker[t]
        sub._fifo = []
        sub._latest = {}
        self._count -= 1

    def change_filter(self, sub: Subscription[P], new: TickerFilter) -> None:
        """
        Replace ``sub``'s filter in place (subscribe, unsubscribe or set tickers).

        Quotes published from now on follow ``new``; what is already pending stays
        pending (it was wanted when it was published). O(tickers added + removed).
        """
        if not sub.active:
            raise ValueError("the subscription is closed")
        old = sub.filter.tickers
        wanted = new.tickers
        if old is None and wanted is None:
            sub.filter = new
            return
        if old is None:
            self._wildcard.pop(sub, None)
            added: frozenset[str] = wanted or frozenset()
            removed: frozenset[str] = frozenset()
        elif wanted is None:
            self._wildcard[sub] = None
            added, removed = frozenset(), old
        else:
            added, removed = wanted - old, old - wanted
        for t in removed:
            subs = self._by_ticker.get(t)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del self._by_ticker[t]
        for t in added:
            self._by_ticker.setdefault(t, {})[sub] = None
        sub.filter = new
        sub.ticker_cap = self.wildcard_ticker_cap if wanted is None else max(len(wanted), 1)

    def index(self) -> dict[str, frozenset[Subscription[P]]]:
        """
        The ticker index, as ``{ticker: subscriptions}`` plus ``"*"`` for the
        every-ticker subscriptions (for tests and introspection; O(index size)).
        """
        out = {t: frozenset(subs) for t, subs in self._by_ticker.items()}
        if self._wildcard:
            out["*"] = frozenset(self._wildcard)
        return out

    def publish(self, quote: Tickered, payload: P) -> list[Subscription[P]]:
        """
        Buffer ``payload`` for every subscriber that wants ``quote.ticker``.

        Returns:
            The subscriptions that had nothing pending before this quote: their
            owners should be woken to drain them.
        """
        ticker = quote.ticker
        self.published += 1
        woken: list[Subscription[P]] = []
        targeted = self._by_ticker.get(ticker)
        if targeted:
            self.fanned_out += len(targeted)
            for sub in targeted:
                if sub._push(ticker, payload):
                    woken.append(sub)
        if self._wildcard:
            self.fanned_out += len(self._wildcard)
            for sub in self._wildcard:
                if sub._push(ticker, payload):
                    woken.append(sub)
        return woken

    def drain(self, sub: Subscription[P]) -> list[P]:
        """
        Hand out everything ``sub`` has pending, oldest first, and empty its buffer.

        Within a ticker the order is always publication order, and the last payload
        of each ticker is the newest one published.
        """
        return sub._take()

    def wants_all(self) -> bool:
        """True while some subscription wants every ticker."""
        return bool(self._wildcard)

    def tickers(self) -> Set[str]:
        """
        The tickers some subscription asks for by name (wildcards not included).

        A live read-only view of the hub's index: it follows later subscribes and
        unsubscribes, and costs nothing to take.
        """
        return self._by_ticker.keys()

    def subscribers(self, ticker: str) -> int:
        """How many subscriptions currently want ``ticker``."""
        return len(self._by_ticker.get(ticker, ())) + len(self._wildcard)
