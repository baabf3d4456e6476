"""Ticker grants are exact: a present list grants what it lists, an empty one nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_core import TickerFilter
from quotes_core.testing.strategies import any_case_tickers, tickers, universe_tickers
from quotes_server.auth import Grant, InvalidGrant, parse_grant

_PAD = st.sampled_from(["", " ", "  ", "\t"])
_symbols = universe_tickers() | tickers()


@st.composite
def _claims(draw: st.DrawFn, symbols: list[str]) -> object:
    """``symbols`` as a token lists them: a list or a comma string, any case, blanks."""
    items = [draw(_PAD) + draw(any_case_tickers(st.just(s))) + draw(_PAD) for s in symbols]
    items += [draw(_PAD)] * draw(st.integers(0, 2))  # blank items: "A,,B" and a trailing comma
    items = draw(st.permutations(items))
    return ",".join(items) if draw(st.booleans()) else items


@st.composite
def _empty_claims(draw: st.DrawFn) -> object:
    """Every way of listing no ticker: ``null``, ``[]``, ``""``, ``" , "``, ``[" "]``."""
    blanks = draw(st.lists(_PAD, max_size=4))
    return draw(st.sampled_from([None, blanks, ",".join(blanks)]))


def _filters() -> st.SearchStrategy[TickerFilter]:
    return st.one_of(
        st.just(TickerFilter()),
        st.lists(_symbols, max_size=8).map(lambda s: TickerFilter(frozenset(s))),
    )


@given(
    st.lists(_symbols, min_size=1, max_size=8).flatmap(lambda s: st.tuples(st.just(s), _claims(s)))
)
def test_a_grant_is_exactly_what_it_lists(listed_and_claim: tuple[list[str], object]) -> None:
    """A list without ``*`` grants its symbols, normalised, and nothing more."""
    listed, claim = listed_and_claim
    assert parse_grant(claim) == frozenset(listed)


@given(st.lists(_symbols, max_size=8).flatmap(_claims), _filters())
def test_a_grant_never_admits_a_ticker_it_does_not_list(
    claim: object, wanted: TickerFilter
) -> None:
    """Whatever the claim and the request, an admitted request names only granted tickers."""
    granted = parse_grant(claim)
    assert granted is not None
    if Grant("t", granted).allows(wanted):
        assert wanted.tickers is not None
        assert wanted.tickers <= granted
        assert granted  # an empty grant admits nothing at all


@given(_empty_claims(), _filters())
def test_an_empty_grant_admits_nothing(claim: object, wanted: TickerFilter) -> None:
    """``null``, ``[]``, ``""`` or only blanks and commas grant no ticker, and no request passes."""
    assert parse_grant(claim) == frozenset()
    assert not Grant("t", parse_grant(claim)).allows(wanted)


@given(
    st.lists(_symbols, max_size=8).flatmap(_claims),
    st.integers(0, 8),
    _PAD,
    _filters(),
)
def test_a_star_anywhere_admits_everything(
    claim: object, at: int, pad: str, wanted: TickerFilter
) -> None:
    """``"*"``, alone or anywhere in the list, grants every ticker."""
    star = f"{pad}*{pad}"
    if isinstance(claim, str):
        items = claim.split(",")
        with_star: object = ",".join([*items[:at], star, *items[at:]])
    else:
        assert isinstance(claim, list)
        with_star = [*claim[:at], star, *claim[at:]]
    assert parse_grant(with_star) is None
    assert Grant("t", parse_grant(with_star)).allows(wanted)


@pytest.mark.parametrize(
    "claim", [5, True, {"AAPL": 1}, ["AAPL", 5], [None], "AAPL;", [".."], ["AAPL,MSFT"], 1.5]
)
def test_claims_that_are_not_symbols_are_invalid(claim: object) -> None:
    """A claim that is not a list of symbols or a comma string is refused, not read as empty."""
    with pytest.raises(InvalidGrant):
        parse_grant(claim)
