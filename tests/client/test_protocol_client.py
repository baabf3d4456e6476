"""
The client's side of the opt-in protocol against tiny scripted servers: the URL it asks,
what it does with batches, control frames and replies. (Against the real server:
test_protocol_server.py.)
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection

from quotes_client import (
    ActionRejected,
    ConnectionEvent,
    FilterChanged,
    Gap,
    QuotesClient,
    Recovered,
    ServerError,
)
from quotes_core import TickerFilter
from quotes_core.testing import make_quote, quote_payload
from tests.client.servers import RecordingSleep, StreamServer, events_of, eventually, take

pytestmark = pytest.mark.anyio


def query_of(path: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(path).query)


def seq_frame(ticker: str, n: int, epoch: str = "e1") -> str:
    return f'{quote_payload(ticker, n)[:-1]},"seq":{n},"epoch":"{epoch}"}}'


async def test_options_are_asked_in_the_url_and_absent_by_default() -> None:
    """snapshot, max_hz, batch and resume each add their parameter; a plain client adds none."""
    plain = QuotesClient("ws://127.0.0.1:1/ws/quotes", tickers=["AAPL"])
    assert plain.url == "ws://127.0.0.1:1/ws/quotes?tickers=AAPL"
    full = QuotesClient(
        "ws://127.0.0.1:1/ws/quotes?mode=latest",
        tickers=["AAPL"],
        snapshot=True,
        max_hz=2,
        batch=True,
        resume=True,
    )
    assert query_of(full.url) == {
        "mode": ["latest"],
        "tickers": ["AAPL"],
        "snapshot": ["1"],
        "seq": ["1"],
        "max_hz": ["2"],
        "batch": ["1"],
    }
    with pytest.raises(ValueError, match="max_hz"):
        QuotesClient("ws://127.0.0.1:1/ws", max_hz=500)


async def test_batches_are_unpacked_transparently() -> None:
    """Arrays of quotes come out one quote at a time, in order, with stats per quote."""

    async def handler(ws: ServerConnection, index: int) -> None:
        await ws.send("[" + ",".join(quote_payload("AAPL", i) for i in range(3)) + "]")
        await ws.send(f"[{quote_payload('MSFT', 3)}]")
        await ws.wait_closed()

    async with StreamServer(handler) as server, QuotesClient(server.url(), batch=True) as client:
        quotes = await take(client, 4)
        assert client.stats.received == 4
    assert quotes == [make_quote("AAPL", i) for i in range(3)] + [make_quote("MSFT", 3)]
    assert query_of(server.requests[0].path)["batch"] == ["1"]


async def test_subscribe_waits_for_the_reply_and_reconnects_with_the_new_filter() -> None:
    """subscribe() returns the server's filter; the next connection's URL carries it."""
    actions: list[dict[str, object]] = []

    async def handler(ws: ServerConnection, index: int) -> None:
        if index == 0:
            actions.append(json.loads(await ws.recv()))
            await ws.send('{"event":"subscribed","tickers":["AAPL","MSFT"]}')
            await ws.send(quote_payload("MSFT", 1))
            await ws.close(1011, "Internal server error")
            return
        await ws.send(quote_payload("MSFT", 2))
        await ws.wait_closed()

    seen: list[ConnectionEvent] = []
    sleep = RecordingSleep()
    async with (
        StreamServer(handler) as server,
        QuotesClient(server.url(), tickers=["AAPL"], sleep=sleep, on_event=seen.append) as client,
    ):
        await client.wait_connected()
        confirmed = await client.subscribe(["msft"])
        assert confirmed == TickerFilter.of(["AAPL", "MSFT"])
        assert client.tickers == confirmed
        assert [q.volume for q in await take(client, 2)] == [1, 2]
    assert actions == [{"action": "subscribe", "tickers": ["MSFT"]}]
    assert query_of(server.requests[1].path)["tickers"] == ["AAPL,MSFT"]
    assert events_of(FilterChanged, seen) == [FilterChanged(TickerFilter.of(["AAPL", "MSFT"]))]


async def test_a_refused_change_raises_and_the_stream_goes_on() -> None:
    """An error reply raises ActionRejected with its code; the filter and the stream stay."""

    async def handler(ws: ServerConnection, index: int) -> None:
        await ws.recv()
        await ws.send('{"event":"error","code":"forbidden","message":"not in your grant"}')
        await ws.send(quote_payload("AAPL", 7))
        await ws.wait_closed()

    seen: list[ConnectionEvent] = []
    async with (
        StreamServer(handler) as server,
        QuotesClient(server.url(), tickers=["AAPL"], on_event=seen.append) as client,
    ):
        await client.wait_connected()
        with pytest.raises(ActionRejected) as refused:
            await client.set_tickers(["TSLA"])
        assert (refused.value.code, refused.value.message) == ("forbidden", "not in your grant")
        assert client.tickers == TickerFilter.of(["AAPL"])
        assert [q.volume for q in await take(client, 1)] == [7]
    assert events_of(ServerError, seen) == [ServerError("forbidden", "not in your grant")]


async def test_a_change_while_disconnected_applies_to_the_next_connection() -> None:
    """Before any connection the change is local, checked, and the first URL carries it."""
    async with StreamServer() as server:
        client = QuotesClient(server.url(), tickers=["AAPL"])
        assert await client.subscribe("msft") == TickerFilter.of(["AAPL", "MSFT"])
        assert await client.unsubscribe(["AAPL"]) == TickerFilter.of(["MSFT"])
        with pytest.raises(ValueError, match="no ticker"):
            await client.unsubscribe(["MSFT"])
        async with client:
            await client.wait_connected()
    assert query_of(server.requests[0].path)["tickers"] == ["MSFT"]


async def test_resume_reconnects_with_since_and_reports_recovered() -> None:
    """After a drop the client asks since=<epoch>:<seq> (plus snapshot=1) and gets the replay."""

    async def handler(ws: ServerConnection, index: int) -> None:
        if index == 0:
            for n in (1, 2, 3):
                await ws.send(seq_frame("AAPL", n))
            await eventually(lambda: client.stats.received == 3)
            ws.transport.abort()  # TCP dropped, no close frame
            return
        await ws.send('{"event":"recovered","recovered":true,"epoch":"e1","seq":3}')
        for n in (4, 5):
            await ws.send(seq_frame("AAPL", n))
        await ws.wait_closed()

    seen: list[ConnectionEvent] = []
    async with StreamServer(handler) as server:
        client = QuotesClient(
            server.url(), resume=True, sleep=RecordingSleep(), on_event=seen.append
        )
        async with client:
            quotes = await take(client, 5)
            stats = client.stats
            assert client.position == ("e1", 5)
    assert [q.volume for q in quotes] == [1, 2, 3, 4, 5]
    first, second = (query_of(r.path) for r in server.requests)
    assert first == {"seq": ["1"]}
    assert second == {"seq": ["1"], "since": ["e1:3"], "snapshot": ["1"]}
    assert events_of(Recovered, seen) == [Recovered(True, "e1", 3)]
    assert (stats.recovered, stats.unrecovered, stats.gaps, stats.missed) == (1, 0, 0, 0)


async def test_unrecovered_resume_counts_one_gap_and_takes_the_snapshot() -> None:
    """recovered: false is a Gap; the snapshot's older seqs that follow are not."""

    async def handler(ws: ServerConnection, index: int) -> None:
        if index == 0:
            await ws.send(seq_frame("AAPL", 1, "old"))
            await ws.close(1012, "restart")
            return
        await ws.send('{"event":"recovered","recovered":false,"epoch":"new","seq":10}')
        await ws.send(seq_frame("MSFT", 8, "new"))  # snapshot: older seqs
        await ws.send(seq_frame("AAPL", 10, "new"))
        await ws.send(seq_frame("AAPL", 11, "new"))  # live
        await ws.wait_closed()

    seen: list[ConnectionEvent] = []
    async with StreamServer(handler) as server:
        client = QuotesClient(
            server.url(), resume=True, sleep=RecordingSleep(), on_event=seen.append
        )
        async with client:
            quotes = await take(client, 4)
            stats = client.stats
    assert [q.volume for q in quotes] == [1, 8, 10, 11]
    assert events_of(Recovered, seen) == [Recovered(False, "new", 10)]
    assert events_of(Gap, seen) == [Gap("unrecovered", None, "new", 10)]
    assert (stats.recovered, stats.unrecovered, stats.gaps, stats.missed) == (0, 1, 1, 0)


