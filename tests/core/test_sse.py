"""The stream's Server-Sent Events shapes (pinned by the SSE issue), from the engine."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_core import (
    TEXT_CODEC,
    ClientError,
    Mode,
    Position,
    Stream,
    StreamOptions,
    Subscriber,
    TickerFilter,
    encode_quote,
)
from quotes_core.backoff import INITIAL_DELAY, backoff
from quotes_core.history import StreamItem
from quotes_core.sse import (
    KEEPALIVE,
    RETRY,
    EventCache,
    closing,
    events,
    preface,
    sse_options,
)
from quotes_core.testing import make_quote


def parse(stream_text: str) -> list[dict[str, str]]:
    """Events as an EventSource reads them (field -> value; data lines joined)."""
    out = []
    for block in stream_text.split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                fields.setdefault("comment", line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            fields[name] = fields[name] + "\n" + value if name in fields else value
        out.append(fields)
    return out


def opened(options: StreamOptions, *published: str) -> Subscriber[str]:
    stream: Stream[str] = Stream(epoch="e1")
    for n, ticker in enumerate(published, start=1):
        q = make_quote(ticker, n)
        stream.publish(q, encode_quote(q), 0.0)
    return stream.open(TickerFilter(), Mode.FIFO, options, 0.0)


def test_each_quote_is_one_event_with_its_position_and_the_websocket_json() -> None:
    sub = opened(sse_options(StreamOptions(snapshot=True), None), "AAPL", "MSFT")
    out, quotes = events(sub.take(0.0), sub.options, TEXT_CODEC)
    got = parse("".join(out))
    assert quotes == 2
    assert [e["id"] for e in got] == ["e1:1", "e1:2"]
    first = json.loads(got[0]["data"])
    assert (first["ticker"], first["seq"], first["epoch"]) == ("AAPL", 1, "e1")
    assert "event" not in got[0]  # unnamed: an EventSource's "message"


def _item(epoch: str, seq: int) -> StreamItem[str]:
    """The one quote at ``epoch``:``seq`` (a position names one quote)."""
    q = make_quote(["AAPL", "MSFT", "NVDA"][(seq + len(epoch)) % 3], seq)
    return StreamItem(seq, epoch, q.ticker, encode_quote(q), 0.0)


@given(
    st.lists(st.tuples(st.sampled_from(["e1", "e22"]), st.integers(1, 12)), max_size=60),
    st.integers(1, 6),
)
def test_the_event_cache_renders_exactly_what_the_events_are(
    positions: list[tuple[str, int]], limit: int
) -> None:
    """Shared by every stream, the cache's events are the rendered ones, and it stays bounded."""
    cache = EventCache(limit)
    options = sse_options(StreamOptions(), None)
    for epoch, seq in positions:
        item = _item(epoch, seq)
        assert events([item], options, TEXT_CODEC, cache) == events([item], options, TEXT_CODEC)
        assert len(cache) <= limit


def test_batch_is_one_array_event_between_controls_with_the_last_id() -> None:
    stream: Stream[str] = Stream(epoch="e1")
    for n in range(1, 4):
        q = make_quote("AAPL", n)
        stream.publish(q, encode_quote(q), 0.0)
    options = sse_options(StreamOptions(batch=True), "e1:1")
    sub = stream.open(TickerFilter(), Mode.FIFO, options, 0.0)
    got = parse("".join(events(sub.take(0.0), sub.options, TEXT_CODEC)[0]))
    assert got[0]["event"] == "recovered"
    assert json.loads(got[0]["data"])["recovered"] is True
    assert got[1]["id"] == "e1:3"
    assert [q["seq"] for q in json.loads(got[1]["data"])] == [2, 3]


def test_last_event_id_resumes_and_wins_over_since() -> None:
    options = sse_options(StreamOptions(since=Position("old", 9)), " e2:7 ")
    assert (options.seq, options.since) == (True, Position("e2", 7))
    assert sse_options(StreamOptions(since=Position("old", 9)), None).since == Position("old", 9)
    assert sse_options(StreamOptions(), "").since is None
    with pytest.raises(ClientError, match="invalid Last-Event-ID"):
        sse_options(StreamOptions(), "nope")


def test_preface_and_keepalive_are_what_an_eventsource_expects() -> None:
    assert preface(1.0) == "retry: 1000\n\n"
    assert parse(KEEPALIVE) == [{"comment": "keepalive"}]


def test_a_plain_payload_is_refused() -> None:
    with pytest.raises(TypeError, match="position"):
        events(["{}"], StreamOptions(seq=True), TEXT_CODEC)


def test_closing_is_an_error_event_with_the_websocket_close_code_and_reason() -> None:
    (event,) = parse(closing(1011, "Internal server error"))
    assert event["event"] == "error"
    assert "id" not in event  # not a position: a resume goes on from the last quote
    assert json.loads(event["data"]) == {
        "event": "error",
        "code": "closed",
        "close_code": 1011,
        "message": "Internal server error",
    }


def test_retry_is_the_backoffs_first_delay() -> None:
    assert RETRY == INITIAL_DELAY == next(backoff())
    assert preface() == "retry: 1000\n\n"
