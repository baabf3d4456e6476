"""The sans-I/O fan-out hub."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_core import Hub, Mode, Quote, Subscription, TickerFilter, encode_quote
from quotes_core.testing import make_quote, universe_tickers

UNIVERSE = ["AAPL", "MSFT", "GOOGL", "BRK.B", "^GSPC", "EURUSD=X", "BTC-USD"]


def quote(ticker: str, seq: int) -> tuple[Quote, str]:
    """A quote whose volume carries a sequence number, and its payload."""
    q = make_quote(ticker, seq)
    return q, encode_quote(q)


def seqs(payloads: list[str]) -> list[tuple[str, int]]:
    return [(d["ticker"], d["volume"]) for d in map(json.loads, payloads)]


def test_publish_reaches_only_matching_subscribers() -> None:
    """A quote goes to subscribers of its ticker and to wildcard ones, nobody else."""
    hub = Hub()
    apple = hub.subscribe(TickerFilter.parse("AAPL"))
    both = hub.subscribe(TickerFilter.parse("AAPL,MSFT"))
    everything = hub.subscribe()
    woken = hub.publish(*quote("MSFT", 1))
    assert woken == [both, everything]
    assert hub.drain(apple) == []
    assert seqs(hub.drain(both)) == [("MSFT", 1)]
    assert seqs(hub.drain(everything)) == [("MSFT", 1)]
    assert hub.subscribers("MSFT") == 2
    assert hub.fanned_out == 2


def test_woken_only_on_empty_to_non_empty() -> None:
    """publish() wakes a subscriber once, until it drains."""
    hub = Hub()
    sub = hub.subscribe()
    assert hub.publish(*quote("AAPL", 1)) == [sub]
    assert hub.publish(*quote("AAPL", 2)) == []
    assert len(hub.drain(sub)) == 2
    assert hub.publish(*quote("AAPL", 3)) == [sub]


def test_same_payload_object_shared_by_all() -> None:
    """The encoded text is built once and shared, not copied per subscriber."""
    hub = Hub()
    subs = [hub.subscribe() for _ in range(3)]
    q, payload = quote("AAPL", 1)
    hub.publish(q, payload)
    assert all(hub.drain(s)[0] is payload for s in subs)


def test_conflation_past_the_bound() -> None:
    """Past the bound only the newest quote per ticker is kept, and drops are counted."""
    hub = Hub(bound=3)
    sub = hub.subscribe()
    for i, t in enumerate(["AAPL", "MSFT", "AAPL", "MSFT", "GOOGL", "MSFT", "AAPL"]):
        hub.publish(*quote(t, i))
    assert sub.pending == 3 + 3
    assert sub.conflated == 1
    out = seqs(hub.drain(sub))
    assert out == [("AAPL", 0), ("MSFT", 1), ("AAPL", 2), ("GOOGL", 4), ("MSFT", 5), ("AAPL", 6)]
    assert (sub.received, sub.delivered, sub.pending) == (7, 6, 0)


def test_latest_mode_conflates_from_the_first_quote() -> None:
    """Latest-only subscribers hold one pending quote per ticker."""
    hub = Hub()
    sub = hub.subscribe(mode=Mode.LATEST)
    for i, t in enumerate(["AAPL", "MSFT", "AAPL"]):
        hub.publish(*quote(t, i))
    assert seqs(hub.drain(sub)) == [("MSFT", 1), ("AAPL", 2)]
    assert sub.conflated == 1


def test_wildcard_conflation_map_is_capped() -> None:
    """A wildcard subscriber's conflation map evicts its oldest ticker at the cap."""
    hub = Hub(bound=1, wildcard_ticker_cap=2)
    sub = hub.subscribe()
    for i, t in enumerate(["AAPL", "MSFT", "GOOGL", "TSLA"]):
        hub.publish(*quote(t, i))
    assert sub.pending == 1 + 2
    assert sub.conflated == 1
    assert seqs(hub.drain(sub)) == [("AAPL", 0), ("GOOGL", 2), ("TSLA", 3)]


def test_unsubscribe_frees_everything() -> None:
    """After unsubscribe the hub forgets the subscriber and its buffer."""
    hub = Hub()
    sub = hub.subscribe(TickerFilter.parse("AAPL,MSFT"))
    wild = hub.subscribe()
    hub.publish(*quote("AAPL", 1))
    hub.unsubscribe(sub)
    hub.unsubscribe(sub)  # idempotent
    hub.unsubscribe(wild)
    assert len(hub) == 0
    assert hub._by_ticker == {}
    assert not hub._wildcard
    assert sub.pending == 0
    assert not sub.active
    assert hub.publish(*quote("AAPL", 2)) == []


@pytest.mark.parametrize("bound", [0, -1])
def test_bound_must_be_positive(bound: int) -> None:
    """A zero or negative bound is a programming error, reported as such."""
    with pytest.raises(ValueError, match="bound"):
        Hub(bound=bound)
    with pytest.raises(ValueError, match="bound"):
        Hub().subscribe(bound=bound)


# --- properties -----------------------------------------------------------------------------


@dataclass
class Ref:
    """What a subscriber should see, computed the slow and obvious way."""

    sub: Subscription
    delivered: list[tuple[str, int]]


filters = st.none() | st.sets(st.sampled_from(UNIVERSE), min_size=1, max_size=4)
# an operation: publish a ticker, or drain subscriber i
operations = st.lists(
    st.one_of(
        universe_tickers().map(lambda t: ("pub", t)), st.integers(0, 3).map(lambda i: ("drain", i))
    ),
    max_size=200,
)


@given(
    st.lists(filters, min_size=1, max_size=4),
    operations,
    st.integers(1, 8),
    st.sampled_from(list(Mode)),
)
def test_hub_properties(
    wanted: list[set[str] | None], ops: list[tuple[str, object]], bound: int, mode: Mode
) -> None:
    """
    Never a quote a filter excludes; never more pending than bound + tickers; in order
    below the bound; after conflation each ticker's last delivered quote is the newest.
    """
    hub = Hub(bound=bound)
    refs = [Ref(hub.subscribe(TickerFilter.of(w), mode=mode), []) for w in wanted]
    since_drain: list[list[tuple[str, int]]] = [[] for _ in refs]
    for seq, (op, arg) in enumerate(ops):
        if op == "pub":
            ticker = str(arg)
            hub.publish(*quote(ticker, seq))
            for i, r in enumerate(refs):
                if r.sub.filter.matches(ticker):
                    since_drain[i].append((ticker, seq))
        else:
            i = int(str(arg)) % len(refs)
            r = refs[i]
            got = seqs(hub.drain(r.sub))
            expected = since_drain[i]
            if mode is Mode.FIFO and len(expected) <= bound:
                assert got == expected  # lossless and in order below the bound
            # newest of each ticker is always the last one delivered for it
            newest = dict(expected)
            last_seen = dict(got)
            assert last_seen == newest
            assert set(got) <= set(expected)
            # per ticker, publication order is kept
            for t in newest:
                per = [s for tt, s in got if tt == t]
                assert per == sorted(per)
            r.delivered.extend(got)
            since_drain[i] = []
        for r in refs:
            cap = len(UNIVERSE) if r.sub.filter.tickers is None else len(r.sub.filter.tickers)
            assert r.sub.pending <= (bound if mode is Mode.FIFO else 0) + cap
    for r in refs:
        r.delivered.extend(seqs(hub.drain(r.sub)))
        assert all(r.sub.filter.matches(t) for t, _ in r.delivered)
        assert r.sub.received == r.sub.delivered + r.sub.conflated
        assert r.sub.delivered == len(r.delivered)
