"""
Hypothesis strategies and the ticker filter's laws, for testing code built on quotes.

Install the optional extra, which pulls in Hypothesis::

    pip install "quotes-core[testing]"

then::

    from hypothesis import given
    from quotes_core.testing import filter_queries, quote_streams, reference_filter

Strategies (each returns a ``SearchStrategy``; everything shrinks to short, readable
examples):

* symbols: :func:`tickers`, :func:`any_case_tickers`, :func:`universe_tickers`
  (over :data:`SMALL_UNIVERSE`, so streams and filters collide);
* ``tickers`` query values: :func:`filter_queries` (valid, as clients write them)
  and :func:`invalid_filter_queries` (with the reason);
* quotes: :func:`prices`, :func:`timestamps`, :func:`quotes`, :func:`quote_json`
  and :func:`quote_streams`;
* raw upstream messages: :func:`upstream_payloads` (valid, with the quote they
  parse to) and :func:`malformed_payloads` (with the reason the server counts).

One quote builder for examples and tests (:mod:`quotes_core.testing.builders`):
:func:`make_quote` (a valid quote whose ``volume`` is a number you choose),
:func:`quote_payload` (its JSON as the server sends it) and
:func:`upstream_message` (the bytes an upstream publishes for it).

Importing this module registers :func:`quotes` for :class:`~quotes_core.Quote`,
so ``st.from_type(Quote)`` and ``st.builds(...)`` with a ``Quote`` argument work.

The filter's laws (:mod:`quotes_core.testing.laws`) are plain functions plus
:func:`check_filter_laws`, which runs them all against any filter-like factory.
"""

from __future__ import annotations

try:
    from hypothesis import strategies as _st
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "quotes_core.testing needs Hypothesis, which the optional extra installs: "
        'pip install "quotes-core[testing]"',
        name=exc.name,
    ) from exc

from quotes_core.schema import Quote
from quotes_core.testing.builders import BASE_TIME, make_quote, quote_payload, upstream_message
from quotes_core.testing.laws import (
    FilterFactory,
    FilterLike,
    check_filter_laws,
    deliver_through_hub,
    law_all_means_everything,
    law_case_insensitive,
    law_delivered_iff_matches,
    law_matches_reference,
    law_order_and_duplicates_irrelevant,
    law_subscribe_is_union,
    law_unsubscribe_is_difference,
    reference_filter,
)
from quotes_core.testing.payloads import (
    MalformedPayload,
    UpstreamPayload,
    malformed_payloads,
    upstream_payloads,
)
from quotes_core.testing.strategies import (
    SMALL_UNIVERSE,
    InvalidFilterQuery,
    InvalidFilterReason,
    any_case_tickers,
    filter_queries,
    invalid_filter_queries,
    prices,
    quote_json,
    quote_streams,
    quotes,
    tickers,
    timestamps,
    universe_tickers,
)

_st.register_type_strategy(Quote, quotes())

__all__ = [
    "BASE_TIME",
    "SMALL_UNIVERSE",
    "FilterFactory",
    "FilterLike",
    "InvalidFilterQuery",
    "InvalidFilterReason",
    "MalformedPayload",
    "UpstreamPayload",
    "any_case_tickers",
    "check_filter_laws",
    "deliver_through_hub",
    "filter_queries",
    "invalid_filter_queries",
    "law_all_means_everything",
    "law_case_insensitive",
    "law_delivered_iff_matches",
    "law_matches_reference",
    "law_order_and_duplicates_irrelevant",
    "law_subscribe_is_union",
    "law_unsubscribe_is_difference",
    "make_quote",
    "malformed_payloads",
    "prices",
    "quote_json",
    "quote_payload",
    "quote_streams",
    "quotes",
    "reference_filter",
    "tickers",
    "timestamps",
    "universe_tickers",
    "upstream_message",
    "upstream_payloads",
]
