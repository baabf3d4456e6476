"""
Ticker symbols and the per-connection ticker filter.

A symbol is 1 to 16 characters after upper-casing: letters, digits and the
separators ``. - = /``, optionally preceded by ``^`` (indices). It starts and ends
with a letter or digit. That accepts real symbols such as ``BRK.B``, ``BF-B``,
``^GSPC``, ``EURUSD=X`` and ``BTC-USD`` and rejects junk such as ``AAPL;`` or ``..``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from quotes_core.errors import InvalidTickers

__all__ = [
    "MAX_FILTER_TICKERS",
    "MAX_TICKER_LENGTH",
    "TICKER_PATTERN",
    "TickerFilter",
    "is_valid_ticker",
    "normalize_ticker",
]

MAX_TICKER_LENGTH = 16
"""Longest accepted symbol, in characters."""

MAX_FILTER_TICKERS = 1000
"""Most distinct symbols one connection may ask for."""

TICKER_PATTERN = r"\^?[A-Z0-9](?:[A-Z0-9.\-=/]*[A-Z0-9])?"
"""Regular expression of an upper-cased symbol (length checked separately)."""

_MAX_RAW_LENGTH = MAX_FILTER_TICKERS * (MAX_TICKER_LENGTH + 4)
_TICKER_RE = re.compile(TICKER_PATTERN)


def is_valid_ticker(symbol: str) -> bool:
    """
    Tell whether an already upper-cased symbol follows the grammar.
    """
    return len(symbol) <= MAX_TICKER_LENGTH and _TICKER_RE.fullmatch(symbol) is not None


def normalize_ticker(symbol: str) -> str:
    """
    Upper-case and strip a symbol, or raise :class:`InvalidTickers` saying why.
    """
    norm = symbol.strip().upper()
    if not is_valid_ticker(norm):
        shown = symbol if len(symbol) <= 40 else symbol[:40] + "..."
        raise InvalidTickers(
            f"invalid ticker {shown!r}: expected 1-{MAX_TICKER_LENGTH} characters of "
            "A-Z 0-9 . - = / (an optional leading ^), starting and ending with a letter or digit"
        )
    return norm


@dataclass(frozen=True, slots=True)
class TickerFilter:
    """
    Which tickers a subscriber wants: every ticker, or a set of symbols.

    Build it with :meth:`parse` (from the raw query value) or :meth:`of` (from
    symbols); ``TickerFilter()`` means every ticker.
    """

    tickers: frozenset[str] | None = None
    """The wanted symbols, upper-case; ``None`` means every ticker."""

    @property
    def is_all(self) -> bool:
        """True when the filter lets every ticker through."""
        return self.tickers is None

    @classmethod
    def parse(cls, raw: str | None) -> TickerFilter:
        """
        Parse the raw ``tickers`` query value.

        Omitted (``None``), blank or containing ``*`` anywhere means every ticker.
        Otherwise a comma-separated, case-insensitive list; blanks around items and
        empty items are ignored and duplicates collapse.

        Raises:
            InvalidTickers: a symbol breaks the grammar, or there are more than
                :data:`MAX_FILTER_TICKERS` distinct symbols.
        """
        if raw is None:
            return cls()
        if len(raw) > _MAX_RAW_LENGTH:
            raise InvalidTickers(
                f"tickers value too long ({len(raw)} characters; at most {_MAX_RAW_LENGTH})"
            )
        return cls.of(raw.split(","))

    @classmethod
    def of(cls, symbols: Iterable[str] | None) -> TickerFilter:
        """
        Build a filter from symbols (``None`` or any ``"*"`` means every ticker).
        """
        if symbols is None:
            return cls()
        items = [s.strip() for s in symbols]
        if "*" in items:
            return cls()
        wanted = frozenset(normalize_ticker(s) for s in items if s)
        if not wanted:
            return cls()
        if len(wanted) > MAX_FILTER_TICKERS:
            raise InvalidTickers(
                f"too many tickers ({len(wanted)}; at most {MAX_FILTER_TICKERS} per connection)"
            )
        return cls(wanted)

    def matches(self, ticker: str) -> bool:
        """Tell whether a quote for ``ticker`` (upper-case) passes the filter."""
        return self.tickers is None or ticker in self.tickers

    def to_query(self) -> str | None:
        """The canonical query value (sorted symbols), or ``None`` for every ticker."""
        return None if self.tickers is None else ",".join(sorted(self.tickers))

    def __str__(self) -> str:
        return "*" if self.tickers is None else ",".join(sorted(self.tickers))
