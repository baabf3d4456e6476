"""Streaming from tiny local WebSocket servers: validation, buffering, helpers, events."""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

import anyio
import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from quotes_client import (
    BackingOff,
    Backoff,
    ClientState,
    Closed,
    Connected,
    Connecting,
    ConnectionEvent,
    Disconnected,
    Failed,
    QuotesClient,
    RetriesExhausted,
)
from quotes_core import InvalidTickers, Quote
from quotes_core.testing import BASE_TIME, make_quote, quote_payload, upstream_message
from tests.client.servers import (
    RecordingSleep,
    StreamServer,
    eventually,
    header,
    noise,
    send_then_hold,
    take,
)

pytestmark = pytest.mark.anyio


async def test_yields_validated_quotes_in_order() -> None:
    """Messages become normalised Quote objects, in the order the server sent them."""
    raw = (
        '{"ticker":"aapl","timestamp":"2026-02-12T12:30:00.5+02:00","open":1,"high":2,'
        '"low":0.5,"close":1.5,"volume":10}'
    )
    async with (
        StreamServer(send_then_hold(raw, quote_payload("MSFT", 1))) as server,
        QuotesClient(server.url()) as client,
    ):
        first, second = await take(client, 2)
    assert first.ticker == "AAPL"
    assert first.timestamp == BASE_TIME + timedelta(microseconds=500_000)
    assert (first.close, first.volume, first.bid) == (1.5, 10, None)
    assert second == make_quote("MSFT", 1)


async def test_invalid_messages_are_counted_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """Garbage never reaches the caller or closes the connection; it is counted and logged once."""
    garbage: list[str | bytes] = [
        "not json",
        '{"ticker":"AAPL"}',
        '{"ticker":"AAPL","timestamp":"2026-02-12T10:30:00Z","open":NaN,"high":1,'
        '"low":1,"close":1,"volume":1}',
        b"\xff\xfe not utf-8",
        "[" + " " * 5000 + "]",
        quote_payload().replace('"AAPL"', '"BAD;T"'),
    ]
    handler = send_then_hold(quote_payload("AAPL", 0), *garbage, quote_payload("AAPL", 1))
    with caplog.at_level(logging.WARNING, logger="quotes_client"):
        async with StreamServer(handler) as server, QuotesClient(server.url()) as client:
            quotes = await take(client, 2)
            stats = client.stats
    assert [q.volume for q in quotes] == [0, 1]
    assert stats.invalid == len(garbage)
    assert stats.received == 2
    assert stats.connects == 1
    invalid_logs = [r for r in caplog.records if "invalid message" in r.getMessage()]
    assert len(invalid_logs) == 1  # rate-limited: one line per 10 s


async def test_tickers_origin_and_headers_reach_the_server() -> None:
    """The handshake carries the tickers filter, other URL parameters, Origin and extra headers."""
    async with StreamServer() as server:
        client = QuotesClient(
            server.url("/v1/ws/quotes?mode=latest"),
            tickers=["msft", "aapl"],
            origin="http://allowed.example",
            headers={"X-Token": "secret"},
        )
        async with client:
            await client.wait_connected()
    request = server.requests[0]
    assert request.path == "/v1/ws/quotes?mode=latest&tickers=AAPL,MSFT"
    assert header(request, "Origin") == "http://allowed.example"
    assert header(request, "X-Token") == "secret"


async def test_slow_consumer_keeps_the_newest_1000_and_counts_drops() -> None:
    """With the default policy a consumer that does not read holds at most 1,000 quotes."""
    total = 5000
    handler = send_then_hold(*(upstream_message("AAPL", i).decode() for i in range(total)))
    async with StreamServer(handler) as server, QuotesClient(server.url()) as client:
        peak = 0

        def all_received() -> bool:
            nonlocal peak
            peak = max(peak, client.stats.buffered)
            return client.stats.received == total

        await eventually(all_received, what="every quote to be received")
        stats = client.stats
        kept = await take(client, stats.buffered)
    assert peak <= 1000
    assert stats.buffered == 1000
    assert stats.dropped == total - 1000
    assert [q.volume for q in kept] == list(range(total - 1000, total))


