"""
Raw upstream messages: valid ones with the quote they mean, malformed ones with the
reason the server counts them under (``quotes_upstream_invalid_total{reason=...}``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from hypothesis import strategies as st

from quotes_core.errors import InvalidQuoteReason
from quotes_core.schema import MAX_QUOTE_BYTES, Quote
from quotes_core.testing.strategies import _BAD_SYMBOLS, any_case_tickers, quotes

__all__ = ["MalformedPayload", "UpstreamPayload", "malformed_payloads", "upstream_payloads"]

_PRICES = ("open", "high", "low", "close")
_REQUIRED = ("ticker", "timestamp", *_PRICES, "volume")
_REASONS: tuple[InvalidQuoteReason, ...] = (
    "json",
    "encoding",
    "schema",
    "ticker",
    "non_finite",
    "too_large",
)
_LITERAL = "\x00literal:"  # a string value to be replaced by raw JSON text (NaN, 1e400)
_LITERAL_RE = re.compile(r'"\\u0000literal:([^"]*)"')


class UpstreamPayload(NamedTuple):
    """A valid upstream message and the quote it parses to."""

    raw: bytes
    quote: Quote


class MalformedPayload(NamedTuple):
    """An upstream message the server drops, and the reason it counts it under."""

    raw: bytes
    reason: InvalidQuoteReason


def _fields(quote: Quote, ticker: str, ints: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"ticker": ticker, "timestamp": quote.timestamp.isoformat()}
    for name in (*_PRICES, "bid", "ask"):
        value = getattr(quote, name)
        if ints and value is not None and value.is_integer():
            value = int(value)  # upstream may write 150 for 150.0
        if value is not None or name in _PRICES:
            fields[name] = value
    fields["volume"] = quote.volume
    return fields


def _dumps(fields: dict[str, Any]) -> bytes:
    # json escapes the placeholder's NUL as \u0000; splice the raw literal in its place
    text = json.dumps(fields)
    return _LITERAL_RE.sub(lambda m: m[1], text).encode()


@st.composite
def _valid(draw: st.DrawFn) -> tuple[dict[str, Any], Quote]:
    quote = draw(quotes())
    fields = _fields(quote, draw(any_case_tickers(st.just(quote.ticker))), draw(st.booleans()))
    if quote.bid is None and draw(st.booleans()):
        fields["bid"] = None  # null reads as "unknown", like an absent key
    if draw(st.booleans()):
        fields["exchange"] = draw(st.sampled_from(["XNAS", "XNYS", ""]))  # dropped
    keys = draw(st.permutations(list(fields)))
    return {k: fields[k] for k in keys}, quote


def upstream_payloads() -> st.SearchStrategy[UpstreamPayload]:
    """
    Valid raw messages as an upstream streamer publishes them, with the expected quote.

    Tickers in any case, timestamps with any UTC offset, integral prices sometimes
    written as JSON integers, ``bid`` absent or ``null``, keys in any order, and an
    extra field the schema drops. ``parse_quote(raw).quote == quote`` for every example.
    """
    return _valid().map(lambda pair: UpstreamPayload(_dumps(pair[0]), pair[1]))


@st.composite
def _json(draw: st.DrawFn) -> bytes:
    text = _dumps(draw(_valid())[0]).decode()
    if draw(st.booleans()):
        return text[: draw(st.integers(1, len(text) - 1))].encode()  # cut short
    return draw(st.sampled_from(["not json", "{'ticker': 'AAPL'}", "", "{,}", text + "}"])).encode()


_BAD_UTF8 = [b"\xff", b"\x80", b"\xc3(", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]


@st.composite
def _encoding(draw: st.DrawFn) -> bytes:
    raw = _dumps(draw(_valid())[0])
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + draw(st.sampled_from(_BAD_UTF8)) + raw[at:]


_WRONG_TYPES: list[tuple[str, Any]] = [
    ("volume", "1000"),
    ("volume", True),
    ("volume", -1),
    ("volume", 2**63),
    ("close", "150.9"),
    ("open", True),
    ("high", None),
    ("timestamp", "2026-02-12T10:30:00"),  # naive
    ("timestamp", 1770892200),
    ("timestamp", "yesterday"),
    ("ticker", 123),
    ("ticker", None),
]


@st.composite
def _schema(draw: st.DrawFn) -> bytes:
    fields = draw(_valid())[0]
    kind = draw(st.sampled_from(["missing", "wrong", "not_object"]))
    if kind == "missing":
        del fields[draw(st.sampled_from(_REQUIRED))]
    elif kind == "wrong":
        name, value = draw(st.sampled_from(_WRONG_TYPES))
        fields[name] = value
    else:
        return draw(st.sampled_from([b"[1, 2, 3]", b"42", b'"AAPL"', b"null", b"[]"]))
    return _dumps(fields)


@st.composite
def _ticker(draw: st.DrawFn) -> bytes:
    fields = draw(_valid())[0]
    fields["ticker"] = draw(_BAD_SYMBOLS | st.sampled_from(["", " ", "A" * 17]))
    return _dumps(fields)


@st.composite
def _non_finite(draw: st.DrawFn) -> bytes:
    fields = draw(_valid())[0]
    name = draw(st.sampled_from([*_PRICES, "bid", "ask"]))
    value = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999"]))
    fields[name] = _LITERAL + value
    return _dumps(fields)


@st.composite
def _too_large(draw: st.DrawFn) -> bytes:
    fields = draw(_valid())[0]
    size = draw(st.integers(MAX_QUOTE_BYTES + 1, 4 * MAX_QUOTE_BYTES))
    fields["padding"] = ""
    base = len(_dumps(fields))
    fields["padding"] = "x" * max(0, size - base)
    return _dumps(fields)


_MAKERS = {
    "json": _json,
    "encoding": _encoding,
    "schema": _schema,
    "ticker": _ticker,
    "non_finite": _non_finite,
    "too_large": _too_large,
}


def malformed_payloads(
    reasons: Sequence[InvalidQuoteReason] = _REASONS,
) -> st.SearchStrategy[MalformedPayload]:
    """
    Raw upstream messages the server drops, each with the reason it counts.

    ``json``: cut short or not JSON; ``encoding``: invalid UTF-8 bytes inside;
    ``schema``: a missing field, a wrong type (``"volume": "1000"``, a naive or
    numeric timestamp, a negative volume...) or not an object; ``ticker``: a
    symbol outside the grammar; ``non_finite``: ``NaN``, ``Infinity`` or an
    overflowing number such as ``1e400`` in a price; ``too_large``: over
    :data:`~quotes_core.MAX_QUOTE_BYTES` (4,096) bytes. Apart from the one flaw,
    each message is a valid quote.

    Args:
        reasons: only these reasons (all six by default).
    """
    return st.one_of([_labelled(reason) for reason in reasons])


def _labelled(reason: InvalidQuoteReason) -> st.SearchStrategy[MalformedPayload]:
    def label(raw: bytes) -> MalformedPayload:
        return MalformedPayload(raw, reason)

    return _MAKERS[reason]().map(label)