async def test_seq_jumps_on_a_stream_of_every_ticker_are_gaps() -> None:
    """With every ticker and no max_hz, 1, 2, 5 is one gap of two quotes."""

    async def handler(ws: ServerConnection, index: int) -> None:
        for n in (1, 2, 5, 6):
            await ws.send(seq_frame("AAPL" if n % 2 else "MSFT", n))
        await ws.wait_closed()

    seen: list[ConnectionEvent] = []
    async with (
        StreamServer(handler) as server,
        QuotesClient(server.url(), resume=True, on_event=seen.append) as client,
    ):
        await take(client, 4)
        stats = client.stats
    assert (stats.gaps, stats.missed) == (1, 2)
    assert events_of(Gap, seen) == [Gap("seq", 2, "e1", 5)]


async def test_seq_jumps_on_a_filtered_stream_are_not_gaps() -> None:
    """A filtered stream skips other tickers' seqs by design: no gap."""

    async def handler(ws: ServerConnection, index: int) -> None:
        for n in (1, 4, 9):
            await ws.send(seq_frame("AAPL", n))
        await ws.wait_closed()

    async with (
        StreamServer(handler) as server,
        QuotesClient(server.url(), tickers=["AAPL"], resume=True) as client,
    ):
        await take(client, 3)
        assert (client.stats.gaps, client.position) == (0, ("e1", 9))


async def test_control_frames_are_not_counted_as_invalid() -> None:
    """An unknown control frame is skipped quietly; quotes around it arrive."""

    async def handler(ws: ServerConnection, index: int) -> None:
        await ws.send('{"event":"something_new","x":1}')
        await ws.send(quote_payload("AAPL", 1))
        await ws.wait_closed()

    async with StreamServer(handler) as server, QuotesClient(server.url()) as client:
        assert [q.volume for q in await take(client, 1)] == [1]
        assert client.stats.invalid == 0
