"""Building the stream URL from a base URL and tickers."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from quotes_client import stream_url
from quotes_core import InvalidTickers


def test_tickers_become_a_canonical_query_value() -> None:
    """Symbols are upper-cased, de-duplicated and sorted into ``tickers``."""
    url = stream_url("ws://h:8000/v1/ws/quotes", ["msft", "AAPL", "aapl"])
    assert url == "ws://h:8000/v1/ws/quotes?tickers=AAPL,MSFT"


def test_other_query_parameters_are_kept_and_tickers_replaced() -> None:
    """Existing parameters survive; an existing ``tickers`` is replaced."""
    url = stream_url("wss://h/ws?mode=latest&tickers=IBM", "googl, ^gspc,EURUSD=X")
    query = parse_qs(urlsplit(url).query)
    assert query == {"mode": ["latest"], "tickers": ["EURUSD=X,GOOGL,^GSPC"]}


@pytest.mark.parametrize("tickers", [["*"], [], "*"])
def test_all_tickers_removes_the_parameter(tickers: list[str] | str) -> None:
    """``*`` or an empty list mean every ticker: no ``tickers`` parameter."""
    assert stream_url("ws://h/ws?tickers=IBM&x=1", tickers) == "ws://h/ws?x=1"


def test_none_keeps_the_url() -> None:
    """``tickers=None`` leaves the URL (and any tickers in it) alone."""
    assert stream_url("ws://h/ws?tickers=IBM", None) == "ws://h/ws?tickers=IBM"


def test_invalid_ticker_raises_before_connecting() -> None:
    """A bad symbol raises the core's InvalidTickers."""
    with pytest.raises(InvalidTickers):
        stream_url("ws://h/ws", ["AAPL;DROP"])


@pytest.mark.parametrize("url", ["ftp://h/ws", "h:8000/ws", "ws://", "https://"])
def test_non_stream_url_raises(url: str) -> None:
    """Only ws://, wss:// (and http(s):// for SSE) URLs with a host are accepted."""
    with pytest.raises(ValueError, match="not a stream URL"):
        stream_url(url)


def test_an_sse_url_takes_tickers_like_a_websocket_url() -> None:
    assert stream_url("https://h/sse/quotes?x=1", ["msft", "aapl"]) == (
        "https://h/sse/quotes?x=1&tickers=AAPL,MSFT"
    )
