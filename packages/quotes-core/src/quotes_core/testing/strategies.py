"""
Strategies for symbols, ``tickers`` query values, quotes and quote streams.

Every strategy is a function returning a Hypothesis ``SearchStrategy``; examples
shrink towards short symbols (``"A"``), small lists and round numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal, NamedTuple

from hypothesis import strategies as st

from quotes_core.schema import Quote, encode_quote
from quotes_core.tickers import MAX_FILTER_TICKERS, MAX_TICKER_LENGTH, is_valid_ticker

__all__ = [
    "SMALL_UNIVERSE",
    "InvalidFilterQuery",
    "InvalidFilterReason",
    "any_case_tickers",
    "filter_queries",
    "invalid_filter_queries",
    "prices",
    "quote_json",
    "quote_streams",
    "quotes",
    "tickers",
    "timestamps",
    "universe_tickers",
]

SMALL_UNIVERSE: tuple[str, ...] = ("AAPL", "MSFT", "GOOGL", "BRK.B", "^GSPC", "EURUSD=X", "BTC-USD")
"""A few real symbol shapes: streams over them repeat tickers, so filters and conflation bite."""

_ENDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_MIDDLE = _ENDS + ".-=/"
_MAX_RAW = MAX_FILTER_TICKERS * (MAX_TICKER_LENGTH + 4)  # TickerFilter.parse's length limit


@st.composite
def _ticker(draw: st.DrawFn) -> str:
    caret = draw(st.sampled_from(["", "^"]))
    first = draw(st.sampled_from(_ENDS))
    if not draw(st.booleans()):
        return caret + first
    middle = draw(st.text(_MIDDLE, max_size=MAX_TICKER_LENGTH - 2 - len(caret)))
    return caret + first + middle + draw(st.sampled_from(_ENDS))


def tickers() -> st.SearchStrategy[str]:
    """
    Valid, upper-case symbols of 1 to 16 characters (``"A"``, ``"BRK.B"``, ``"^X-1"``).
    """
    return _ticker()


def _recase(draw: st.DrawFn, symbol: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(symbol), max_size=len(symbol)))
    return "".join(c.lower() if f else c for c, f in zip(symbol, flips, strict=True))


@st.composite
def _any_case(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    return _recase(draw, draw(base))


def any_case_tickers(base: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    """
    Valid symbols in any mix of case, as clients type them (``"aApL"``, ``"brk.B"``).

    Args:
        base: upper-case symbols to re-case; :func:`tickers` by default.
    """
    return _any_case(base if base is not None else tickers())


def universe_tickers(universe: Sequence[str] = SMALL_UNIVERSE) -> st.SearchStrategy[str]:
    """
    Symbols drawn from a small fixed universe (upper-case), shrinking to its first one.
    """
    return st.sampled_from(tuple(universe))


def _symbols(universe: Sequence[str] | None) -> st.SearchStrategy[str]:
    if universe is None:
        return tickers()
    return universe_tickers(universe) | tickers()


_PAD = st.sampled_from(["", "", " ", "  ", "\t"])


@st.composite
def _list_query(draw: st.DrawFn, universe: Sequence[str] | None, wildcard: bool) -> str:
    symbols = draw(st.lists(any_case_tickers(_symbols(universe)), min_size=1, max_size=12))
    items = [*symbols, *draw(st.lists(st.sampled_from(symbols), max_size=3))]  # duplicates
    if wildcard:
        items.insert(draw(st.integers(0, len(items))), "*")
    items += [""] * draw(st.integers(0, 2))  # empty items: "A,,B" and a trailing comma
    items = draw(st.permutations(items))
    return ",".join(draw(_PAD) + item + draw(_PAD) for item in items)


@st.composite
def _edge_query(draw: st.DrawFn) -> str:
    """Exactly the limits: 1,000 distinct symbols, and/or symbols of 16 characters."""
    long = draw(st.booleans())
    lead = draw(st.sampled_from(_ENDS[:26]))
    width = MAX_TICKER_LENGTH - 1 if long else 4
    symbols = [f"{lead}{i:0{width}d}" for i in range(MAX_FILTER_TICKERS)]
    if draw(st.booleans()):
        symbols = [s.lower() if i % 2 else s for i, s in enumerate(symbols)]
    return (", " if draw(st.booleans()) and not long else ",").join(symbols)


def filter_queries(
    universe: Sequence[str] | None = None, *, edges: bool = True
) -> st.SearchStrategy[str | None]:
    """
    Valid raw ``tickers`` query values, as a client writes them.

    ``None`` (omitted), ``""``, ``"*"``; comma lists in mixed case with blanks
    around items, empty items, duplicates and ``*`` anywhere; and (``edges``) the
    limits' edges: exactly 1,000 distinct symbols, symbols of exactly 16 characters.
    Compute what a value means with :func:`~quotes_core.testing.laws.reference_filter`.

    Args:
        universe: draw most symbols from these (so filters collide with
            :func:`quote_streams`); any valid symbol by default.
        edges: include the 1,000-symbol values (large; turn off for tests that
            print or send every filter).
    """
    options: list[st.SearchStrategy[str | None]] = [
        _list_query(universe, False),
        st.sampled_from([None, "", "*", " * ", ","]),
        _list_query(universe, True),
    ]
    if edges:
        options.append(_edge_query())
    return st.one_of(options)


InvalidFilterReason = Literal["ticker", "too_many", "too_long"]
"""Why a ``tickers`` value is rejected (HTTP 400 at the handshake)."""


class InvalidFilterQuery(NamedTuple):
    """A ``tickers`` value the server rejects, and why."""

    raw: str
    reason: InvalidFilterReason


def _bad_symbol(text: str) -> bool:
    item = text.strip()
    return bool(item) and item != "*" and "," not in item and not is_valid_ticker(item.upper())


_BAD_SYMBOLS = st.sampled_from(["AAPL;", "..", "-", "^", "A B", "<script>", "AAPL.", "ÄPPLE"]) | (
    st.text(min_size=1, max_size=20).filter(_bad_symbol)
)


@st.composite
def _bad_ticker_query(draw: st.DrawFn) -> InvalidFilterQuery:
    good = draw(st.lists(any_case_tickers(), max_size=5))
    bad = draw(_BAD_SYMBOLS | tickers().map(lambda t: t + "X" * (MAX_TICKER_LENGTH + 1 - len(t))))
    good.insert(draw(st.integers(0, len(good))), bad)
    return InvalidFilterQuery(",".join(good), "ticker")


@st.composite
def _too_many_query(draw: st.DrawFn) -> InvalidFilterQuery:
    extra = draw(st.integers(1, 5))
    lead = draw(st.sampled_from(_ENDS[:26]))
    symbols = [f"{lead}{i:04d}" for i in range(MAX_FILTER_TICKERS + extra)]
    return InvalidFilterQuery(",".join(symbols), "too_many")


@st.composite
def _too_long_query(draw: st.DrawFn) -> InvalidFilterQuery:
    symbol = draw(tickers())
    count = _MAX_RAW // (len(symbol) + 1) + 2 + draw(st.integers(0, 3))
    return InvalidFilterQuery(",".join([symbol] * count), "too_long")


def invalid_filter_queries(
    reasons: Sequence[InvalidFilterReason] = ("ticker", "too_many", "too_long"),
) -> st.SearchStrategy[InvalidFilterQuery]:
    """
    Raw ``tickers`` values the server answers with HTTP 400, with the reason.

    ``ticker``: one symbol breaks the grammar (``"AAPL;"``, 17 characters...)
    among valid ones; ``too_many``: more than 1,000 distinct symbols;
    ``too_long``: the raw value is longer than 20,000 characters.
    """
    makers = {"ticker": _bad_ticker_query, "too_many": _too_many_query, "too_long": _too_long_query}
    return st.one_of([makers[r]() for r in reasons])


def prices() -> st.SearchStrategy[float]:
    """Finite prices between -1e12 and 1e12 (shrinking to ``0.0``)."""
    return st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


_ZONES = [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))]


def timestamps() -> st.SearchStrategy[datetime]:
    """Aware datetimes from 1970-01-02 to 2200, in UTC or another fixed offset."""
    return st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(_ZONES),
    )


@st.composite
def _quote(
    draw: st.DrawFn, ticker: st.SearchStrategy[str], ts: st.SearchStrategy[datetime]
) -> Quote:
    return Quote(
        ticker=draw(ticker),
        timestamp=draw(ts),
        open=draw(prices()),
        high=draw(prices()),
        low=draw(prices()),
        close=draw(prices()),
        volume=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        bid=draw(st.none() | prices()),
        ask=draw(st.none() | prices()),
    )


def quotes(
    ticker: st.SearchStrategy[str] | None = None,
    timestamp: st.SearchStrategy[datetime] | None = None,
) -> st.SearchStrategy[Quote]:
    """
    Valid :class:`~quotes_core.Quote` objects; ``bid``/``ask`` present or not.

    Args:
        ticker: symbols to use (any case is fine: the model upper-cases);
            :func:`tickers` by default.
        timestamp: :func:`timestamps` by default.
    """
    return _quote(
        tickers() if ticker is None else ticker,
        timestamps() if timestamp is None else timestamp,
    )


def quote_json(ticker: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    """The canonical JSON text of :func:`quotes`, exactly as the server sends it."""
    return quotes(ticker).map(encode_quote)


_STREAM_START = datetime(2026, 2, 12, 14, 30, tzinfo=UTC)


@st.composite
def _stream(draw: st.DrawFn, universe: Sequence[str], min_size: int, max_size: int) -> list[Quote]:
    symbols = draw(st.lists(universe_tickers(universe), min_size=min_size, max_size=max_size))
    now = _STREAM_START + timedelta(seconds=draw(st.integers(0, 10**6)))
    stream = []
    for symbol in symbols:
        now += timedelta(microseconds=draw(st.integers(1, 10**6)))
        stream.append(draw(quotes(st.just(symbol), st.just(now))))
    return stream


def quote_streams(
    universe: Sequence[str] = SMALL_UNIVERSE, *, min_size: int = 0, max_size: int = 30
) -> st.SearchStrategy[list[Quote]]:
    """
    Ordered lists of quotes over a small universe, as a feed publishes them.

    Tickers repeat (so filters and conflation see collisions) and timestamps
    strictly increase, so every quote in a stream is distinct and its order visible.
    """
    return _stream(tuple(universe), min_size, max_size)
