"""Frame decoding, actions, options and the live filter: the client's protocol logic, no I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_client.events import Recovered, ServerError
from quotes_client.filters import change_filter, requested
from quotes_client.protocol import (
    OtherControl,
    Pong,
    ProtocolOptions,
    Subscribed,
    WireQuote,
    decode_frame,
    encode_action,
)
from quotes_client.urls import with_params
from quotes_core import InvalidQuote, InvalidTickers, TickerFilter
from quotes_core.testing import make_quote, quote_payload


def f(*symbols: str) -> TickerFilter:
    return TickerFilter.of(symbols)


def with_position(text: str, seq: int, epoch: str) -> str:
    return f'{text[:-1]},"seq":{seq},"epoch":"{epoch}"}}'


def test_a_plain_quote_frame_decodes_as_before() -> None:
    """A canonical quote is one WireQuote without a position."""
    assert decode_frame(quote_payload("AAPL", 3).encode()) == [WireQuote(make_quote("AAPL", 3))]


def test_seq_and_epoch_are_read_only_when_asked() -> None:
    """With with_seq the position comes along; the quote itself is the contract's."""
    raw = with_position(quote_payload("MSFT", 4), 17, "e1").encode()
    assert decode_frame(raw, with_seq=True) == [WireQuote(make_quote("MSFT", 4), 17, "e1")]
    assert decode_frame(raw) == [WireQuote(make_quote("MSFT", 4))]


def test_a_garbled_position_keeps_the_quote() -> None:
    """A seq that is not an integer loses the position, not the quote."""
    raw = quote_payload("AAPL", 1)[:-1] + ',"seq":"x","epoch":"e"}'
    assert decode_frame(raw.encode(), with_seq=True) == [WireQuote(make_quote("AAPL", 1))]


def test_batches_unpack_in_order_with_positions() -> None:
    """batch=1 arrays become one item per quote, in the array's order."""
    raw = "[" + ",".join(with_position(quote_payload("AAPL", i), i, "e") for i in range(3)) + "]"
    items = decode_frame(raw.encode(), with_seq=True, batch=True)
    assert items == [WireQuote(make_quote("AAPL", i), i, "e") for i in range(3)]


def test_a_bad_element_of_a_batch_is_skipped_alone() -> None:
    """One invalid element is one InvalidQuote; its neighbours still arrive."""
    raw = f'[{quote_payload("AAPL", 1)},{{"ticker":"AAPL"}},{quote_payload("AAPL", 2)}]'
    items = decode_frame(raw.encode(), batch=True)
    assert items[0] == WireQuote(make_quote("AAPL", 1))
    assert isinstance(items[1], InvalidQuote)
    assert items[1].reason == "schema"
    assert items[2] == WireQuote(make_quote("AAPL", 2))


def test_an_array_without_batch_is_one_invalid_message() -> None:
    """Without batch=1 the contract's stream has no arrays: one invalid message."""
    items = decode_frame(f"[{quote_payload()}]".encode())
    assert len(items) == 1
    assert isinstance(items[0], InvalidQuote)


CONTROL_FRAMES = [
    ({"event": "subscribed", "tickers": ["AAPL", "MSFT"]}, Subscribed(f("AAPL", "MSFT"))),
    ({"event": "subscribed", "tickers": "*"}, Subscribed(TickerFilter())),
    ({"event": "subscribed", "tickers": []}, Subscribed(TickerFilter(frozenset()))),
    ({"event": "recovered", "recovered": True, "epoch": "e", "seq": 5}, Recovered(True, "e", 5)),
    ({"event": "recovered", "recovered": False, "epoch": "f", "seq": 9}, Recovered(False, "f", 9)),
    ({"event": "error", "code": "forbidden", "message": "no"}, ServerError("forbidden", "no")),
    ({"event": "pong", "id": 3, "server_time": "t"}, Pong(3, "t")),
    ({"event": "later", "x": 1}, OtherControl("later", {"event": "later", "x": 1})),
]


@pytest.mark.parametrize(("frame", "expected"), CONTROL_FRAMES)
def test_control_frames_are_told_apart_by_their_event_key(
    frame: dict[str, object], expected: object
) -> None:
    """Objects with "event" and no "ticker" are control frames, typed by event."""
    assert decode_frame(json.dumps(frame).encode()) == [expected]


def test_an_object_with_event_and_ticker_is_a_quote_attempt() -> None:
    """A "ticker" key makes it a quote (here an invalid one), never a control frame."""
    items = decode_frame(b'{"event":"x","ticker":"AAPL"}')
    assert len(items) == 1
    assert isinstance(items[0], InvalidQuote)


