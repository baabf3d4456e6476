"""Parsing the stream protocol's query parameters and client actions; control frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_core import (
    MAX_PING_ID_BYTES,
    TICKERS_PER_TOKEN,
    ActionError,
    ClientError,
    Position,
    StreamOptions,
    TickerFilter,
    error_event,
    parse_action,
    parse_stream_options,
    pong_event,
    recovered_event,
    subscribed_event,
    with_position,
)
from quotes_core.testing import any_case_tickers, universe_tickers

epochs = st.text("abcXYZ019_-", min_size=1, max_size=64)
positions = st.builds(Position, epochs, st.integers(0, 2**63))
options = st.builds(
    StreamOptions,
    snapshot=st.booleans(),
    seq=st.booleans(),
    since=st.one_of(st.none(), positions),
    max_hz=st.one_of(st.none(), st.floats(0.1, 100.0)),
    batch=st.booleans(),
)


def query(**values: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in values.items()}


@given(opts=options)
def test_options_round_trip_through_the_query(opts: StreamOptions) -> None:
    """to_query() then parse gives the options back (since implies seq)."""
    parsed = parse_stream_options({k: [v] for k, v in opts.to_query().items()})
    want = StreamOptions(
        opts.snapshot, opts.seq or opts.since is not None, opts.since, opts.max_hz, opts.batch
    )
    assert parsed == want
    assert parsed.plain == (not (want.snapshot or want.seq or want.batch) and want.max_hz is None)


def test_no_parameters_is_the_plain_stream() -> None:
    """Nothing given (or unknown parameters) is the contract's stream."""
    assert parse_stream_options({}) == StreamOptions()
    assert parse_stream_options(query(foo="1", tickers="AAPL")).plain
    assert parse_stream_options(query(snapshot="0", batch="false", seq="")).plain


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"snapshot": ["yes"]}, "invalid snapshot 'yes': expected 1 or 0"),
        ({"batch": ["2"]}, "invalid batch '2'"),
        ({"seq": ["1", "1"]}, "give seq once"),
        ({"max_hz": ["0"]}, "invalid max_hz '0': expected a number from 0.1 to 100"),
        ({"max_hz": ["101"]}, "invalid max_hz '101'"),
        ({"max_hz": ["nan"]}, "invalid max_hz 'nan'"),
        ({"max_hz": ["fast"]}, "invalid max_hz 'fast'"),
        ({"since": ["nocolon"]}, "invalid since 'nocolon': expected <epoch>:<seq>"),
        ({"since": ["e1:-3"]}, "invalid since 'e1:-3'"),
        ({"since": [":5"]}, "invalid since ':5'"),
        ({"since": ['e"1:5']}, "invalid since"),
    ],
)
def test_bad_values_say_why(params: dict[str, list[str]], reason: str) -> None:
    """Every invalid value is a ClientError (HTTP 400) whose message names the problem."""
    with pytest.raises(ClientError) as info:
        parse_stream_options(params)
    assert str(info.value).startswith(reason)
    assert info.value.http_status == 400


@given(symbols=st.lists(any_case_tickers(universe_tickers()), max_size=5), kind=st.sampled_from(
    ["subscribe", "unsubscribe", "set"]))  # fmt: skip
