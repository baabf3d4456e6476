"""Hypothesis strategies shared by the test suite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from quotes_core import Quote

_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_MIDDLE = _FIRST + ".-=/"

tickers = st.builds(
    lambda caret, first, middle, last: caret + first + middle + last,
    st.sampled_from(["", "^"]),
    st.sampled_from(_FIRST),
    st.text(_MIDDLE, max_size=12),
    st.sampled_from(_FIRST),
)
"""Valid, upper-case symbols."""

small_tickers = st.sampled_from(["AAPL", "MSFT", "GOOGL", "BRK.B", "^GSPC", "EURUSD=X", "BTC-USD"])
"""A small universe, so hub tests see collisions and conflation."""


def _case_variants(symbol: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(symbol), max_size=len(symbol)).map(
        lambda flips: "".join(c.lower() if f else c for c, f in zip(symbol, flips, strict=True))
    )


any_case_tickers = tickers.flatmap(_case_variants)

prices = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))]),
)


@st.composite
def quotes(draw: st.DrawFn, ticker: st.SearchStrategy[str] = tickers) -> Quote:
    return Quote(
        ticker=draw(ticker),
        timestamp=draw(timestamps),
        open=draw(prices),
        high=draw(prices),
        low=draw(prices),
        close=draw(prices),
        volume=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        bid=draw(st.none() | prices),
        ask=draw(st.none() | prices),
    )
