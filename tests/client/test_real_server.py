"""
The client against the real quotes-server and a private Redis, as separate processes.

Backoff delays go through an injected, gated sleep: the test decides when each
reconnect attempt happens and reads the delays the client asked for.
"""

from __future__ import annotations

import signal
import sys
from datetime import datetime

import anyio
import pytest
from anyio import to_thread

from quotes_client import (
    Backoff,
    ConnectFailed,
    ConnectionEvent,
    Disconnected,
    HandshakeRejected,
    QuotesClient,
)
from quotes_core import format_timestamp, is_valid_ticker
from quotes_core.testing import upstream_message
from tests.client.servers import (
    RecordingSleep,
    events_of,
    eventually,
    publish_many,
    read_lines,
    stderr_of,
    take,
)
from tests.helpers.processes import RedisServer
from tests.helpers.server import CHANNEL, StartServer

pytestmark = pytest.mark.anyio


def exact() -> Backoff:
    return Backoff(jitter=0)


async def test_receives_only_the_requested_tickers(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Quotes published to Redis arrive validated, and only for the tickers asked for."""
    server = start_server(redis_server)
    async with QuotesClient(f"{server.ws_url}/v1/ws/quotes", tickers=["aapl", "MSFT"]) as client:
        with anyio.fail_after(10):
            await client.wait_connected()
        # delivery is in publication order, so GOOGL would arrive before MSFT if let through
        publish_many(
            redis_server.port,
            CHANNEL,
            [
                upstream_message("AAPL", 1),
                upstream_message("GOOGL", 2),
                upstream_message("MSFT", 3),
            ],
        )
        quotes = await take(client, 2)
    assert [(q.ticker, q.volume) for q in quotes] == [("AAPL", 1), ("MSFT", 3)]
    assert client.stats.invalid == 0


async def test_server_restart_reconnects_and_resumes(
    redis_server: RedisServer, start_server: StartServer, gated_sleep: RecordingSleep
) -> None:
    """SIGTERM closes with 1001; the client backs off 1 s and resumes on the restarted server."""
    server = start_server(redis_server)
    seen: list[ConnectionEvent] = []
    client = QuotesClient(
        f"{server.ws_url}/ws/quotes",
        tickers=["AAPL"],
        sleep=gated_sleep,
        backoff=exact(),
        on_event=seen.append,
    )
    async with client:
        with anyio.fail_after(10):
            await client.wait_connected()
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        before = await take(client, 1)
        await to_thread.run_sync(server.stop)  # in a thread: the client must answer the close
        await gated_sleep.wait_calls(1)
        start_server(redis_server, port=server.port)
        gated_sleep.release()
        await eventually(lambda: client.stats.connects == 2, what="the reconnect")
        redis_server.publish(CHANNEL, upstream_message("AAPL", 2))
        after = await take(client, 1)
        stats = client.stats
    assert [q.volume for q in before + after] == [1, 2]
    (closed,) = events_of(Disconnected, seen)
    assert closed.code in (1001, 1012)
    assert closed.by_server
    assert gated_sleep.delays == [1.0]
    assert stats.reconnects == 1


async def test_redis_down_backs_off_then_resumes(
    redis_server: RedisServer, start_server: StartServer, gated_sleep: RecordingSleep
) -> None:
    """Redis killed: 1011, then 503s while it is down, with delays 1, 2, 4; then quotes resume."""
    server = start_server(redis_server, grace_period=0.5, retry_after=1)
    seen: list[ConnectionEvent] = []
    client = QuotesClient(
        f"{server.ws_url}/ws/quotes",
        sleep=gated_sleep,
        backoff=exact(),
        on_event=seen.append,
    )
    async with client:
        with anyio.fail_after(10):
            await client.wait_connected()
        redis_server.stop()
        await gated_sleep.wait_calls(1, timeout=20)  # after the 1011 close
        gated_sleep.release()
        await gated_sleep.wait_calls(2)  # after a 503
        gated_sleep.release()
        await gated_sleep.wait_calls(3)  # after another 503
        redis_server.start()
        await to_thread.run_sync(lambda: server.wait_ready(timeout=30))
        gated_sleep.release()
        await eventually(lambda: client.stats.connects == 2, what="the reconnect")
        redis_server.publish(CHANNEL, upstream_message("AAPL", 7))
        (quote,) = await take(client, 1)
    closed = events_of(Disconnected, seen)[0]
    assert (closed.code, closed.reason) == (
        1011,
        "closed by the server: 1011 'Internal server error'",
    )
    assert [(f.status, f.fatal) for f in events_of(ConnectFailed, seen)] == [(503, False)] * 2
    assert gated_sleep.delays == [1.0, 2.0, 4.0]
    assert quote.volume == 7


async def test_forbidden_origin_raises_without_retry(
    redis_server: RedisServer, start_server: StartServer, sleep: RecordingSleep
) -> None:
    """An Origin outside --cors-origins gets HTTP 403: raised at once, never retried."""
    server = start_server(redis_server, cors_origins="http://allowed.example")
    url = f"{server.ws_url}/ws/quotes"
    async with QuotesClient(url, origin="http://allowed.example") as allowed:
        with anyio.fail_after(10):
            await allowed.wait_connected()
    async with QuotesClient(url, origin="http://evil.example", sleep=sleep) as client:
        with pytest.raises(HandshakeRejected) as info, anyio.fail_after(10):
            await take(client, 1)
        stats = client.stats
    assert info.value.status == 403
    assert sleep.delays == []
    assert stats.attempts == 1


async def test_bad_tickers_raise_400_without_retry(
    redis_server: RedisServer, start_server: StartServer, sleep: RecordingSleep
) -> None:
    """A tickers value the server rejects (400) raises with the server's reason, no retry."""
    server = start_server(redis_server)
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL;DROP"  # bypasses the client's own check
    async with QuotesClient(url, sleep=sleep) as client:
        with pytest.raises(HandshakeRejected) as info, anyio.fail_after(10):
            await take(client, 1)
    assert info.value.status == 400
    assert "AAPL;DROP" in info.value.reason
    assert sleep.delays == []


async def test_slow_consumer_keeps_the_newest_1000(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A consumer that does not read holds the newest 1,000 of 3,000 quotes; 2,000 drops counted."""
    server = start_server(redis_server)
    total = 3000
    async with QuotesClient(f"{server.ws_url}/ws/quotes") as client:
        with anyio.fail_after(10):
            await client.wait_connected()
        # distinct tickers so that the server's per-ticker conflation never merges them
        publish_many(
            redis_server.port, CHANNEL, (upstream_message(f"T{i:04d}", i) for i in range(total))
        )
        await eventually(lambda: client.stats.received == total, timeout=30, what="all quotes")
        stats = client.stats
        kept = await take(client, 1000)
    assert (stats.buffered, stats.dropped) == (1000, total - 1000)
    assert [q.volume for q in kept] == list(range(total - 1000, total))


async def test_blocking_policy_stalls_reading_and_loses_nothing(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """With overflow="block" the reader stops at the bound, drops nothing and resumes in order."""
    server = start_server(redis_server)
    total = 3000
    async with QuotesClient(
        f"{server.ws_url}/ws/quotes", buffer_size=100, overflow="block"
    ) as client:
        with anyio.fail_after(10):
            await client.wait_connected()
        publish_many(
            redis_server.port, CHANNEL, (upstream_message(f"T{i:04d}", i) for i in range(total))
        )
        await eventually(lambda: client.stats.buffered == 100, what="a full buffer")
        stalled = client.stats
        quotes = await take(client, total, timeout=30)
    assert stalled.received <= 101
    assert stalled.dropped == 0
    assert [q.volume for q in quotes] == list(range(total))


async def test_cli_prints_the_demo_feed(start_server: StartServer) -> None:
    """``quotes-client`` prints live quotes from the server's built-in demo feed; Ctrl-C exits 0."""
    server = start_server(None)
    argv = [sys.executable, "-m", "quotes_client", f"{server.ws_url}/v1/ws/quotes"]
    process = await anyio.open_process(argv)
    async with process:
        lines = await read_lines(process, 5)
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(20):
            status = await process.wait()
    assert status == 0
    for line in lines:
        ticker, close, timestamp, latency, unit = line.split()
        assert is_valid_ticker(ticker)
        assert float(close) > 0
        assert format_timestamp(datetime.fromisoformat(timestamp)) == timestamp
        assert float(latency) == float(latency)  # a number, not "nan"
        assert unit == "ms"


async def test_cli_exits_2_on_forbidden_origin(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """``quotes-client --origin`` outside --cors-origins prints the 403 and exits with status 2."""
    server = start_server(redis_server, cors_origins="http://allowed.example")
    argv = [
        sys.executable,
        "-m",
        "quotes_client",
        f"{server.ws_url}/ws/quotes",
        "--origin",
        "http://evil.example",
    ]
    process = await anyio.open_process(argv)
    async with process:
        with anyio.fail_after(20):
            err = await stderr_of(process)
            status = await process.wait()
    assert status == 2
    assert "HTTP 403" in err
