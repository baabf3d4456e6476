"""The client engine alone: frames in; quotes, events and answers out; the next URL."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from quotes_client import ActionRejected, FilterChanged, Gap, Recovered, ServerError
from quotes_client.engine import Answer, ClientEngine
from quotes_client.protocol import ProtocolOptions
from quotes_core import Quote, TickerFilter, encode_quote, with_position
from quotes_core.testing import make_quote

URL = "ws://127.0.0.1:1/ws/quotes"


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def frame(q: Quote, seq: int | None = None, epoch: str = "e1") -> bytes:
    text = encode_quote(q)
    return (with_position(text, seq, epoch) if seq is not None else text).encode()


def test_a_resuming_client_asks_since_and_counts_a_jump_on_an_every_ticker_stream() -> None:
    engine = ClientEngine(URL, options=ProtocolOptions(resume=True))
    assert query(engine.connecting()) == {"seq": ["1"]}
    assert engine.connected() is None
    assert engine.feed(frame(make_quote("AAPL", 1), 1)) == [make_quote("AAPL", 1)]
    out = engine.feed(frame(make_quote("AAPL", 2), 4))  # seqs 2 and 3 never came
    assert out == [Gap("seq", 2, "e1", 4), make_quote("AAPL", 2)]
    assert engine.position == ("e1", 4)
    assert query(engine.connecting()) == {"seq": ["1"], "since": ["e1:4"], "snapshot": ["1"]}
    engine.connected()
    recovered = json.dumps({"event": "recovered", "recovered": False, "epoch": "e2", "seq": 9})
    out = engine.feed(recovered.encode())
    assert out == [Recovered(False, "e2", 9), Gap("unrecovered", None, "e2", 9)]


def test_filter_changes_are_answered_and_followed_by_the_next_url() -> None:
    engine = ClientEngine(URL, tickers="AAPL")
    engine.connecting()
    wanted, text = engine.change("subscribe", ["msft"])
    assert wanted == TickerFilter(frozenset({"AAPL", "MSFT"}))
    assert json.loads(text) == {"action": "subscribe", "tickers": ["MSFT"]}
    subscribed = b'{"event":"subscribed","tickers":["AAPL","MSFT"]}'
    assert engine.feed(subscribed) == [Answer(wanted), FilterChanged(wanted)]
    assert engine.filter == wanted
    assert query(engine.next_url())["tickers"] == ["AAPL,MSFT"]
    refused = b'{"event":"error","code":"forbidden","message":"no"}'
    answer, event = engine.feed(refused)
    assert isinstance(answer, Answer)
    assert isinstance(answer.result, ActionRejected)
    assert answer.result.code == "forbidden"
    assert event == ServerError("forbidden", "no")
    assert engine.filter == wanted


def test_a_change_during_the_handshake_is_sent_once_connected() -> None:
    engine = ClientEngine(URL, tickers="AAPL")
    engine.connecting()
    engine.set_filter(TickerFilter(frozenset({"TSLA"})))  # no connection: for the next one
    action = engine.connected()
    assert action is not None
    assert json.loads(action) == {"action": "set", "tickers": ["TSLA"]}
    engine.connecting()
    assert engine.connected() is None  # the URL asks for it now


def test_invalid_messages_and_unknown_controls() -> None:
    engine = ClientEngine(URL, options=ProtocolOptions(batch=True))
    engine.connecting()
    engine.connected()
    batch = f"[{encode_quote(make_quote('AAPL', 1))},{encode_quote(make_quote('MSFT', 2))}]"
    assert engine.feed(batch.encode()) == [make_quote("AAPL", 1), make_quote("MSFT", 2)]
    assert engine.feed(b'{"event":"pong","id":1,"server_time":"x"}') == []
    (bad,) = engine.feed(b"not json")
    assert not isinstance(bad, Quote | Answer)


def test_changes_need_tickers_and_a_valid_url_filter() -> None:
    with pytest.raises(ValueError, match="needs tickers"):
        ClientEngine(URL).change("subscribe", None)
    with pytest.raises(ValueError, match="invalid"):
        ClientEngine(URL + "?tickers=A;B").change("set", "AAPL")
