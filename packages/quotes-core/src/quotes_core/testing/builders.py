"""
One quote builder for examples and tests: a valid quote whose ``volume`` carries a
number, so a test can tell quotes apart and check their order.

* :func:`make_quote` gives the :class:`~quotes_core.Quote` (a fixed clock plus
  ``n`` microseconds, so two runs build the same quotes);
* :func:`quote_payload` gives its canonical JSON text, as the server sends it;
* :func:`upstream_message` gives the bytes an upstream ``PUBLISH``\\es for it,
  stamped now by default (as a streamer stamps a quote when it builds it), and
  accepts any field, invalid ones included, to build malformed messages. It skips
  pydantic, so thousands of messages cost little.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from quotes_core.schema import Quote

__all__ = ["BASE_TIME", "make_quote", "quote_payload", "upstream_message"]

BASE_TIME = datetime(2026, 2, 12, 10, 30, tzinfo=UTC)
"""The clock :func:`make_quote` counts from."""

_PRICES: dict[str, float] = {
    "open": 150.25,
    "high": 151.1,
    "low": 150.05,
    "close": 150.9,
    "bid": 150.88,
    "ask": 150.92,
}


def make_quote(
    ticker: str = "AAPL",
    n: int = 0,
    *,
    timestamp: datetime | None = None,
    **fields: float | None,
) -> Quote:
    """
    A valid quote for ``ticker`` whose ``volume`` is ``n``, timestamped
    :data:`BASE_TIME` plus ``n`` microseconds unless ``timestamp`` is given;
    ``fields`` replace prices (``bid=None`` for a quote without one).
    """
    values: dict[str, Any] = {**_PRICES, **fields}
    return Quote(
        ticker=ticker,
        timestamp=timestamp or BASE_TIME + timedelta(microseconds=n),
        volume=n,
        **values,
    )


def quote_payload(
    ticker: str = "AAPL",
    n: int = 0,
    *,
    timestamp: datetime | None = None,
    **fields: float | None,
) -> str:
    """The canonical JSON text of :func:`make_quote` with the same arguments."""
    return make_quote(ticker, n, timestamp=timestamp, **fields).to_json()


def upstream_message(
    ticker: str = "AAPL",
    n: int = 0,
    *,
    timestamp: datetime | None = None,
    **fields: Any,
) -> bytes:
    """
    What an upstream publishes for :func:`make_quote`: JSON bytes as a Python
    streamer writes them (``json.dumps``, ``isoformat()``: ``+00:00``, not the
    server's canonical ``Z`` form), timestamped now unless ``timestamp`` is given.
    ``fields`` replace or add fields with any JSON value (``volume=-1``,
    ``close="x"``: the message is then malformed on purpose).
    """
    msg: dict[str, Any] = {
        "ticker": ticker,
        "timestamp": (timestamp or datetime.now(UTC)).isoformat(),
        **_PRICES,
        "volume": n,
    }
    msg.update(fields)
    return json.dumps(msg).encode()
