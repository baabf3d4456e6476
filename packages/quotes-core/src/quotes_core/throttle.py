"""
Per-ticker rate limiting with conflation: the ``max_hz`` option.

A :class:`Throttle` lets at most ``max_hz`` quotes per second through per ticker:
two quotes of one ticker are never let through less than ``1 / max_hz`` seconds
apart. A quote that arrives too early is held; a newer quote of the same ticker
replaces the held one (conflation, counted), and :meth:`Throttle.release` lets the
held quote through once its ticker's interval has passed. So a client never gets
more than its rate and always converges on the newest price of every ticker.

No clocks: the caller passes ``now`` and asks :meth:`Throttle.next_due` when to
call :meth:`Throttle.release` again (the server needs a timer only while quotes are
held).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from quotes_core.history import StreamItem
from quotes_core.tickers import TickerFilter

__all__ = ["MAX_HZ_RANGE", "Throttle"]

P = TypeVar("P")

MAX_HZ_RANGE = (0.1, 100.0)
"""Smallest and largest accepted ``max_hz``."""


class Throttle(Generic[P]):
    """
    At most ``max_hz`` items per second per ticker, keeping only the newest held one.

    Args:
        max_hz: the rate per ticker (> 0).
    """

    __slots__ = ("_held", "_next", "conflated", "interval", "max_hz")

    def __init__(self, max_hz: float) -> None:
        if not max_hz > 0:
            raise ValueError("max_hz must be positive")
        self.max_hz = max_hz
        self.interval = 1.0 / max_hz
        self._next: dict[str, float] = {}
        # insertion-ordered: released in the order their tickers were first held
        self._held: dict[str, StreamItem[P]] = {}
        self.conflated = 0
        """Items dropped because a newer one of the same ticker replaced them."""

    @property
    def held(self) -> int:
        """Items held back, at most one per ticker."""
        return len(self._held)

    def admit(self, items: Iterable[StreamItem[P]], now: float) -> list[StreamItem[P]]:
        """
        The items that may go out at ``now``, in order; the others are held.
        """
        out: list[StreamItem[P]] = []
        nxt = self._next
        held = self._held
        interval = self.interval
        for item in items:
            ticker = item.ticker
            if ticker in held:
                held[ticker] = item
                self.conflated += 1
            elif now >= nxt.get(ticker, now):
                nxt[ticker] = now + interval
                out.append(item)
            else:
                held[ticker] = item
        return out

    def release(self, now: float) -> list[StreamItem[P]]:
        """The held items whose ticker may send again at ``now``."""
        held = self._held
        if not held:
            return []
        nxt = self._next
        due = [t for t in held if nxt[t] <= now]
        out: list[StreamItem[P]] = []
        for t in due:
            out.append(held.pop(t))
            nxt[t] = now + self.interval
        return out

    def next_due(self) -> float | None:
        """When the earliest held item may go out, or ``None`` when nothing is held."""
        if not self._held:
            return None
        nxt = self._next
        return min(nxt[t] for t in self._held)

    def retain(self, ticker_filter: TickerFilter) -> None:
        """Drop held items of tickers ``ticker_filter`` rejects (after an unsubscribe)."""
        held = self._held
        for t in [t for t in held if not ticker_filter.matches(t)]:
            del held[t]
