"""
The synthetic quotes the benchmark publishes, and how clients read them back.

Every quote is valid for the contract (``ticker, timestamp, open, high, low, close,
volume, bid, ask``) and its ``timestamp`` is the **intended** publish time on the
publisher's fixed schedule, in canonical form (UTC, six fractional digits, ``Z``).
A server passes the timestamp through, so a client's latency is its receive wall
time minus that timestamp: the time a quote spent waiting for a late publisher,
for Redis, for the server and for the socket all counts (no coordinated omission).

Warm-up quotes (sent before a measured phase to prove every client is subscribed)
carry :data:`WARMUP_TIMESTAMP`, a fixed instant in 2000, so clients tell them apart
without any coordination.
"""

from __future__ import annotations

import time
from datetime import datetime

__all__ = [
    "TICKER_PREFIX",
    "WARMUP_EPOCH_LIMIT",
    "WARMUP_TIMESTAMP",
    "QuoteFactory",
    "parse_timestamp",
    "ticker_names",
    "timestamp_bytes",
]

TICKER_PREFIX = "BX"
"""Prefix of the benchmark's tickers, so quotes from other publishers are told apart."""

WARMUP_TIMESTAMP = b"2000-01-01T00:00:00.000000Z"
"""Timestamp of warm-up quotes."""

WARMUP_EPOCH_LIMIT = 1_000_000_000.0
"""Quotes stamped before this epoch (2001-09-09) are warm-up quotes."""

_VARIANTS = 16


def ticker_names(count: int) -> list[str]:
    """The benchmark's ``count`` tickers: ``BX0000``, ``BX0001``, ..."""
    return [f"{TICKER_PREFIX}{i:04d}" for i in range(count)]


def timestamp_bytes(epoch_us: int) -> bytes:
    """Format integer epoch microseconds as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""
    sec, us = divmod(epoch_us, 1_000_000)
    return b"%s.%06dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode(), us)


def parse_timestamp(ts: bytes) -> float:
    """
    Epoch seconds of a canonical timestamp (``...Z``); ``-1.0`` when it is not one.

    Clients cache the result per distinct timestamp, so this runs about once per
    quote per client process, not once per delivery.
    """
    try:
        return datetime.fromisoformat(ts.decode("ascii")).timestamp()
    except (ValueError, UnicodeDecodeError):
        return -1.0


def _price_parts(index: int, variant: int) -> tuple[bytes, int, bytes]:
    """
    The fields after the timestamp, for one ticker and one price variant: the prices
    up to ``"volume":``, the volume, and the quote's end after it.
    """
    base = 20.0 + (index * 37 % 480)
    close = round(base * (1 + (variant - _VARIANTS / 2) / 1000), 2)
    low = round(min(base, close) - 0.05, 2)
    high = round(max(base, close) + 0.05, 2)
    volume = 1_000_000 + index * 1000 + variant
    bid = round(close - 0.01, 2)
    ask = round(close + 0.01, 2)
    return (
        f',"open":{base!r},"high":{high!r},"low":{low!r},"close":{close!r},"volume":'.encode(),
        volume,
        f',"bid":{bid!r},"ask":{ask!r}}}'.encode(),
    )


def _price_tail(index: int, variant: int) -> bytes:
    """The fields after the timestamp, for one ticker and one price variant."""
    head, volume, end = _price_parts(index, variant)
    return b"%s%d%s" % (head, volume, end)


class QuoteFactory:
    """
    Builds canonical quote JSON for the benchmark's tickers, cheaply.

    Everything except the timestamp is precomputed (a few price variants per
    ticker), and the date-and-time part of the timestamp is cached per second, so
    building a quote is a couple of byte concatenations.
    """

    def __init__(self, tickers: list[str]) -> None:
        self.tickers = tickers
        self._heads = [b'{"ticker":"%s","timestamp":"' % t.encode() for t in tickers]
        self._tails = [[_price_tail(i, v) for v in range(_VARIANTS)] for i in range(len(tickers))]
        self._parts = [[_price_parts(i, v) for v in range(_VARIANTS)] for i in range(len(tickers))]
        self._sec = -1
        self._sec_text = b""

    def quote(self, seq: int, ticker_index: int, epoch_us: int) -> bytes:
        """
        The quote JSON for publish number ``seq`` of ticker ``ticker_index``.

        Args:
            seq: running publish number (picks a price variant).
            ticker_index: index into the factory's tickers.
            epoch_us: the intended publish time, in integer epoch microseconds.
        """
        sec, us = divmod(epoch_us, 1_000_000)
        if sec != self._sec:
            self._sec = sec
            self._sec_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
        return b'%s%s.%06dZ"%s' % (
            self._heads[ticker_index],
            self._sec_text,
            us,
            self._tails[ticker_index][seq % _VARIANTS],
        )

    def counted_quote(self, seq: int, ticker_index: int, epoch_us: int, volume: int) -> bytes:
        """
        Like :meth:`quote`, with ``volume`` in place of the price variant's volume.

        The soak scenario numbers each ticker's quotes 1, 2, 3 ... in this field, so a
        client sees a lost, repeated or reordered quote as a break in that sequence.
        """
        sec, us = divmod(epoch_us, 1_000_000)
        if sec != self._sec:
            self._sec = sec
            self._sec_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
        head, _, end = self._parts[ticker_index][seq % _VARIANTS]
        return b'%s%s.%06dZ"%s%d%s' % (
            self._heads[ticker_index],
            self._sec_text,
            us,
            head,
            volume,
            end,
        )

    def warmup_quote(self, ticker_index: int) -> bytes:
        """A warm-up quote for one ticker (stamped :data:`WARMUP_TIMESTAMP`)."""
        return b'%s%s"%s' % (
            self._heads[ticker_index],
            WARMUP_TIMESTAMP,
            self._tails[ticker_index][0],
        )
