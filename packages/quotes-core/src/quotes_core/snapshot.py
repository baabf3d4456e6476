"""
The snapshot map: the latest item seen for every ticker.

A client that connects with ``snapshot=1`` first gets the latest quote of every
ticker its filter matches, then the live stream. The server takes the snapshot in
the same synchronous step in which it subscribes the client to the hub, so every
quote is either in the snapshot (published before) or in the live part
(published after): none is lost or sent twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from quotes_core.history import StreamItem
from quotes_core.tickers import TickerFilter

__all__ = ["Snapshot"]

P = TypeVar("P")


class Snapshot(Generic[P]):
    """
    Latest :class:`~quotes_core.StreamItem` per ticker; O(1) per update.
    """

    __slots__ = ("_latest",)

    def __init__(self) -> None:
        self._latest: dict[str, StreamItem[P]] = {}

    def __len__(self) -> int:
        return len(self._latest)

    def update(self, item: StreamItem[P]) -> None:
        """Record ``item`` as the latest of its ticker."""
        self._latest[item.ticker] = item

    def get(self, ticker: str) -> StreamItem[P] | None:
        """The latest item of ``ticker``, if one was seen."""
        return self._latest.get(ticker)

    def select(self, ticker_filter: TickerFilter | Iterable[str]) -> list[StreamItem[P]]:
        """
        The latest item of every ticker the filter (or the given tickers) matches,
        in publication order (ascending ``seq``).
        """
        latest = self._latest
        if isinstance(ticker_filter, TickerFilter):
            if ticker_filter.tickers is None:
                found = list(latest.values())
            else:
                found = [latest[t] for t in ticker_filter.tickers if t in latest]
        else:
            found = [latest[t] for t in ticker_filter if t in latest]
        found.sort(key=_seq)
        return found


def _seq(item: StreamItem[P]) -> int:
    return item.seq
