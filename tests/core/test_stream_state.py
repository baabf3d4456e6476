"""The stream protocol's pure state: history, snapshot, throttle, filter changes."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_core import (
    Action,
    History,
    Hub,
    Mode,
    Snapshot,
    StreamItem,
    Subscription,
    Throttle,
    TickerFilter,
    apply_action,
)
from quotes_core.errors import ActionError
from quotes_core.testing import SMALL_UNIVERSE, make_quote

UNIVERSE = list(SMALL_UNIVERSE)
EPOCH = "e1"

ticker_sets = st.frozensets(st.sampled_from(UNIVERSE), max_size=len(UNIVERSE))
filters = st.one_of(st.just(TickerFilter()), ticker_sets.map(TickerFilter))


def items_from(tickers: list[str], gaps: list[float]) -> list[StreamItem[int]]:
    """Sequenced items 1..n with non-decreasing times; payload = seq."""
    out: list[StreamItem[int]] = []
    now = 0.0
    for seq, (ticker, gap) in enumerate(zip(tickers, gaps, strict=True), start=1):
        now += gap
        out.append(StreamItem(seq, EPOCH, ticker, seq, now))
    return out


@st.composite
def streams(draw: st.DrawFn, max_size: int = 60) -> list[StreamItem[int]]:
    tickers = draw(st.lists(st.sampled_from(UNIVERSE), max_size=max_size))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=len(tickers),
                         max_size=len(tickers)))  # fmt: skip
    return items_from(tickers, gaps)


# --- history -----------------------------------------------------------------------------------


@given(
    stream=streams(),
    size=st.integers(1, 30),
    age=st.sampled_from([0.5, 2.0, 10.0, 1000.0]),
    after=st.integers(-2, 70),
    wait=st.sampled_from([0.0, 1.0, 5.0]),
    ticker_filter=filters,
    limit=st.none() | st.integers(0, 40),
)
def test_history_resume_matches_the_reference(
    stream: list[StreamItem[int]],
    size: int,
    age: float,
    after: int,
    wait: float,
    ticker_filter: TickerFilter,
    limit: int | None,
) -> None:
    """
    since() returns exactly the matching items after seq, or None when one is gone
    or when there are more than the limit.
    """
    history: History[int] = History(size, age)
    for item in stream:
        history.append(item)
    last = stream[-1].seq if stream else 0
    now = (stream[-1].time if stream else 0.0) + wait
    got = history.since(after, last, ticker_filter, now, limit)
    # reference: everything kept, then the window is what is young enough among the last `size`
    window = [i for i in stream[-size:] if i.time >= now - age]
    missed = [i for i in stream if i.seq > after]
    if after < 0 or after > last:
        assert got is None
    elif after == last:
        assert got == []
    elif window and window[0].seq <= after + 1:
        replay = [i for i in missed if ticker_filter.matches(i.ticker)]
        assert got == (replay if limit is None or len(replay) <= limit else None)
    else:
        assert got is None
    assert len(history) <= size


def test_history_rejects_out_of_order_items_and_bad_bounds() -> None:
    """Positions must increase; size and age must be positive."""
    history: History[int] = History(10, 1.0)
    history.append(StreamItem(5, EPOCH, "AAPL", 0, 0.0))
    with pytest.raises(ValueError, match="does not follow"):
        history.append(StreamItem(5, EPOCH, "AAPL", 0, 0.0))
    with pytest.raises(ValueError):
        History(0, 1.0)
    with pytest.raises(ValueError):
        History(1, 0.0)


def test_history_clear_forgets_the_epoch() -> None:
    """After clear() nothing older can be resumed; the newest position still can."""
    history: History[int] = History(10, 60.0)
    for item in items_from(["AAPL", "MSFT"], [0.0, 0.0]):
        history.append(item)
    history.clear()
    assert history.since(0, 2, TickerFilter(), 0.0) is None
    assert history.since(2, 2, TickerFilter(), 0.0) == []
    assert history.first_seq is None


def test_a_full_window_gives_the_garbage_collector_nothing_to_walk() -> None:
    """Held items are not tracked by the collector: a full collection of a loaded
    server walks its connections, not its 100,000-quote window."""
    history: History[bytes] = History(10_000, 60.0)
    gc.collect()
    before = len(gc.get_objects())
    for seq in range(1, 10_001):
        history.append(StreamItem(seq, EPOCH, "AAPL", b"frame", 0.0))
    gc.collect()
    assert len(history) == 10_000
    assert len(gc.get_objects()) - before < 100
    replay = history.since(9_998, 10_000, TickerFilter(), 0.0)
    assert replay == [
        StreamItem(9_999, EPOCH, "AAPL", b"frame", 0.0),
        StreamItem(10_000, EPOCH, "AAPL", b"frame", 0.0),
    ]
    assert all(type(item) is StreamItem for item in replay or [])


# --- snapshot + live ---------------------------------------------------------------------------


@given(stream=streams(), data=st.data(), ticker_filter=filters)
def test_snapshot_then_live_never_loses_or_duplicates(
    stream: list[StreamItem[int]], data: st.DataObject, ticker_filter: TickerFilter
) -> None:
    """Snapshot at subscribe time + the live part: latest-before, all-after, nothing twice."""
    k = data.draw(st.integers(0, len(stream)))
    snapshot: Snapshot[int] = Snapshot()
    hub: Hub[int] = Hub(bound=10_000)
    sub = None
    first: list[int] = []
    for n, item in enumerate(stream):
        if n == k:
            sub = hub.subscribe(ticker_filter)
            first = [i.payload for i in snapshot.select(ticker_filter)]
        snapshot.update(item)
        hub.publish(make_quote(item.ticker), item.payload)
    if sub is None:
        sub = hub.subscribe(ticker_filter)
        first = [i.payload for i in snapshot.select(ticker_filter)]
    live = hub.drain(sub)
    before, after = stream[:k], stream[k:]
    latest_before: dict[str, int] = {}
    for item in before:
        if ticker_filter.matches(item.ticker):
            latest_before[item.ticker] = item.seq
    assert first == sorted(latest_before.values())
    assert live == [i.seq for i in after if ticker_filter.matches(i.ticker)]
    combined = first + live
    assert len(set(combined)) == len(combined)
    assert combined == sorted(combined)
    # converges: the last thing seen per ticker is the last matching quote published
    by_seq = {i.seq: i.ticker for i in stream}
    seen_last = {by_seq[s]: s for s in combined}
    want_last = {i.ticker: i.seq for i in stream if ticker_filter.matches(i.ticker)}
    assert seen_last == want_last


def test_snapshot_select_by_tickers() -> None:
    """select() also takes plain tickers (the ones a subscribe action adds)."""
    snapshot: Snapshot[int] = Snapshot()
    for item in items_from(["AAPL", "MSFT", "AAPL"], [0, 0, 0]):
        snapshot.update(item)
    assert [i.seq for i in snapshot.select(["MSFT", "AAPL", "GOOGL"])] == [2, 3]
    assert snapshot.get("GOOGL") is None
    assert len(snapshot) == 2


# --- throttle ----------------------------------------------------------------------------------


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(UNIVERSE[:3]), st.sampled_from([0.0, 0.01, 0.1, 0.3, 1.0])),
        max_size=80,
    ),
    max_hz=st.sampled_from([0.1, 1.0, 3.0, 10.0, 100.0]),
    release_every=st.integers(1, 4),
)
def test_throttle_never_exceeds_its_rate_and_ends_on_the_newest(
    steps: list[tuple[str, float]], max_hz: float, release_every: int
) -> None:
    """Per ticker: sends >= 1/max_hz apart, in order, never twice; the last sent is the newest."""
    throttle: Throttle[int] = Throttle(max_hz)
    sent: list[tuple[float, StreamItem[int]]] = []
    now = 0.0
    published: list[StreamItem[int]] = []
    for n, (ticker, gap) in enumerate(steps, start=1):
        now += gap
        item = StreamItem(n, EPOCH, ticker, n, now)
        published.append(item)
        sent += [(now, i) for i in throttle.admit([item], now)]
        if n % release_every == 0:
            sent += [(now, i) for i in throttle.release(now)]
    while (due := throttle.next_due()) is not None:
        # overdue when the caller has not released since: it goes out at once
        now = max(now, due)
        sent += [(now, i) for i in throttle.release(now)]
    assert throttle.held == 0
    last_time: dict[str, float] = {}
    last_seq: dict[str, int] = {}
    for when, item in sent:
        if item.ticker in last_time:
            assert when - last_time[item.ticker] >= throttle.interval - 1e-9
            assert item.seq > last_seq[item.ticker]
        last_time[item.ticker] = when
        last_seq[item.ticker] = item.seq
    newest = {i.ticker: i.seq for i in published}
    assert last_seq == newest
    dropped = len(published) - len(sent)
    assert throttle.conflated == dropped


def test_throttle_retain_and_bad_rate() -> None:
    """retain() drops held items of tickers a new filter rejects; the rate must be positive."""
    throttle: Throttle[int] = Throttle(1.0)
    items = items_from(["AAPL", "AAPL", "MSFT", "MSFT"], [0, 0, 0, 0])
    assert [i.seq for i in throttle.admit(items, 0.0)] == [1, 3]
    assert throttle.held == 2
    throttle.retain(TickerFilter.of(["MSFT", "GOOGL"]))
    assert [i.seq for i in throttle.release(1.0)] == [4]
    assert throttle.admit(items_from(["MSFT"], [0]), 1.5) == []
    throttle.retain(TickerFilter(frozenset()))
    assert throttle.next_due() is None
    with pytest.raises(ValueError):
        Throttle(0)


# --- filter changes in the hub -----------------------------------------------------------------

actions = st.one_of(
    st.builds(Action, st.sampled_from(["subscribe", "set"]), st.one_of(st.none(), ticker_sets)),
    st.builds(Action, st.just("unsubscribe"), st.one_of(st.none(), ticker_sets)),
)


@given(
    initial=st.lists(filters, min_size=1, max_size=4),
    ops=st.lists(st.tuples(st.integers(0, 3), actions, st.booleans()), max_size=30),
)
def test_filter_changes_keep_the_index_equal_to_the_reference(
    initial: list[TickerFilter], ops: list[tuple[int, Action, bool]]
) -> None:
    """Any subscribe/unsubscribe/set sequence leaves the index what the filters say."""
    hub: Hub[int] = Hub()
    subs = [hub.subscribe(f, mode=Mode.FIFO) for f in initial]
    closed: set[int] = set()
    for index, action, close in ops:
        n = index % len(subs)
        sub = subs[n]
        if n in closed:
            continue
        if close and len(closed) < len(subs) - 1:
            hub.unsubscribe(sub)
            closed.add(n)
            continue
        try:
            new = apply_action(sub.filter, action)
        except ActionError:
            assert action.kind == "unsubscribe"
            assert sub.filter.is_all
            assert action.tickers is not None
            continue
        hub.change_filter(sub, new)
    live = [s for i, s in enumerate(subs) if i not in closed]
    assert hub.index() == reference_index(live)
    assert len(hub) == len(live)
    for ticker in UNIVERSE:
        woken = hub.publish(make_quote(ticker), 1)
        assert set(woken) <= {s for s in live if s.filter.matches(ticker)}
        assert hub.subscribers(ticker) == sum(s.filter.matches(ticker) for s in live)
        for s in live:
            assert (hub.drain(s) == [1]) == s.filter.matches(ticker)


def reference_index(subs: list[Subscription[int]]) -> dict[str, frozenset[Subscription[int]]]:
    out: dict[str, set[Subscription[int]]] = {}
    for s in subs:
        key = s.filter.tickers
        for t in ["*"] if key is None else key:
            out.setdefault(t, set()).add(s)
    return {t: frozenset(v) for t, v in out.items()}


def test_change_filter_on_a_closed_subscription_fails() -> None:
    """A closed subscription cannot be re-filtered (it would re-enter the index)."""
    hub: Hub[int] = Hub()
    sub = hub.subscribe(TickerFilter.of(["AAPL"]))
    hub.unsubscribe(sub)
    with pytest.raises(ValueError, match="closed"):
        hub.change_filter(sub, TickerFilter())
    assert hub.index() == {}
