"""
Sequenced quotes and the per-process history window that lets a client resume.

Every valid quote a server publishes becomes a :class:`StreamItem`: its position
``seq`` (strictly increasing in publication order, across all tickers), the
``epoch`` it belongs to, its ticker, the server's payload (whatever the server
carries, e.g. a pre-built frame) and the time it was recorded. A :class:`History`
keeps the newest items, bounded by count and by age, so that a client that comes
back with ``since=<epoch>:<seq>`` gets exactly the quotes it missed, or learns
that it cannot.

No clocks here: the caller passes ``now`` (any monotonic clock, in seconds).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, NamedTuple, Protocol, TypeVar

from quotes_core.tickers import TickerFilter

__all__ = ["DEFAULT_HISTORY_AGE", "DEFAULT_HISTORY_SIZE", "History", "HistoryBackend", "StreamItem"]

P = TypeVar("P")

DEFAULT_HISTORY_SIZE = 100_000
"""Quotes a history window holds at most, by default."""

DEFAULT_HISTORY_AGE = 120.0
"""Seconds a quote stays in the history window, by default."""


class StreamItem(NamedTuple, Generic[P]):
    """One published quote with its stream position."""

    seq: int
    """Position in the process's stream: strictly increasing in publication order."""
    epoch: str
    """The stream epoch the position belongs to."""
    ticker: str
    """The quote's ticker (upper case)."""
    payload: P
    """What the server carries for the quote (canonical JSON text or a frame of it)."""
    time: float
    """When it was recorded (the caller's clock)."""


class HistoryBackend(Protocol[P]):
    """
    What the stream engine needs of a resume window (:class:`History` is the
    per-process one). A backend is read in the same synchronous step as a client's
    subscription, so that the replay and the live stream meet exactly: one that
    keeps the window elsewhere (in Redis, for a whole deployment) keeps what it
    answers with in memory, fed as quotes are published.
    """

    def __len__(self) -> int:
        """Items held."""
        ...

    def append(self, item: StreamItem[P]) -> None:
        """Record a published item (``seq`` order, no gaps within an epoch)."""

    def clear(self) -> None:
        """Forget everything (a new epoch starts)."""

    def since(
        self,
        seq: int,
        last_seq: int,
        ticker_filter: TickerFilter,
        now: float,
        limit: int | None = None,
    ) -> list[StreamItem[P]] | None:
        """Every held item after ``seq`` that the filter lets through, or ``None``
        when they are not all held or more than ``limit`` (see :meth:`History.since`)."""
        ...


class History(Generic[P]):
    """
    The newest published items, bounded by ``size`` items and ``max_age`` seconds.

    Items must be appended in ``seq`` order with no gaps inside one epoch (every
    published quote is recorded), which is what makes "do I still hold everything
    after ``seq``?" a comparison. Appending is O(1) (amortised: old items are
    dropped from the front as new ones arrive).

    Each item is held as a plain tuple, which the garbage collector stops tracking
    (its fields are numbers, strings and bytes): a window of 100,000 items would
    otherwise be 100,000 more objects for every full collection to walk, which
    paused a loaded server for a quarter of a second each time.

    Args:
        size: most items held (>= 1).
        max_age: seconds an item is kept (> 0).
    """

    __slots__ = ("_items", "max_age", "size")

    def __init__(
        self, size: int = DEFAULT_HISTORY_SIZE, max_age: float = DEFAULT_HISTORY_AGE
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        if max_age <= 0:
            raise ValueError("max_age must be positive")
        self.size = size
        self.max_age = max_age
        self._items: deque[tuple[int, str, str, P, float]] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def first_seq(self) -> int | None:
        """The oldest held position, or ``None`` when empty."""
        return self._items[0][0] if self._items else None

    def append(self, item: StreamItem[P]) -> None:
        """Record ``item`` (its ``time`` is now) and forget what is too old."""
        items = self._items
        if items and item.seq <= items[-1][0]:
            raise ValueError(f"seq {item.seq} does not follow {items[-1][0]}")
        seq, epoch, ticker, payload, at = item
        items.append((seq, epoch, ticker, payload, at))  # exact: the collector skips it
        oldest = at - self.max_age
        while items[0][4] < oldest:
            items.popleft()

    def expire(self, now: float) -> None:
        """Forget the items older than ``max_age`` at ``now`` (also done on append)."""
        items = self._items
        oldest = now - self.max_age
        while items and items[0][4] < oldest:
            items.popleft()

    def clear(self) -> None:
        """Forget everything (a new epoch starts)."""
        self._items.clear()

    def since(
        self,
        seq: int,
        last_seq: int,
        ticker_filter: TickerFilter,
        now: float,
        limit: int | None = None,
    ) -> list[StreamItem[P]] | None:
        """
        Every held item after ``seq`` that ``ticker_filter`` lets through, in order.

        Args:
            seq: the last position the client saw.
            last_seq: the newest position published in this epoch (0 before any).
            ticker_filter: the client's filter.
            now: the current time (items older than ``max_age`` do not count).
            limit: most items a replay may hold (``None``: no limit). A resume that
                would replay more is refused like one the window cannot serve, so
                one request never costs more than ``limit`` items.

        Returns:
            The items, or ``None`` when the window no longer holds every item after
            ``seq`` (or ``seq`` is ahead of ``last_seq``), or when they are more than
            ``limit``: the client cannot resume.
        """
        self.expire(now)
        if seq > last_seq or seq < 0:
            return None
        if seq == last_seq:
            return []
        items = self._items
        if not items or items[0][0] > seq + 1 or items[-1][0] != last_seq:
            return None
        out: list[StreamItem[P]] = []
        wanted = ticker_filter.tickers
        most = len(items) if limit is None else limit
        if wanted is None and last_seq - seq > most:
            return None  # every item matches: too many, without looking
        make = StreamItem._make
        for item in reversed(items):  # the missed ones are at the end
            if item[0] <= seq:
                break
            if wanted is None or item[2] in wanted:
                if len(out) == most:
                    return None
                out.append(make(item))
        out.reverse()
        return out
