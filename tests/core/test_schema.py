"""Quote validation and canonical encoding."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest
from hypothesis import given

from quotes_core import (
    MAX_QUOTE_BYTES,
    InvalidQuote,
    Quote,
    encode_quote,
    format_timestamp,
    parse_quote,
    validate_quote,
    wire_json_schema,
)
from quotes_core.testing import quotes, timestamps

SEED_EXAMPLE = b"""{
  "ticker": "AAPL",
  "timestamp": "2026-02-12T10:30:00.123456Z",
  "open": 150.25,
  "high": 151.10,
  "low": 150.05,
  "close": 150.90,
  "volume": 1000000,
  "bid": 150.88,
  "ask": 150.92
}"""

VALID = {
    "ticker": "AAPL",
    "timestamp": "2026-02-12T10:30:00.123456Z",
    "open": 150.25,
    "high": 151.1,
    "low": 150.05,
    "close": 150.9,
    "volume": 1000000,
}


def with_(**changes: object) -> bytes:
    msg = {**VALID, **changes}
    return json.dumps({k: v for k, v in msg.items() if v is not ...}).encode()


def test_seed_example_exact_bytes() -> None:
    """The contract's example message encodes to exactly these bytes."""
    parsed = parse_quote(SEED_EXAMPLE)
    assert parsed.payload == (
        '{"ticker":"AAPL","timestamp":"2026-02-12T10:30:00.123456Z","open":150.25,'
        '"high":151.1,"low":150.05,"close":150.9,"volume":1000000,"bid":150.88,"ask":150.92}'
    )
    assert list(json.loads(parsed.payload)) == [
        "ticker", "timestamp", "open", "high", "low", "close", "volume", "bid", "ask",
    ]  # fmt: skip


def test_normalises_ticker_timestamp_and_numbers() -> None:
    """Lower-case ticker, offset timestamp, few fraction digits and int prices normalise."""
    raw = with_(ticker=" brk.b ", timestamp="2026-02-12T12:30:00.5+02:00", open=150, volume=0)
    parsed = parse_quote(raw)
    assert parsed.quote.ticker == "BRK.B"
    assert parsed.quote.timestamp == datetime(2026, 2, 12, 10, 30, 0, 500000, tzinfo=UTC)
    assert parsed.payload.startswith(
        '{"ticker":"BRK.B","timestamp":"2026-02-12T10:30:00.500000Z","open":150.0,'
    )


def test_bid_and_ask_omitted_when_absent_or_null() -> None:
    """bid/ask appear only when known; null counts as absent."""
    assert '"bid"' not in parse_quote(with_()).payload
    payload = parse_quote(with_(bid=None, ask=1.5)).payload
    assert '"bid"' not in payload
    assert payload.endswith(',"volume":1000000,"ask":1.5}')


def test_extra_fields_are_dropped() -> None:
    """Upstream fields outside the contract never reach clients."""
    parsed = parse_quote(with_(exchange="XNAS", seq=7))
    assert "exchange" not in parsed.payload
    assert parsed.payload == parse_quote(with_()).payload


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "json"),
        (b'{"ticker": "AAPL"', "json"),
        (b"\xff\xfe\x00", "encoding"),
        (b"x" * (MAX_QUOTE_BYTES + 1), "too_large"),
        (b"[1, 2]", "schema"),
        (b"42", "schema"),
        (with_(volume=...), "schema"),
        (with_(volume=True), "schema"),
        (with_(volume="1000"), "schema"),
        (with_(volume=1.5), "schema"),
        (with_(volume=-1), "schema"),
        (with_(open="150.25"), "schema"),
        (with_(open=True), "schema"),
        (with_(close=None), "schema"),
        (with_(timestamp="2026-02-12T10:30:00"), "schema"),
        (with_(timestamp=1770892200), "schema"),
        (with_(timestamp="yesterday"), "schema"),
        (with_(ticker=7), "schema"),
        (with_(ticker=""), "ticker"),
        (with_(ticker="AAPL;DROP"), "ticker"),
        (with_(ticker="A" * 17), "ticker"),
        (with_(ticker=".."), "ticker"),
        (with_(bid="x"), "schema"),
        (with_(open=float("nan")), "non_finite"),
        (with_(high=float("inf")), "non_finite"),
        (with_(low=float("-inf")), "non_finite"),
        (with_().replace(b"150.25", b"1e400"), "non_finite"),
    ],
)
def test_rejection_reasons(raw: bytes, reason: str) -> None:
    """Every kind of bad upstream message is rejected with its reason, by both entry points."""
    with pytest.raises(InvalidQuote) as info:
        parse_quote(raw)
    assert info.value.reason == reason
    assert info.value.detail
    assert info.value.http_status is None
    with pytest.raises(InvalidQuote) as again:
        validate_quote(raw)
    assert again.value.reason == reason


