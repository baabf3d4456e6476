"""
The ticker filter's laws, written down so that any filter-like code can be checked.

A *filter factory* turns a raw ``tickers`` query value (``None`` when omitted) into
a *filter*: an object with ``matches(ticker) -> bool`` (like
:class:`~quotes_core.TickerFilter`) or a plain ``ticker -> bool`` callable. Tickers
given to ``matches`` are canonical (upper-case), as in quote frames.

The laws:

1. :func:`law_case_insensitive`: the case of the query does not matter.
2. :func:`law_all_means_everything`: omitted, blank and ``*`` anywhere mean every ticker.
3. :func:`law_order_and_duplicates_irrelevant`: so do order, repeats, blanks and empty items.
4. :func:`law_subscribe_is_union`: listing ``a`` then ``b`` wants what either wants
   (and, given a ``subscribe`` operation, subscribing is that union).
5. :func:`law_unsubscribe_is_difference`: given an ``unsubscribe`` operation, it
   removes exactly the named symbols (what an emptied or every-ticker filter
   becomes is left to the implementation).
6. :func:`law_delivered_iff_matches`: a stream delivered through the filter (by
   the hub, or by your own routing) keeps exactly the quotes whose ticker matches,
   in order.
7. :func:`law_matches_reference`: the filter agrees with :func:`reference_filter`,
   the contract's semantics written independently of :class:`~quotes_core.TickerFilter`.

Laws 1-6 are algebra (they also hold for a filter that adds aliases); law 7 pins
the exact meaning. Each law is a plain function that raises ``AssertionError``
with a message when broken, for use inside your own ``@given`` tests;
:func:`check_filter_laws` runs them all with generated inputs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from hypothesis import given, settings
from hypothesis import strategies as st

from quotes_core.hub import Hub
from quotes_core.schema import Quote
from quotes_core.testing.strategies import (
    SMALL_UNIVERSE,
    any_case_tickers,
    filter_queries,
    quote_streams,
    tickers,
    universe_tickers,
)
from quotes_core.tickers import TickerFilter

__all__ = [
    "FilterFactory",
    "FilterLike",
    "check_filter_laws",
    "deliver_through_hub",
    "law_all_means_everything",
    "law_case_insensitive",
    "law_delivered_iff_matches",
    "law_matches_reference",
    "law_order_and_duplicates_irrelevant",
    "law_subscribe_is_union",
    "law_unsubscribe_is_difference",
    "reference_filter",
]


class _HasMatches(Protocol):
    def matches(self, ticker: str) -> bool: ...


FilterLike = _HasMatches | Callable[[str], bool]
"""An object with ``matches(ticker)``, or a ``ticker -> bool`` callable."""

FilterFactory = Callable[[str | None], Any]
"""Builds a :data:`FilterLike` from a raw ``tickers`` query value (``None``: omitted)."""

Deliver = Callable[[Any, Sequence[Quote]], Sequence[Quote]]
Change = Callable[[Any, Sequence[str]], Any]


def reference_filter(raw: str | None) -> frozenset[str] | None:
    """
    What a valid ``tickers`` value means, per the contract: ``None`` is every ticker.

    Split on commas, trim, drop empty items; ``*`` among the items, or no items
    at all, means every ticker; otherwise the set of upper-cased symbols.
    (Validity is not checked here: feed it values that pass the grammar.)
    """
    items = [item.strip() for item in (raw or "").split(",")]
    wanted = [item for item in items if item]
    if "*" in wanted or not wanted:
        return None
    return frozenset(item.upper() for item in wanted)


def _predicate(flt: Any) -> Callable[[str], bool]:
    matches = getattr(flt, "matches", None)
    if callable(matches):
        return matches  # type: ignore[no-any-return]
    if callable(flt):
        return flt  # type: ignore[no-any-return]
    raise TypeError(f"not filter-like (no matches() and not callable): {flt!r}")


def _matched(flt: Any, probes: Iterable[str]) -> dict[str, bool]:
    pred = _predicate(flt)
    return {t: bool(pred(t)) for t in probes}


def _expect(ok: bool, law: str, detail: str) -> None:
    if not ok:
        raise AssertionError(f"filter law broken: {law}: {detail}")


def law_case_insensitive(factory: FilterFactory, raw: str, probes: Iterable[str]) -> None:
    """The value, its upper-case, lower-case and swapped-case forms match the same tickers."""
    probes = list(probes)
    base = _matched(factory(raw), probes)
    for variant in (raw.upper(), raw.lower(), raw.swapcase()):
        got = _matched(factory(variant), probes)
        _expect(got == base, "case-insensitive", f"{raw!r} gives {base}, {variant!r} gives {got}")


def law_all_means_everything(
    factory: FilterFactory, raw: str | None, probes: Iterable[str]
) -> None:
    """A value that means "every ticker" (omitted, blank, ``*`` anywhere) matches every probe."""
    missed = [t for t, ok in _matched(factory(raw), probes).items() if not ok]
    _expect(not missed, "'*', blank and omitted mean every ticker", f"{raw!r} misses {missed}")


def law_order_and_duplicates_irrelevant(
    factory: FilterFactory, items: Sequence[str], seed: int, probes: Iterable[str]
) -> None:
    """Shuffling the items, repeating some and adding blanks or empty items changes nothing."""
    probes = list(probes)
    rng = random.Random(seed)
    shuffled = [*items, *rng.choices(items, k=rng.randint(0, len(items))), "", " "]
    rng.shuffle(shuffled)
    raw, other = ",".join(items), ",".join(shuffled)
    base, got = _matched(factory(raw), probes), _matched(factory(other), probes)
    _expect(got == base, "order and duplicates do not matter", f"{raw!r} vs {other!r}")


def law_subscribe_is_union(
    factory: FilterFactory,
    a: Sequence[str],
    b: Sequence[str],
    probes: Iterable[str],
    subscribe: Change | None = None,
) -> None:
    """
    Listing ``a`` and ``b`` together wants what ``a`` or ``b`` wants; so does
    ``subscribe(factory(a), b)`` when a subscribe operation is given.

    ``a`` and ``b`` must each hold at least one non-blank item (an empty list
    means every ticker, which is not a union).
    """
    probes = list(probes)
    fa, fb = _matched(factory(",".join(a)), probes), _matched(factory(",".join(b)), probes)
    union = {t: fa[t] or fb[t] for t in probes}
    listed = _matched(factory(",".join([*a, *b])), probes)
    _expect(listed == union, "a list is the union of its parts", f"{list(a)} + {list(b)}")
    if subscribe is not None:
        got = _matched(subscribe(factory(",".join(a)), list(b)), probes)
        _expect(got == union, "subscribe is set union", f"{list(a)} subscribe {list(b)}")


def law_unsubscribe_is_difference(
    factory: FilterFactory,
    unsubscribe: Change,
    a: Sequence[str],
    b: Sequence[str],
    probes: Iterable[str],
) -> None:
    """
    ``unsubscribe(factory(a), b)`` wants what ``a`` wants minus the symbols of ``b``.

    Checked only when ``a`` names symbols (not every ticker) and some remain:
    what an emptied filter means is the implementation's choice.
    """
    wanted, removed = reference_filter(",".join(a)), reference_filter(",".join(b))
    if wanted is None or removed is None or not wanted - removed:
        return
    probes = list(probes)
    got = _matched(unsubscribe(factory(",".join(a)), list(b)), probes)
    expected = {t: t in wanted - removed for t in probes}
    _expect(got == expected, "unsubscribe is set difference", f"{list(a)} unsubscribe {list(b)}")


def law_delivered_iff_matches(
    factory: FilterFactory, raw: str | None, stream: Sequence[Quote], deliver: Deliver
) -> None:
    """
    What reaches a subscriber with filter ``raw`` is exactly the stream's quotes whose
    ticker the filter matches, in publication order.

    ``deliver(filter, stream)`` returns what a subscriber with that filter gets:
    :func:`deliver_through_hub`, or your own routing.
    """
    flt = factory(raw)
    pred = _predicate(flt)
    expected = [q for q in stream if pred(q.ticker)]
    got = list(deliver(flt, stream))
    _expect(
        got == expected,
        "delivered iff the ticker matches",
        f"filter {raw!r}: {len(got)} delivered, {len(expected)} expected",
    )


def law_matches_reference(factory: FilterFactory, raw: str | None, probes: Iterable[str]) -> None:
    """The filter matches a ticker iff :func:`reference_filter` says the value wants it."""
    wanted = reference_filter(raw)
    for ticker, ok in _matched(factory(raw), probes).items():
        expected = wanted is None or ticker in wanted
        _expect(ok == expected, "matches the contract", f"{raw!r} on {ticker!r}: {ok}")


def deliver_through_hub(flt: TickerFilter, stream: Sequence[Quote]) -> list[Quote]:
    """Publish ``stream`` through a :class:`~quotes_core.Hub` to one subscriber; what it drains."""
    hub: Hub[Quote] = Hub(bound=max(1, len(stream)))
    sub = hub.subscribe(flt)
    for quote in stream:
        hub.publish(quote, quote)
    return hub.drain(sub)


def _probes(raw: str | None, extra: Sequence[str]) -> list[str]:
    named = reference_filter(raw) or frozenset()
    return sorted({*named, *extra, *SMALL_UNIVERSE})


_ITEMS = st.lists(any_case_tickers(universe_tickers() | tickers()), min_size=1, max_size=8)
_PROBES = st.lists(tickers(), max_size=5)
_ALL = st.sampled_from([None, "", " ", ",", "*", " * "]) | st.builds(
    lambda items, at: ",".join([*items[:at], " * ", *items[at:]]), _ITEMS, st.integers(0, 8)
)


def check_filter_laws(
    factory: FilterFactory = TickerFilter.parse,
    *,
    subscribe: Change | None = None,
    unsubscribe: Change | None = None,
    deliver: Deliver | None = None,
    reference: bool = True,
    max_examples: int = 100,
) -> None:
    """
    Run every law against ``factory`` with generated values; raise on the first broken one.

    Call it from a plain test function (not from inside ``@given``). A broken law
    raises ``AssertionError`` naming it, after Hypothesis has shrunk the example.

    Args:
        factory: raw ``tickers`` value to filter-like (``TickerFilter.parse`` by default).
        subscribe: ``(filter, symbols) -> filter``, if your filter can grow.
        unsubscribe: ``(filter, symbols) -> filter``, if it can shrink.
        deliver: ``(filter, stream) -> delivered quotes``, e.g.
            :func:`deliver_through_hub`; law 6 runs only when it is given.
        reference: also check :func:`law_matches_reference` (turn off for filters
            that deliberately mean more, e.g. aliases).
        max_examples: examples per law.
    """
    run = settings(max_examples=max_examples, deadline=None)
    valid = filter_queries(SMALL_UNIVERSE, edges=max_examples >= 50)

    @run
    @given(_ITEMS, _PROBES)
    def case(items: list[str], extra: list[str]) -> None:
        raw = ",".join(items)
        law_case_insensitive(factory, raw, _probes(raw, extra))

    @run
    @given(_ALL, _PROBES)
    def everything(raw: str | None, extra: list[str]) -> None:
        law_all_means_everything(factory, raw, _probes(raw, extra))

    @run
    @given(_ITEMS, st.integers(0, 2**32), _PROBES)
    def order(items: list[str], seed: int, extra: list[str]) -> None:
        law_order_and_duplicates_irrelevant(factory, items, seed, _probes(",".join(items), extra))

    @run
    @given(_ITEMS, _ITEMS, _PROBES)
    def union(a: list[str], b: list[str], extra: list[str]) -> None:
        probes = _probes(",".join([*a, *b]), extra)
        law_subscribe_is_union(factory, a, b, probes, subscribe)
        if unsubscribe is not None:
            law_unsubscribe_is_difference(factory, unsubscribe, a, b, probes)

    @run
    @given(filter_queries(SMALL_UNIVERSE, edges=False), quote_streams())
    def delivered(raw: str | None, stream: list[Quote]) -> None:
        if deliver is not None:
            law_delivered_iff_matches(factory, raw, stream, deliver)

    @run
    @given(valid, _PROBES)
    def matches_reference(raw: str | None, extra: list[str]) -> None:
        law_matches_reference(factory, raw, _probes(raw, extra))

    for law in (case, everything, order, union):
        law()
    if deliver is not None:
        delivered()
    if reference:
        matches_reference()
