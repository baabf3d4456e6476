"""Parsing the ``tickers`` query value."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_core import MAX_FILTER_TICKERS, InvalidTickers, TickerFilter
from quotes_core.testing import any_case_tickers


@pytest.mark.parametrize("raw", [None, "", " ", ",,", "*", "AAPL,*", " * ,msft"])
def test_every_ticker(raw: str | None) -> None:
    """Omitted, blank or `*` anywhere means every ticker."""
    f = TickerFilter.parse(raw)
    assert f.is_all
    assert f.matches("ANYTHING")
    assert f.to_query() is None


def test_list_is_case_insensitive_trimmed_and_deduplicated() -> None:
    """A comma list keeps distinct upper-case symbols; blanks and empty items are ignored."""
    f = TickerFilter.parse(" aapl, MSFT,,Aapl ,googl,")
    assert f.tickers == {"AAPL", "MSFT", "GOOGL"}
    assert f.matches("MSFT")
    assert not f.matches("TSLA")
    assert f.to_query() == "AAPL,GOOGL,MSFT"


@pytest.mark.parametrize("symbol", ["BRK.B", "BF-B", "^GSPC", "EURUSD=X", "BTC-USD", "7203.T", "A"])
def test_real_symbols_accepted(symbol: str) -> None:
    """Real-world symbol shapes pass the grammar."""
    assert TickerFilter.parse(symbol.lower()).tickers == {symbol}


@pytest.mark.parametrize(
    "raw", ["AAPL;", "..", "-", "^", "A B", "AAPL,MS FT", "<script>", "A" * 17, "ÄPPLE", "AAPL."]
)
def test_junk_rejected_with_reason(raw: str) -> None:
    """Junk symbols raise a 400-class error that names the culprit."""
    with pytest.raises(InvalidTickers) as info:
        TickerFilter.parse(raw)
    assert info.value.http_status == 400
    assert "invalid ticker" in str(info.value)


def test_count_is_bounded() -> None:
    """More than the maximum number of distinct symbols is rejected, the maximum is not."""
    ok = ",".join(f"T{i}" for i in range(MAX_FILTER_TICKERS))
    assert len(TickerFilter.parse(ok).tickers or ()) == MAX_FILTER_TICKERS
    with pytest.raises(InvalidTickers, match="too many tickers"):
        TickerFilter.parse(ok + ",EXTRA")


def test_raw_length_is_bounded() -> None:
    """An absurdly long value is refused before it is split."""
    with pytest.raises(InvalidTickers, match="too long"):
        TickerFilter.parse("A," * 100_000)


@given(st.lists(any_case_tickers(), min_size=1, max_size=20), st.randoms())
def test_parse_is_case_and_order_insensitive(symbols: list[str], rnd: random.Random) -> None:
    """Changing case or order of the list never changes the filter."""
    shuffled = symbols[:]
    rnd.shuffle(shuffled)
    a = TickerFilter.parse(",".join(symbols))
    b = TickerFilter.parse(",".join(s.swapcase() for s in shuffled))
    assert a == b
    assert a.tickers == {s.upper() for s in symbols}


@given(st.lists(any_case_tickers(), max_size=20))
def test_parse_is_idempotent(symbols: list[str]) -> None:
    """Parsing the canonical query of a filter gives the same filter."""
    f = TickerFilter.parse(",".join(symbols))
    assert TickerFilter.parse(f.to_query()) == f
    assert TickerFilter.parse(str(f)) == f