async def test_block_policy_stops_reading_and_loses_nothing() -> None:
    """With ``overflow="block"`` a full buffer stops the reader; TCP pushes back on the server."""
    total = 20_000  # 3 KB each: far more than the kernel's socket buffers hold
    sent = 0
    server_ws: list[ServerConnection] = []

    async def flood(ws: ServerConnection, index: int) -> None:
        nonlocal sent
        server_ws.append(ws)
        with contextlib.suppress(ConnectionClosed):
            for i in range(total):
                await ws.send(upstream_message("AAPL", i, pad=noise(3000)).decode())
                sent += 1

    async with (
        StreamServer(flood) as server,
        # close_timeout=None: closing must not rely on the timeout to get unstuck
        QuotesClient(server.url(), buffer_size=100, overflow="block", close_timeout=None) as client,
    ):

        def server_blocked() -> bool:
            return (
                client.stats.buffered == 100
                and bool(server_ws)
                and server_ws[0].transport.get_write_buffer_size() > 0
            )

        await eventually(server_blocked, what="the server to feel backpressure")
        stalled = client.stats
        sent_when_stalled = sent
        first = await take(client, 300)
        assert client.stats.received > stalled.received
        await eventually(lambda: client.stats.buffered == 100, what="the reader to stall again")
        with anyio.fail_after(10):
            await client.aclose()  # drains the library's queue to reach the close frame
    assert stalled.received <= 101  # the buffer plus the one quote waiting to go in
    assert stalled.dropped == 0
    assert sent_when_stalled < total
    assert [q.volume for q in first] == list(range(300))


async def test_batches_group_quotes_in_order() -> None:
    """``batches()`` yields non-empty lists that together are the stream, in order."""
    total = 250
    handler = send_then_hold(*(upstream_message("AAPL", i).decode() for i in range(total)))
    batches: list[list[Quote]] = []
    async with StreamServer(handler) as server, QuotesClient(server.url()) as client:
        with anyio.fail_after(10):
            async for batch in client.batches(interval=0.02):
                batches.append(batch)
                if sum(map(len, batches)) >= total:
                    break
    assert all(batches)
    assert [q.volume for b in batches for q in b] == list(range(total))


async def test_batches_end_when_the_client_closes() -> None:
    """A batch in progress is delivered, then the iterator ends, when the client is closed."""
    batches: list[list[Quote]] = []
    async with StreamServer(send_then_hold(quote_payload("AAPL", 7))) as server:
        client = QuotesClient(server.url())
        async with client:

            async def consume() -> None:
                batches.extend([batch async for batch in client.batches(interval=3600)])

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(consume)
                    await eventually(lambda: client.stats.received == 1)
                    await client.aclose()
    assert batches == [[make_quote("AAPL", 7)]]


async def test_latency_is_receive_time_minus_quote_time() -> None:
    """Latency stats use the injected wall clock: count, p50, p99 and max are exact."""
    now = BASE_TIME.timestamp() + 0.25
    messages = [
        quote_payload("AAPL", i, timestamp=BASE_TIME - timedelta(milliseconds=i))
        for i in range(100)
    ]
    async with (
        StreamServer(send_then_hold(*messages)) as server,
        QuotesClient(server.url(), wall_clock=lambda: now) as client,
    ):
        await take(client, 100)
        latency = client.latency
    assert latency.count == 100
    assert latency.p50 == pytest.approx(0.25 + 0.049)
    assert latency.p99 == pytest.approx(0.25 + 0.098)
    assert latency.max == pytest.approx(0.25 + 0.099)


