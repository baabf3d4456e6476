"""Slow and stalled clients never hold anyone else up, and stalled ones are closed."""

from __future__ import annotations

import asyncio

import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, wait_until
from tests.helpers.rawws import raw_handshake, read_until_closed
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import collect_until, open_ws

pytestmark = pytest.mark.anyio

N = 60_000  # ~11 MB of frames: more than a stalled peer's socket buffers can absorb


async def test_stalled_client_does_not_stall_others_and_is_closed(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A peer that never reads: the others get every quote with no gap; it gets closed."""
    # a buffer larger than the burst: the healthy clients may lag behind the pipelined
    # burst for a moment without being conflated, so "no gap" is exact
    server = start_server(redis_server, slow_client_timeout=2, close_timeout=1, buffer_size=N + 10)
    stalled = raw_handshake(server.port, "/ws/quotes", rcvbuf=4096)
    try:
        async with (
            open_ws(f"{server.ws_url}/ws/quotes", max_queue=None) as a,
            open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL,MSFT,END", max_queue=None) as b,
        ):
            tickers = ["AAPL", "MSFT", "GOOGL", "TSLA"]
            messages = [upstream_message(tickers[i % 4], i) for i in range(N)]
            messages.append(upstream_message("END", N))
            publishing = asyncio.create_task(
                asyncio.to_thread(redis_server.publish_many, CHANNEL, messages)
            )
            got_a, got_b = await asyncio.gather(
                collect_until(a, lambda q: q["ticker"] == "END", timeout=120),
                collect_until(b, lambda q: q["ticker"] == "END", timeout=120),
            )
            await publishing
            assert [q["volume"] for q in got_a] == list(range(N + 1))
            assert [q["volume"] for q in got_b] == [
                i for i in range(N + 1) if i == N or i % 4 in (0, 1)
            ]
            wait_until(
                lambda: server.metric("quotes_slow_consumer_closes_total") == 1,
                timeout=30,
                what="the stalled client to be closed",
            )
            wait_until(lambda: server.metric("quotes_ws_connections") == 2, what="gauge = 2")
        # the server dropped the stalled socket: reading it ends in EOF or reset
        read_until_closed(stalled, timeout=30)
    finally:
        stalled.close()
    wait_until(lambda: server.metric("quotes_ws_connections") == 0, what="gauge = 0")
    assert "closing with 1013" in server.log()
    assert server.metric("quotes_ws_disconnects_total", 'code="1013"') == 1


async def test_slow_reader_gets_the_newest_quote_of_every_ticker(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A client that falls behind is conflated: it still ends with the newest quote per ticker."""
    server = start_server(redis_server, buffer_size=100, slow_client_timeout=60)
    tickers = ["AAPL", "MSFT", "GOOGL"]
    # small client buffers and window so the backlog stays in the server
    async with open_ws(f"{server.ws_url}/ws/quotes", max_queue=4) as ws:
        # no reading while everything is published
        messages = [upstream_message(tickers[i % 3], i) for i in range(N)]
        await asyncio.to_thread(redis_server.publish_many, CHANNEL, messages)
        last = {t: max(i for i in range(N) if i % 3 == k) for k, t in enumerate(tickers)}
        seen_last: set[str] = set()

        def all_newest_seen(q: dict[str, object]) -> bool:
            if q["volume"] == last[str(q["ticker"])]:
                seen_last.add(str(q["ticker"]))
            return len(seen_last) == len(tickers)

        got = await collect_until(ws, all_newest_seen, timeout=120)
        newest: dict[str, int] = {}
        for q in got:
            assert q["volume"] > newest.get(q["ticker"], -1)  # per-ticker order kept
            newest[q["ticker"]] = q["volume"]
    assert len(got) < N  # it did fall behind and was conflated
    assert newest == last
    wait_until(lambda: server.metric("quotes_conflated_total") == N - len(got), what="count")