def test_actions_parse_case_insensitively(symbols: list[str], kind: str) -> None:
    """Tickers are normalised to upper case; "*" anywhere means every ticker."""
    action = parse_action(json.dumps({"action": kind, "tickers": symbols}))
    assert action.kind == kind
    assert action.tickers == frozenset(s.upper() for s in symbols)
    star = parse_action(json.dumps({"action": kind, "tickers": [*symbols, "*"]}))
    assert star.tickers is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"tickers": ["AAPL"]}', "invalid_message"),
        ('{"action": "subscribe", "tickers": "AAPL"}', "invalid_message"),
        ('{"action": "subscribe", "tickers": [1]}', "invalid_message"),
        ('{"action": "subscribe"}', "invalid_message"),
        ('{"action": "dance"}', "unknown_action"),
        ('{"action": "subscribe", "tickers": ["AAPL;"]}', "invalid_ticker"),
        (json.dumps({"action": "set", "tickers": [f"T{i}" for i in range(1001)]}),
         "too_many_tickers"),
        # a list over the cap is refused before any symbol is looked at
        (json.dumps({"action": "set", "tickers": ["A"] * 1001}), "too_many_tickers"),
        ('{"action": "subscribe", "tickers": ' + "[" * 5000 + "]" * 5000 + "}",
         "invalid_message"),
        ("[" * 100_000, "invalid_message"),
        ("[" * 990 + "]" * 990, "invalid_message"),
        ('{"action": "ping", "id": "' + "x" * 99 + '"}', "invalid_message"),
        ('{"action": "ping", "id": ' + "[" * 900 + "]" * 900 + "}", "invalid_message"),
    ],
)  # fmt: skip
def test_bad_actions_have_machine_readable_codes(text: str, code: str) -> None:
    """Each kind of bad message maps to one error code."""
    with pytest.raises(ActionError) as info:
        parse_action(text)
    assert info.value.code == code
    frame = json.loads(error_event(info.value))
    assert frame["event"] == "error"
    assert frame["code"] == code
    assert frame["message"]
    assert "ticker" not in frame


def test_ping_echoes_its_id() -> None:
    """A ping's id comes back as given, with the server time in the contract's format."""
    action = parse_action('{"action": "ping", "id": {"n": [1, 2]}}')
    when = datetime(2026, 2, 12, 10, 30, 0, 123456, tzinfo=UTC)
    frame = pong_event(action.id, when)
    assert frame == '{"event":"pong","id":{"n":[1,2]},"server_time":"2026-02-12T10:30:00.123456Z"}'
    assert parse_action('{"action": "ping"}').id is None


def test_an_action_weighs_by_the_tickers_it_names() -> None:
    """Cost: 1 per frame plus 1 per TICKERS_PER_TOKEN named tickers, duplicates included."""
    assert parse_action('{"action": "ping", "id": 1}').cost == 1
    names = [f"T{i}" for i in range(TICKERS_PER_TOKEN - 1)]
    assert parse_action(json.dumps({"action": "set", "tickers": names})).cost == 1
    assert parse_action(json.dumps({"action": "set", "tickers": ["A"] * 1000})).cost == 21
    big = [f"T{i}" for i in range(1000)]
    assert parse_action(json.dumps({"action": "subscribe", "tickers": big})).cost == 21


def test_ping_id_bound() -> None:
    """An id of up to MAX_PING_ID_BYTES bytes of JSON is echoed; one byte more is refused."""
    fits = "x" * (MAX_PING_ID_BYTES - 2)
    assert parse_action(json.dumps({"action": "ping", "id": fits})).id == fits
    with pytest.raises(ActionError):
        parse_action(json.dumps({"action": "ping", "id": fits + "x"}))


def test_control_frames_never_carry_a_ticker_key() -> None:
    """subscribed / recovered frames: the pinned shapes, no "ticker" key."""
    some = subscribed_event(TickerFilter.of(["msft", "AAPL"]))
    assert some == '{"event":"subscribed","tickers":["AAPL","MSFT"]}'
    assert subscribed_event(TickerFilter()) == '{"event":"subscribed","tickers":"*"}'
    assert subscribed_event(TickerFilter(frozenset())) == '{"event":"subscribed","tickers":[]}'
    rec = recovered_event(True, "e1", 42)
    assert rec == '{"event":"recovered","recovered":true,"epoch":"e1","seq":42}'
    for frame in (some, rec):
        assert "ticker" not in json.loads(frame)


def test_with_position_appends_after_the_contract_fields() -> None:
    """seq and epoch come last; the contract's fields are untouched and in order."""
    payload = '{"ticker":"AAPL","timestamp":"2026-02-12T10:30:00.000000Z","open":1.0}'
    out = with_position(payload, 7, "e1")
    assert out.startswith(payload[:-1] + ",")
    assert list(json.loads(out)) == ["ticker", "timestamp", "open", "seq", "epoch"]
    assert json.loads(out)["seq"] == 7