def test_actions_are_compact_json_with_sorted_tickers() -> None:
    """The wire shape of the client's messages is the issue's, pinned."""
    assert encode_action("subscribe", {"MSFT", "AAPL"}) == (
        '{"action":"subscribe","tickers":["AAPL","MSFT"]}'
    )
    assert encode_action("set", None) == '{"action":"set","tickers":["*"]}'


def test_options_become_query_parameters() -> None:
    """Each option adds its parameter; resume adds since= and snapshot=1 once it has a position."""
    assert ProtocolOptions().params(None) == {}
    assert ProtocolOptions(snapshot=True, max_hz=2.5, batch=True).params(None) == {
        "snapshot": "1",
        "max_hz": "2.5",
        "batch": "1",
    }
    assert ProtocolOptions(resume=True).params(None) == {"seq": "1"}
    assert ProtocolOptions(resume=True).params("e:7") == {
        "snapshot": "1",
        "seq": "1",
        "since": "e:7",
    }


@pytest.mark.parametrize("hz", [0.0, 0.09, 100.5, -1.0])
def test_max_hz_out_of_range_is_refused(hz: float) -> None:
    """max_hz outside 0.1..100 is a ValueError before any connection."""
    with pytest.raises(ValueError, match="max_hz"):
        ProtocolOptions(max_hz=hz)


def test_with_params_replaces_and_keeps_the_rest() -> None:
    """Parameters are replaced or removed; others (mode=...) stay; no params, same URL."""
    url = "ws://h:1/ws?mode=latest&tickers=AAPL"
    assert with_params(url, {}) is url
    assert with_params(url, {"tickers": "MSFT", "since": "e:3"}) == (
        "ws://h:1/ws?mode=latest&tickers=MSFT&since=e:3"
    )
    assert with_params(url, {"tickers": None}) == "ws://h:1/ws?mode=latest"


def test_filter_changes_are_set_operations() -> None:
    """subscribe adds, unsubscribe removes, set replaces; '*' absorbs additions."""
    assert change_filter(f("AAPL"), "subscribe", f("msft")) == f("AAPL", "MSFT")
    assert change_filter(f("AAPL", "MSFT"), "unsubscribe", f("AAPL")) == f("MSFT")
    assert change_filter(f("AAPL"), "set", f("GOOGL")) == f("GOOGL")
    assert change_filter(f("AAPL"), "subscribe", TickerFilter()) == TickerFilter()
    assert change_filter(TickerFilter(), "subscribe", f("AAPL")) == TickerFilter()
    assert change_filter(TickerFilter(), "set", f("AAPL")) == f("AAPL")


@pytest.mark.parametrize(
    ("current", "action", "symbols", "message"),
    [
        (f("AAPL"), "unsubscribe", f("AAPL"), "no ticker"),
        (TickerFilter(), "unsubscribe", f("AAPL"), "cannot unsubscribe from"),
        (f("AAPL"), "unsubscribe", TickerFilter(), "leave none"),
    ],
)
def test_changes_that_a_url_cannot_express_are_refused(
    current: TickerFilter, action: str, symbols: TickerFilter, message: str
) -> None:
    """Nothing left, or 'all but these', raise ValueError before anything is sent."""
    with pytest.raises(ValueError, match=message):
        change_filter(current, action, symbols)  # type: ignore[arg-type]


def test_requested_symbols_are_validated() -> None:
    """Bad symbols and empty requests are refused; strings may be comma-separated."""
    assert requested("aapl, msft") == f("AAPL", "MSFT")
    assert requested(None) == TickerFilter()
    with pytest.raises(InvalidTickers):
        requested(["AAPL;"])
    with pytest.raises(ValueError, match="at least one"):
        requested([])


def test_too_many_tickers_in_total_are_refused() -> None:
    """A subscribe that would pass the per-connection limit raises InvalidTickers."""
    current = TickerFilter.of([f"T{i}" for i in range(1000)])
    with pytest.raises(InvalidTickers, match="too many"):
        change_filter(current, "subscribe", f("ZZZ"))


symbols = st.sets(st.sampled_from(["AAPL", "MSFT", "GOOGL", "TSLA", "IBM"]), min_size=1)


@given(st.lists(st.tuples(st.sampled_from(["subscribe", "unsubscribe", "set"]), symbols)))
def test_a_sequence_of_changes_matches_a_set_model(changes: list[tuple[str, set[str]]]) -> None:
    """Any sequence of accepted changes ends where plain set arithmetic does."""
    model: set[str] = {"AAPL"}
    current = f("AAPL")
    for action, syms in changes:
        expected = (
            model | syms
            if action == "subscribe"
            else model - syms
            if action == "unsubscribe"
            else syms
        )
        if not expected:
            with pytest.raises(ValueError):
                change_filter(current, action, f(*syms))  # type: ignore[arg-type]
            continue
        current = change_filter(current, action, f(*syms))  # type: ignore[arg-type]
        model = expected
        assert current == TickerFilter(frozenset(model))