async def test_events_and_callback_report_the_connection_lifecycle(sleep: RecordingSleep) -> None:
    """Connecting, Connected, Disconnected(1011), BackingOff, ... Closed reach both listeners."""

    async def script(ws: ServerConnection, index: int) -> None:
        if index == 0:
            await ws.close(1011, "Internal server error")
        else:
            await ws.send(quote_payload())
            await ws.wait_closed()

    seen: list[ConnectionEvent] = []
    async with StreamServer(script) as server:
        client = QuotesClient(
            server.url(), on_event=seen.append, sleep=sleep, backoff=Backoff(jitter=0)
        )
        stream = client.events()
        async with client:
            await take(client, 1)
            assert client.state is ClientState.CONNECTED
        streamed = [event async for event in stream]
    assert streamed == seen
    kinds = [type(e) for e in seen]
    assert kinds == [
        Connecting,
        Connected,
        Disconnected,
        BackingOff,
        Connecting,
        Connected,
        Closed,
    ]
    disconnected = seen[2]
    assert isinstance(disconnected, Disconnected)
    assert (disconnected.code, disconnected.by_server, disconnected.fatal) == (1011, True, False)
    assert "Internal server error" in disconnected.reason
    assert seen[3] == BackingOff(delay=1.0, attempt=2)
    assert client.state is ClientState.CLOSED
    assert client.stats.reconnects == 1


async def test_closing_ends_iteration_and_sends_1000() -> None:
    """``aclose()`` from another task ends ``async for`` cleanly; the server sees code 1000."""
    async with StreamServer() as server:
        client = QuotesClient(server.url())
        got: list[Quote] = []
        async with client:
            await client.wait_connected()
            async with anyio.create_task_group() as tg:

                async def consume() -> None:
                    got.extend([q async for q in client])

                tg.start_soon(consume)
                await client.aclose()
        await eventually(lambda: len(server.close_codes) == 1, what="the server to see the close")
    assert got == []
    assert server.close_codes == [1000]
    assert client.state is ClientState.CLOSED


async def test_iterating_before_start_is_an_error() -> None:
    """Iterating a client that was never started raises a RuntimeError that says what to do."""
    client = QuotesClient("ws://127.0.0.1:9/ws")
    with pytest.raises(RuntimeError, match="async with"):
        await client.__anext__()


def test_bad_arguments_fail_before_any_network() -> None:
    """Invalid tickers, URLs and limits raise at construction."""
    with pytest.raises(InvalidTickers):
        QuotesClient("ws://127.0.0.1:9/ws", tickers=["AAPL", "no good"])
    with pytest.raises(ValueError):
        QuotesClient("ftp://127.0.0.1:9/ws")
    with pytest.raises(ValueError):
        QuotesClient("ws://127.0.0.1:9/ws", max_retries=-1)
    with pytest.raises(ValueError):
        QuotesClient("ws://127.0.0.1:9/ws", buffer_size=0)


async def test_a_failing_callback_does_not_stop_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An on_event callback that raises is logged and ignored; quotes keep flowing."""

    def broken(event: ConnectionEvent) -> None:
        raise ValueError("bug in the callback")

    with caplog.at_level(logging.ERROR, logger="quotes_client"):
        async with (
            StreamServer(send_then_hold(quote_payload("AAPL", 1))) as server,
            QuotesClient(server.url(), on_event=broken) as client,
        ):
            (quote,) = await take(client, 1)
    assert quote.volume == 1
    assert any("on_event callback failed" in r.getMessage() for r in caplog.records)


async def test_unread_event_stream_is_bounded() -> None:
    """An events() listener that never reads keeps only the newest ``maxlen`` events."""
    async with StreamServer(lambda ws, i: ws.close(1011, "again")) as server:
        client = QuotesClient(server.url(), sleep=RecordingSleep(), max_retries=9)
        stream = client.events(maxlen=3)
        async with client:
            with pytest.raises(RetriesExhausted), anyio.fail_after(10):
                await take(client, 1)
    events = [event async for event in stream]
    assert len(events) == 3
    assert isinstance(events[-1], Failed)
    assert stream.dropped > 0
