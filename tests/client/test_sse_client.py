"""
QuotesClient over Server-Sent Events: an ``http://`` URL of the real quotes-server's
``/sse/quotes``, a private Redis, the same quotes, events, resume and backoff as over a
WebSocket.
"""

from __future__ import annotations

import socket
import sys

import anyio
import pytest

from quotes_client import (
    Backoff,
    ConnectionEvent,
    Disconnected,
    HandshakeFailed,
    HandshakeRejected,
    QuotesClient,
    Recovered,
)
from quotes_client.sse import COMMENT, EventDecoder, SseConnection, SseEvent
from quotes_core.testing import upstream_message
from tests.client.servers import RecordingSleep, events_of, take
from tests.client.test_protocol_server import publish_and_wait
from tests.helpers.processes import RedisServer, eventually, wait_until
from tests.helpers.server import CHANNEL, StartServer

pytestmark = pytest.mark.anyio


def decode(text: str) -> list[SseEvent | object]:
    decoder = EventDecoder()
    return [e for e in map(decoder.line, text.split("\n")) if e is not None]


def test_the_decoder_reads_the_event_stream_format() -> None:
    """Fields, multi-line data, comments, the id carried over, retry: as the standard says."""
    events = decode(
        "retry: 1000\n\n"
        ": keepalive\n\n"
        'id: e:1\ndata: {"a":1}\n\n'
        'event: recovered\ndata:{"event":"recovered"}\n\n'
        "data: two\ndata: lines\n\n"
        "id\nevent: ignored-without-data\n\n"
        "id: bad\0id\ndata: x\n\n"
    )
    assert events == [
        COMMENT,
        SseEvent("message", '{"a":1}', "e:1"),
        SseEvent("recovered", '{"event":"recovered"}', "e:1"),
        SseEvent("message", "two\nlines", "e:1"),
        SseEvent("message", "x", ""),  # a bare "id" resets it; one with NUL is ignored
    ]
    decoder = EventDecoder()
    decoder.line("retry: 2500")
    decoder.line("retry: soon")
    assert decoder.retry == 2500


