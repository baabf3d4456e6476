"""
The ``Quote`` model and its one canonical JSON encoding.

Input is strict JSON: prices are JSON numbers (integers allowed; strings, booleans
and non-finite values are not), ``volume`` is a non-negative JSON integer and
``timestamp`` is an ISO 8601 string with a time zone. Fields the contract does not
define are dropped (upstream may add fields without breaking clients; clients only
ever see the contract's fields).

Output is canonical and computed once per quote: the contract's key order, compact
separators, the ticker upper-case, the timestamp in UTC with exactly six fractional
digits and ``Z``, floats in Python's shortest round-trip form, and ``bid``/``ask``
present only when known.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from quotes_core.errors import InvalidQuote, InvalidQuoteReason
from quotes_core.tickers import MAX_TICKER_LENGTH, TICKER_PATTERN, is_valid_ticker

__all__ = [
    "MAX_QUOTE_BYTES",
    "ParsedQuote",
    "Quote",
    "encode_quote",
    "format_timestamp",
    "parse_quote",
    "validate_quote",
    "wire_json_schema",
]

MAX_QUOTE_BYTES = 4096
"""Largest accepted upstream message; a canonical quote is about 200 bytes."""

_MAX_VOLUME = 2**63 - 1


def _check_ticker(value: str) -> str:
    norm = value.strip().upper()
    if not is_valid_ticker(norm):
        raise ValueError(
            f"invalid ticker: 1-{MAX_TICKER_LENGTH} characters of A-Z 0-9 . - = / "
            "(an optional leading ^), starting and ending with a letter or digit"
        )
    return norm


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Ticker = Annotated[str, AfterValidator(_check_ticker)]
UtcTimestamp = Annotated[AwareDatetime, AfterValidator(_to_utc)]


class Quote(BaseModel):
    """
    One market-data quote, as the contract defines it.

    The model is frozen and strict; build it from upstream bytes with
    :func:`parse_quote`, or directly (``Quote(ticker="AAPL", ...)``) in producers.
    """

    model_config = ConfigDict(strict=True, frozen=True, allow_inf_nan=False, extra="ignore")

    ticker: Annotated[Ticker, Field(description="Symbol, upper-case.")]
    timestamp: Annotated[
        UtcTimestamp, Field(description="Time of the quote: ISO 8601, UTC, microseconds.")
    ]
    open: Annotated[float, Field(description="Opening price.")]
    high: Annotated[float, Field(description="Highest price.")]
    low: Annotated[float, Field(description="Lowest price.")]
    close: Annotated[float, Field(description="Current (or closing) price.")]
    volume: Annotated[int, Field(ge=0, le=_MAX_VOLUME, description="Accumulated volume.")]
    bid: Annotated[float | None, Field(description="Bid price, when known.")] = None
    ask: Annotated[float | None, Field(description="Ask price, when known.")] = None

    def to_json(self) -> str:
        """The canonical JSON text of this quote (see :func:`encode_quote`)."""
        return encode_quote(self)


class ParsedQuote(NamedTuple):
    """A validated quote and its canonical JSON text, computed once."""

    quote: Quote
    payload: str


def format_timestamp(ts: datetime) -> str:
    """
    Format an aware datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC.
    """
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    # isoformat is C code and always writes a four-digit year; the "+00:00" of a UTC
    # datetime becomes "Z"
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"


def encode_quote(q: Quote) -> str:
    """
    Encode a quote as canonical JSON text, in the contract's key order.

    Every piece is safe to interpolate without escaping: the ticker grammar has no
    character JSON would escape, and floats are finite (``repr`` is valid JSON).
    """
    text = (
        f'{{"ticker":"{q.ticker}","timestamp":"{format_timestamp(q.timestamp)}",'
        f'"open":{q.open!r},"high":{q.high!r},"low":{q.low!r},"close":{q.close!r},'
        f'"volume":{q.volume}'
    )
    if q.bid is not None:
        text += f',"bid":{q.bid!r}'
    if q.ask is not None:
        text += f',"ask":{q.ask!r}'
    return text + "}"


def wire_json_schema() -> dict[str, Any]:
    """
    JSON Schema (draft 2020-12) of a quote as the server sends it.

    Derived from :class:`Quote`, then tightened to what :func:`encode_quote` emits:
    the ticker grammar, the exact timestamp form, ``bid``/``ask`` absent rather than
    null, and no other keys.
    """
    schema = Quote.model_json_schema(mode="serialization")
    props = schema["properties"]
    props["ticker"].update(pattern=f"^{TICKER_PATTERN}$", minLength=1, maxLength=MAX_TICKER_LENGTH)
    props["timestamp"]["pattern"] = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
    for key in ("bid", "ask"):
        props[key] = {
            "type": "number",
            "title": key.title(),
            "description": props[key]["description"],
        }
    schema["additionalProperties"] = False
    schema["description"] = (
        "One quote per WebSocket text frame, compact JSON, keys in this order; "
        "bid and ask only when known."
    )
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _reason(error: ValidationError) -> InvalidQuoteReason:
    for err in error.errors(include_url=False):
        kind = err["type"]
        if kind == "json_invalid":
            return "json"
        if kind == "finite_number":
            return "non_finite"
        if err["loc"][:1] == ("ticker",) and kind == "value_error":
            return "ticker"
    return "schema"


def _summary(error: ValidationError) -> str:
    parts = []
    for err in error.errors(include_url=False, include_input=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def validate_quote(raw: bytes | str) -> Quote:
    """
    Validate one raw message as a quote, without encoding it.

    For consumers that only need the :class:`Quote` (the client); the server uses
    :func:`parse_quote`, which also builds the canonical text once.

    Raises:
        InvalidQuote: as :func:`parse_quote`.
    """
    if len(raw) > MAX_QUOTE_BYTES:
        raise InvalidQuote("too_large", f"{len(raw)} bytes (at most {MAX_QUOTE_BYTES})")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidQuote(
                "encoding", f"not UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
    try:
        return Quote.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidQuote(_reason(exc), _summary(exc)) from None


def parse_quote(raw: bytes | str) -> ParsedQuote:
    """
    Validate one raw upstream message and encode it canonically.

    Args:
        raw: the message as published (UTF-8 JSON object).

    Returns:
        The quote and its canonical JSON text.

    Raises:
        InvalidQuote: with ``reason`` ``too_large``, ``encoding`` (not UTF-8),
            ``json`` (not JSON), ``non_finite`` (NaN or infinite number),
            ``ticker`` (bad symbol) or ``schema`` (anything else: missing field,
            wrong type, naive timestamp, negative volume, not an object).
    """
    quote = validate_quote(raw)
    return ParsedQuote(quote, encode_quote(quote))
