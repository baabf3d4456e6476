"""The public testing kit (quotes_core.testing), used only through its public API."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Sequence

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from quotes_core import (
    MAX_FILTER_TICKERS,
    MAX_TICKER_LENGTH,
    InvalidQuote,
    InvalidQuoteReason,
    InvalidTickers,
    Quote,
    TickerFilter,
    parse_quote,
)
from quotes_core.testing import (
    SMALL_UNIVERSE,
    InvalidFilterQuery,
    MalformedPayload,
    UpstreamPayload,
    check_filter_laws,
    deliver_through_hub,
    filter_queries,
    invalid_filter_queries,
    malformed_payloads,
    quote_json,
    quote_streams,
    reference_filter,
    tickers,
    upstream_payloads,
)


def subscribe(f: TickerFilter, symbols: Sequence[str]) -> TickerFilter:
    return TickerFilter.of([*(f.tickers if f.tickers is not None else ["*"]), *symbols])


def unsubscribe(f: TickerFilter, symbols: Sequence[str]) -> TickerFilter:
    gone = {s.strip().upper() for s in symbols}
    return TickerFilter.of([t for t in f.tickers or () if t not in gone])


def test_ticker_filter_obeys_every_law() -> None:
    """TickerFilter.parse, set-based subscribe/unsubscribe and the hub pass all the laws."""
    check_filter_laws(
        TickerFilter.parse,
        subscribe=subscribe,
        unsubscribe=unsubscribe,
        deliver=deliver_through_hub,
        max_examples=60,
    )


class CaseSensitive:
    """A broken filter a user might write: it forgets to upper-case."""

    def __init__(self, raw: str | None) -> None:
        items = [i.strip() for i in (raw or "").split(",") if i.strip()]
        self.items = None if not items or "*" in items else set(items)

    def matches(self, ticker: str) -> bool:
        return self.items is None or ticker in self.items


def test_laws_catch_a_case_sensitive_filter() -> None:
    """The laws are not vacuous: a filter that ignores case fails, naming the law."""
    with pytest.raises(AssertionError, match="case-insensitive"):
        check_filter_laws(CaseSensitive, max_examples=50)


def test_laws_catch_a_lossy_delivery() -> None:
    """A deliver() that drops the last matching quote breaks 'delivered iff matches'."""

    def lossy(f: TickerFilter, stream: Sequence[Quote]) -> list[Quote]:
        return deliver_through_hub(f, stream)[:-1]

    with pytest.raises(AssertionError, match="delivered iff"):
        check_filter_laws(TickerFilter.parse, deliver=lossy, max_examples=50)


def test_laws_accept_a_plain_predicate() -> None:
    """A filter factory may return a plain ticker -> bool callable."""
    check_filter_laws(lambda raw: TickerFilter.parse(raw).matches, max_examples=20)


@given(filter_queries())
def test_filter_queries_are_valid_and_mean_the_reference(raw: str | None) -> None:
    """Every generated query value parses, to exactly what the reference model says."""
    assert TickerFilter.parse(raw).tickers == reference_filter(raw)


def test_filter_queries_reach_the_limits() -> None:
    """The edges are generated: exactly 1,000 symbols, and 16-character symbols."""
    biggest = find(filter_queries(), lambda r: len(reference_filter(r) or ()) == MAX_FILTER_TICKERS)
    assert len(TickerFilter.parse(biggest).tickers or ()) == MAX_FILTER_TICKERS
    longest = find(
        filter_queries(),
        lambda r: any(len(t) == MAX_TICKER_LENGTH for t in reference_filter(r) or ()),
    )
    assert TickerFilter.parse(longest).tickers


@given(invalid_filter_queries())
def test_invalid_filter_queries_are_rejected_for_their_reason(case: InvalidFilterQuery) -> None:
    """Every invalid value raises InvalidTickers, with a message matching its reason."""
    words = {"ticker": "invalid ticker", "too_many": "too many tickers", "too_long": "too long"}
    with pytest.raises(InvalidTickers, match=words[case.reason]):
        TickerFilter.parse(case.raw)


@given(upstream_payloads())
def test_upstream_payloads_parse_to_their_quote(case: UpstreamPayload) -> None:
    """A valid raw message parses to the quote it was built from."""
    assert parse_quote(case.raw).quote == case.quote


@given(malformed_payloads())
def test_malformed_payloads_fail_for_their_reason(case: MalformedPayload) -> None:
    """A malformed raw message is rejected with exactly the reason the server counts."""
    with pytest.raises(InvalidQuote) as info:
        parse_quote(case.raw)
    assert info.value.reason == case.reason


REASONS: list[InvalidQuoteReason] = [
    "json",
    "encoding",
    "schema",
    "ticker",
    "non_finite",
    "too_large",
]


@pytest.mark.parametrize("reason", REASONS)
@settings(max_examples=15)
@given(data=st.data())
def test_each_malformed_reason_is_generated(
    reason: InvalidQuoteReason, data: st.DataObject
) -> None:
    """Asking for one reason gives payloads of that reason, and they are rejected for it."""
    case = data.draw(malformed_payloads([reason]))
    assert case.reason == reason
    with pytest.raises(InvalidQuote, match=f"^{reason}:"):
        parse_quote(case.raw)


@given(st.from_type(Quote))
def test_from_type_quote_is_registered(quote: Quote) -> None:
    """Importing the kit makes st.from_type(Quote) generate valid quotes."""
    assert parse_quote(quote.to_json()).quote == quote


@given(quote_json())
def test_quote_json_is_canonical(text: str) -> None:
    """Generated JSON text is exactly what the server would send for it."""
    assert parse_quote(text).payload == text


@given(quote_streams(min_size=1))
def test_streams_are_ordered_over_the_universe(stream: list[Quote]) -> None:
    """Stream tickers come from the small universe and timestamps strictly increase."""
    assert {q.ticker for q in stream} <= set(SMALL_UNIVERSE)
    assert all(a.timestamp < b.timestamp for a, b in itertools.pairwise(stream))


def test_examples_shrink_to_readable_values() -> None:
    """Failing examples shrink to short symbols and round numbers, not noise."""
    assert find(tickers(), lambda t: True) == "A"
    quote = find(st.from_type(Quote), lambda q: q.close > 1)
    assert (quote.ticker, quote.open, quote.volume, quote.bid) == ("A", 0.0, 0, None)
    assert find(invalid_filter_queries(["ticker"]), lambda c: True).raw == "AAPL;"
    stream = find(quote_streams(), lambda s: len({q.ticker for q in s}) > 1)
    assert [q.ticker for q in stream] == ["AAPL", "MSFT"]


def test_missing_extra_gives_a_clear_import_error() -> None:
    """Without Hypothesis, importing quotes_core.testing names the extra to install."""
    code = (
        "import sys\n"
        "sys.modules['hypothesis'] = None\n"
        "import quotes_core\n"
        "try:\n"
        "    import quotes_core.testing\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'pip install "quotes-core[testing]"' in out.stdout
