"""
The live ticker filter: what ``subscribe``, ``unsubscribe`` and ``set`` make of it.

Pure functions over :class:`quotes_core.TickerFilter`, the same set operations
the server applies, so that a change made while disconnected lands on the filter
the next connection asks for. On an open connection the server's ``subscribed``
reply is the truth; these functions only predict it (and refuse, before sending,
what the server would refuse or a URL could not say).
"""

from __future__ import annotations

from collections.abc import Iterable

from quotes_client.protocol import Action
from quotes_core import MAX_FILTER_TICKERS, InvalidTickers, TickerFilter

__all__ = ["change_filter", "requested"]


def requested(tickers: Iterable[str] | str | None) -> TickerFilter:
    """
    The symbols of an action, validated: a list or a comma-separated string;
    ``None``, ``"*"`` or a ``"*"`` in the list mean every ticker.

    Raises:
        InvalidTickers: a symbol is invalid, or there are too many.
        ValueError: no symbol at all.
    """
    if tickers is None:
        return TickerFilter()
    items = tickers.split(",") if isinstance(tickers, str) else list(tickers)
    if not any(item.strip() for item in items):
        raise ValueError("give at least one ticker (or '*' for every ticker)")
    return TickerFilter.of(items)


def change_filter(current: TickerFilter, action: Action, symbols: TickerFilter) -> TickerFilter:
    """
    The filter after ``action`` with ``symbols`` (from :func:`requested`).

    ``subscribe`` adds (anything added to every ticker is every ticker),
    ``unsubscribe`` removes, ``set`` replaces.

    Raises:
        ValueError: the change would leave no ticker at all (a URL cannot ask for
            nothing: an empty ``tickers`` means every ticker), or removes symbols
            from "every ticker" (there is no "all but these").
        InvalidTickers: the result has more than :data:`MAX_FILTER_TICKERS` symbols.
    """
    if action == "set":
        result = symbols
    elif action == "subscribe":
        if current.tickers is None or symbols.tickers is None:
            result = TickerFilter()
        else:
            result = TickerFilter(current.tickers | symbols.tickers)
    elif current.tickers is None:
        if symbols.tickers is None:
            raise ValueError("unsubscribing every ticker would leave none")
        raise ValueError(
            "cannot unsubscribe from '*' (every ticker): set_tickers() the ones you want instead"
        )
    elif symbols.tickers is None:
        raise ValueError("unsubscribing every ticker would leave none")
    else:
        result = TickerFilter(current.tickers - symbols.tickers)
    if result.tickers is not None:
        if not result.tickers:
            raise ValueError("this change would leave no ticker: keep at least one")
        if len(result.tickers) > MAX_FILTER_TICKERS:
            raise InvalidTickers(
                f"too many tickers ({len(result.tickers)}; at most {MAX_FILTER_TICKERS} "
                "per connection)"
            )
    return result
