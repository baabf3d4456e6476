"""The hub's read-only interest view: who wants every ticker, and which tickers by name."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from quotes_core import Hub, TickerFilter
from quotes_core.testing import universe_tickers


def test_interest_follows_subscribe_and_unsubscribe() -> None:
    """wants_all and tickers() reflect the current subscriptions, live."""
    hub: Hub[str] = Hub()
    view = hub.tickers()
    assert not hub.wants_all()
    assert set(view) == set()
    a = hub.subscribe(TickerFilter.parse("AAPL,MSFT"))
    b = hub.subscribe(TickerFilter.parse("msft"))
    assert set(view) == {"AAPL", "MSFT"}
    assert not hub.wants_all()
    w = hub.subscribe(TickerFilter())
    assert hub.wants_all()
    hub.unsubscribe(a)
    assert set(hub.tickers()) == {"MSFT"}
    hub.unsubscribe(w)
    hub.unsubscribe(b)
    assert not hub.wants_all()
    assert set(view) == set()


@given(st.lists(st.lists(universe_tickers(), max_size=3) | st.none(), max_size=8), st.data())
def test_interest_is_the_union_of_the_remaining_filters(
    filters: list[list[str] | None], data: st.DataObject
) -> None:
    """After any subscribes and unsubscribes, the view is exactly the union of what is left."""
    hub: Hub[str] = Hub()
    subs = [hub.subscribe(TickerFilter.of(f)) for f in filters]
    gone = data.draw(st.sets(st.sampled_from(range(len(subs)))) if subs else st.just(set[int]()))
    for i in gone:
        hub.unsubscribe(subs[i])
    left = [subs[i].filter for i in range(len(subs)) if i not in gone]
    assert hub.wants_all() == any(f.is_all for f in left)
    named = {t for f in left if f.tickers is not None for t in f.tickers}
    assert set(hub.tickers()) == named