async def test_an_http_url_streams_the_same_quotes_as_the_websocket(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """The same filter, the same validated quotes, in order, over both transports."""
    server = start_server(redis_server)
    over_sse = QuotesClient(f"{server.http_url}/sse/quotes", tickers=["AAPL", "MSFT"])
    over_ws = QuotesClient(f"{server.ws_url}/ws/quotes", tickers=["AAPL", "MSFT"])
    assert (over_sse.transport, over_ws.transport) == ("sse", "websocket")
    async with over_sse, over_ws:
        with anyio.fail_after(10):
            await over_sse.wait_connected()
            await over_ws.wait_connected()
        wait_until(lambda: server.metric("quotes_sse_streams") == 1, what="the SSE stream")
        redis_server.publish_many(
            CHANNEL,
            [upstream_message(t, v) for v, t in enumerate(["AAPL", "GOOGL", "MSFT", "AAPL"])],
        )
        sse_quotes = await take(over_sse, 3)
        ws_quotes = await take(over_ws, 3)
    assert sse_quotes == ws_quotes
    assert [(q.ticker, q.volume) for q in sse_quotes] == [("AAPL", 0), ("MSFT", 2), ("AAPL", 3)]
    assert over_sse.stats.received == 3
    assert over_sse.stats.invalid == 0


async def test_resume_over_sse_after_a_dropped_connection_is_exact(
    redis_server: RedisServer, start_server: StartServer, gated_sleep: RecordingSleep
) -> None:
    """The TCP connection drops; the client backs off, comes back with since= and misses nothing."""
    server = start_server(redis_server)
    seen: list[ConnectionEvent] = []
    client = QuotesClient(
        f"{server.http_url}/sse/quotes",
        tickers=["AAPL", "MSFT"],
        resume=True,
        sleep=gated_sleep,
        backoff=Backoff(jitter=0),
        on_event=seen.append,
    )
    async with client:
        with anyio.fail_after(10):
            await client.wait_connected()
        wait_until(lambda: server.metric("quotes_sse_streams") == 1, what="the SSE stream")
        redis_server.publish_many(
            CHANNEL, [upstream_message("AAPL", 1), upstream_message("MSFT", 2)]
        )
        assert [q.volume for q in await take(client, 2)] == [1, 2]
        conn = client._loop.conn
        assert isinstance(conn, SseConnection)
        # the network drops it: the client's socket is shut, as a lost route would
        raw: socket.socket = conn._response.extensions["network_stream"].get_extra_info("socket")
        raw.shutdown(socket.SHUT_RDWR)
        await gated_sleep.wait_calls(1)
        wait_until(lambda: server.metric("quotes_sse_streams") == 0, what="the drop")
        missed = [upstream_message(t, v) for v, t in [(3, "AAPL"), (4, "GOOGL"), (5, "MSFT")]]
        publish_and_wait(redis_server, server, missed)
        gated_sleep.release()
        quotes = await take(client, 2)
    assert [(q.ticker, q.volume) for q in quotes] == [("AAPL", 3), ("MSFT", 5)]
    (recovered,) = events_of(Recovered, seen)
    assert recovered.recovered
    drop = events_of(Disconnected, seen)[0]
    assert (drop.code, drop.by_server, drop.fatal) == (1006, True, False)
    assert client.stats.gaps == 0
    assert client.stats.recovered == 1


async def test_the_servers_closing_event_is_decided_like_a_close_frame(
    redis_server: RedisServer, start_server: StartServer, gated_sleep: RecordingSleep
) -> None:
    """A shutdown ends the stream with its 1001 closing event: a retryable disconnect."""
    server = start_server(redis_server)
    seen: list[ConnectionEvent] = []
    client = QuotesClient(f"{server.http_url}/sse/quotes", sleep=gated_sleep, on_event=seen.append)
    async with client:
        with anyio.fail_after(10):
            await client.wait_connected()
        wait_until(lambda: server.metric("quotes_sse_streams") == 1, what="the SSE stream")
        server.stop()
        await gated_sleep.wait_calls(1)
    (disconnected,) = events_of(Disconnected, seen)
    assert (disconnected.code, disconnected.by_server, disconnected.fatal) == (1001, True, False)


async def test_keepalive_comments_keep_a_quiet_stream_from_going_stale(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """No quote for several stale_timeouts, but a keepalive every 0.3 s: never reconnected."""
    server = start_server(redis_server, sse_keepalive=0.3)
    client = QuotesClient(f"{server.http_url}/sse/quotes", stale_timeout=1.0)
    async with client:
        with anyio.fail_after(10):
            await client.wait_connected()
        conn = client._loop.conn
        assert isinstance(conn, SseConnection)
        # 12 keepalives span 3.6 s: more than three stale_timeouts without a quote
        await eventually(lambda: conn.keepalives >= 12, what="a dozen keepalives")
        assert client._loop.conn is conn
        assert client.stats.connects == 1
        assert client.stats.received == 0


async def test_a_filter_change_over_sse_reconnects_with_the_new_query(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """subscribe() over a one-way stream: a new request with the new tickers, nothing missed."""
    server = start_server(redis_server)
    client = QuotesClient(f"{server.http_url}/sse/quotes", tickers=["AAPL"], resume=True)
    async with client:
        with anyio.fail_after(10):
            await client.wait_connected()
            redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
            assert [q.volume for q in await take(client, 1)] == [1]
            assert (await client.subscribe(["NVDA"])).tickers == {"AAPL", "NVDA"}
        assert client.stats.connects == 2
        wait_until(lambda: server.metric("quotes_sse_streams") == 1, what="the new stream")
        redis_server.publish_many(
            CHANNEL, [upstream_message("NVDA", 2), upstream_message("MSFT", 3)]
        )
        quotes = await take(client, 1)
    assert [(q.ticker, q.volume) for q in quotes] == [("NVDA", 2)]
    assert client.stats.gaps == 0


async def test_refusals_over_sse_are_the_handshakes(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A bad query is 400 with the server's reason, fatal; a URL that is no stream too."""
    server = start_server(redis_server)
    async with QuotesClient(f"{server.http_url}/sse/quotes?max_hz=0") as client:
        with pytest.raises(HandshakeRejected) as rejected:
            await client.wait_connected()
    assert rejected.value.status == 400
    assert "max_hz" in str(rejected.value)
    async with QuotesClient(f"{server.http_url}/health") as client:
        with pytest.raises(HandshakeFailed, match="not an event stream"):
            await client.wait_connected()


async def test_the_cli_reads_an_sse_url(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """``quotes-client http://.../sse/quotes`` prints the quotes as for a ws:// URL."""
    server = start_server(redis_server)
    argv = [sys.executable, "-m", "quotes_client", f"{server.http_url}/sse/quotes"]
    process = await anyio.open_process([*argv, "--tickers", "MSFT", "--format", "json"])
    async with process:
        wait_until(lambda: server.metric("quotes_sse_streams") == 1, what="the CLI's stream")
        redis_server.publish_many(
            CHANNEL, [upstream_message("AAPL", 1), upstream_message("MSFT", 2)]
        )
        assert process.stdout is not None
        with anyio.fail_after(10):
            line = b""
            async for chunk in process.stdout:
                line += chunk
                if b"\n" in line:
                    break
        process.terminate()
        with anyio.fail_after(20):
            assert await process.wait() == 0
    assert b'"ticker":"MSFT"' in line
    assert b'"volume":2' in line