@given(quotes())
def test_validate_quote_is_parse_without_encoding(quote: Quote) -> None:
    """validate_quote gives the same Quote as parse_quote, for bytes and text."""
    payload = encode_quote(quote)
    assert validate_quote(payload) == parse_quote(payload).quote == quote
    assert validate_quote(payload.encode()) == quote


def test_error_detail_does_not_echo_the_payload() -> None:
    """Error details are safe to log: they describe, they do not copy the input."""
    with pytest.raises(InvalidQuote) as info:
        parse_quote(with_(ticker="SECRET-PAYLOAD-" + "Z" * 40))
    assert "SECRET" not in info.value.detail


@given(quotes())
def test_round_trip_is_identity(quote: Quote) -> None:
    """encode -> parse gives back the same quote."""
    assert parse_quote(encode_quote(quote)).quote == quote


@given(quotes())
def test_parse_is_idempotent_on_its_output(quote: Quote) -> None:
    """Parsing canonical output reproduces exactly the same bytes."""
    payload = encode_quote(quote)
    assert parse_quote(payload).payload == payload
    assert parse_quote(payload.encode()).payload == payload


@given(quotes())
def test_payload_is_plain_json_with_contract_keys(quote: Quote) -> None:
    """The canonical text is standard JSON with the contract's keys, in order."""
    doc = json.loads(encode_quote(quote))
    keys = ["ticker", "timestamp", "open", "high", "low", "close", "volume", "bid", "ask"]
    assert list(doc) == [k for k in keys if k in doc]
    assert doc["timestamp"].endswith("Z")
    assert len(doc["timestamp"]) == len("2026-02-12T10:30:00.123456Z")
    assert isinstance(doc["volume"], int)


@given(quotes())
def test_canonical_output_matches_the_wire_schema(quote: Quote) -> None:
    """Everything encode_quote emits validates against the published JSON Schema."""
    jsonschema.validate(json.loads(encode_quote(quote)), wire_json_schema())


@pytest.mark.parametrize(
    "change",
    [
        {"bid": None},
        {"extra": 1},
        {"timestamp": "2026-02-12T10:30:00.123Z"},
        {"timestamp": "2026-02-12T10:30:00.123456+00:00"},
        {"ticker": "aapl"},
        {"volume": -1},
        {"close": "150.9"},
    ],
)
def test_wire_schema_rejects_non_canonical(change: dict[str, object]) -> None:
    """The schema is as strict as the encoder: null bid, extra keys, other forms fail."""
    doc = {**json.loads(parse_quote(SEED_EXAMPLE).payload), **change}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, wire_json_schema())


@given(timestamps())
def test_format_timestamp_is_utc_with_six_digits(ts: datetime) -> None:
    """Any aware datetime formats as its UTC instant, six fraction digits and Z."""
    text = format_timestamp(ts)
    assert len(text) == 27
    assert text.endswith("Z")
    assert datetime.fromisoformat(text) == ts
